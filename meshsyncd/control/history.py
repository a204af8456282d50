"""Control operation ``history``: the last versions this node has seen of one item.

Newest version key first, winners and losers (``store/history.py``), each with op, time,
origin node and value; the current version is marked.
"""

from __future__ import annotations

from typing import Any

from protocol import Op

from ..conditions import format_version
from .names import request_name
from .proto import ControlError, encode_value, parse_item_id, parse_tier

__all__ = ["op_history"]


async def op_history(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    """``tier`` and the item (``item_id``, or ``namespace``/``key``)."""
    tier = parse_tier(p.get("tier", "episodic"))
    if p.get("item_id") is not None:
        item_id = parse_item_id(p["item_id"])
    else:
        named = request_name(p)
        if named is None:
            raise ControlError("bad_request", "missing item_id or key")
        item_id = named[0]
    store = daemon.engine.engine.store

    def work() -> Any:
        found = store.get_row(tier, item_id)
        current = None
        if found is not None and found[1].op:
            row = found[1]
            current = (row.key, row.op, row.flags, row.payload)
        return store.history(tier, item_id, current)

    entries = await daemon.engine.run(work)
    if not entries:
        raise ControlError("not_found", f"no item {item_id.hex()} in tier {tier.name.lower()}")
    versions = []
    for e in entries:
        out: dict[str, Any] = {
            "version": format_version(e.key),
            "timestamp_ns": e.key[0],
            "origin": f"{e.key[1]:016x}",
            "op": Op(e.op).name.lower(),
            "current": e.current,
        }
        if e.value is not None:
            out.update(encode_value(e.value))
        versions.append(out)
    return {"item_id": item_id.hex(), "tier": tier.name.lower(), "versions": versions}
