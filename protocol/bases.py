"""Bases: the version a write replaced on its writer's node (SPEC.md section 2.2).

Theory of operation: a BASED item's payload holds, right after its name block (if any),
16 fixed bytes: the ``(timestamp_ns, origin)`` key of the version its writer held for the
item when it wrote (zero: none), as two u64. The base is never compressed and is not part of
the value. It decides nothing in the conflict order; a receiver compares it with the
version the item overwrites or loses to, to tell two writers that had not seen each other's
write (a conflict) from a sequential overwrite. ``RESOLVES`` (only with ``BASED``) marks a
write that settles the conflicts its base covers. A version without ``BASED`` has an
unknown base and is never reported as a conflict.
"""

from __future__ import annotations

import struct

from .constants import BASED, NAMED, PAYLOAD_ZSTD, RESOLVES
from .errors import LocalProtocolError
from .names import skip_name

__all__ = [
    "BASED",
    "BASE_SIZE",
    "RESOLVES",
    "base_block",
    "read_base",
    "value_start",
    "with_base",
]

BASE_SIZE = 16
_BASE = struct.Struct(">QQ")
_U64_MAX = (1 << 64) - 1
Key = tuple[int, int]


def base_block(base: Key) -> bytes:
    """The 16 bytes of a base key.

    Raises:
        LocalProtocolError: a part is not a u64.
    """
    ts, origin = base
    if not (0 <= ts <= _U64_MAX and 0 <= origin <= _U64_MAX):
        raise LocalProtocolError("must be two u64", field="item.base")
    return _BASE.pack(ts, origin)


def value_start(flags: int, payload: bytes) -> int:
    """Where the value starts in a validated payload: after the name block and the base."""
    start = skip_name(payload) if flags & NAMED else 0
    return start + BASE_SIZE if flags & BASED else start


def read_base(flags: int, payload: bytes) -> Key | None:
    """The base of a validated payload; ``None`` when it carries none (not ``BASED``)."""
    if not flags & BASED:
        return None
    start = skip_name(payload) if flags & NAMED else 0
    ts, origin = _BASE.unpack_from(payload, start)
    return (ts, origin)


def with_base(
    flags: int, payload: bytes, base: Key, *, resolves: bool = False
) -> tuple[int, bytes]:
    """``(flags, payload)`` of a nameless-or-named payload with ``base`` put in its place.

    ``payload`` is a name block (when ``flags`` has ``NAMED``) followed by the value, and
    must not carry a base yet.

    Raises:
        LocalProtocolError: the payload already has a base, or the base is not two u64.
    """
    if flags & BASED:
        raise LocalProtocolError("payload already carries a base", field="item.base")
    start = skip_name(payload) if flags & NAMED else 0
    flags |= BASED | (RESOLVES if resolves else 0)
    return flags, payload[:start] + base_block(base) + payload[start:]


KNOWN_FLAGS = PAYLOAD_ZSTD | NAMED | BASED | RESOLVES


def flags_problem(flags: int) -> str | None:
    """Why ``flags`` are not a valid item flags field, or ``None``."""
    if flags & ~KNOWN_FLAGS or flags < 0:
        return f"unknown flag bits {flags:#06x}"
    if flags & RESOLVES and not flags & BASED:
        return "RESOLVES without BASED"
    return None
