from typing import Any

def scan_items(
    data: bytes,
    off: int,
    index: int,
    count: int,
    item_type: type,
    tiers: tuple[Any, ...],
    ops: tuple[Any, ...],
    prios: tuple[Any, ...],
    out: list[Any],
    want_tier: int,
    named: list[tuple[int, int, int]],
    /,
) -> tuple[int, int]: ...
