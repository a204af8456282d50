"""Item codec: the normative 48-byte header plus payload (SPEC.md section 2).

Theory of operation: decoding is the hot path of every sync, so the header is read with one
precompiled ``struct`` call that groups the four one-byte fields (version, tier, op,
priority) into one u32 and flags+reserved into another. A single dict lookup on that u32
both validates the four fields and yields their enum members; only when it misses do we
re-read the header field by field to say precisely which byte is wrong. Items are tuples
underneath so that the decoder can build one with a single C call after validating, while
``Item(...)`` from user code validates every field in the constructor.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

from .bases import BASE_SIZE, BASED, KNOWN_FLAGS, flags_problem, read_base, value_start
from .constants import (
    ITEM_HEADER_SIZE,
    ITEM_VERSION,
    MAX_PAYLOAD,
    PAYLOAD_ZSTD,
    Op,
    Priority,
    Tier,
)
from .errors import (
    BadFieldError,
    ChecksumError,
    LimitError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TruncatedError,
)
from .names import NAME_ID_PREFIX, NAMED, Name, name_id, parse_name, read_name
from .payload import check_value, inflate

__all__ = ["Item", "inflate", "pack_item", "pack_items", "unpack_item", "unpack_items"]

Buffer = bytes | bytearray | memoryview

# item_id, timestamp_ns, origin, version|tier|op|priority, flags|reserved, payload_len, crc32
_FAST = struct.Struct(">16sQQIIII")
# The same 48 bytes, one field per header column, for error reports and the encoder.
_FIELDS = struct.Struct(">16sQQBBBBHHII")
_HEAD44 = struct.Struct(">16sQQBBBBHHI")
_CRC = struct.Struct(">I")
_U64_MAX = (1 << 64) - 1
_KNOWN_FLAGS = KNOWN_FLAGS

# (version<<24 | tier<<16 | op<<8 | priority) -> (tier, op, priority, payload needs a check)
_VTOP: dict[int, tuple[Tier, Op, Priority, bool]] = {
    (ITEM_VERSION << 24) | (t << 16) | (o << 8) | p: (t, o, p, o in (Op.DELETE, Op.MERGE))
    for t in Tier
    for o in Op
    for p in Priority
}


class _ItemFields(NamedTuple):
    item_id: bytes
    timestamp_ns: int
    origin: int
    tier: Tier
    op: Op
    priority: Priority
    flags: int
    payload: bytes


class Item(_ItemFields):
    """One version of one memory item, exactly as it travels.

    Immutable and hashable. ``key`` is the conflict-order key of DESIGN.md. The payload is
    kept in wire form (still compressed when ``flags`` has ``PAYLOAD_ZSTD``) so that an item
    re-encodes to the bytes it came from; :meth:`value` gives the inflated bytes.

    Raises:
        LocalProtocolError: a field is outside its domain (constructor only).
    """

    __slots__ = ()

    def __new__(
        cls,
        *,
        item_id: bytes,
        timestamp_ns: int,
        origin: int,
        tier: int,
        op: int,
        priority: int = Priority.NORMAL,
        flags: int = 0,
        payload: bytes = b"",
    ) -> Item:
        if not isinstance(item_id, bytes) or len(item_id) != 16:
            raise LocalProtocolError("must be 16 bytes", field="item.item_id")
        if not isinstance(timestamp_ns, int) or not 0 <= timestamp_ns <= _U64_MAX:
            raise LocalProtocolError("must be a u64", field="item.timestamp_ns")
        if not isinstance(origin, int) or not 0 <= origin <= _U64_MAX:
            raise LocalProtocolError("must be a u64", field="item.origin")
        try:
            tier_e, op_e, prio_e = Tier(tier), Op(op), Priority(priority)
        except ValueError as exc:
            raise LocalProtocolError(str(exc), field="item.tier/op/priority") from None
        problem = flags_problem(flags) if isinstance(flags, int) else "must be an int"
        if problem is not None:
            raise LocalProtocolError(problem, field="item.flags")
        if not isinstance(payload, bytes):
            raise LocalProtocolError("must be bytes", field="item.payload")
        if len(payload) > MAX_PAYLOAD:
            raise LocalProtocolError(
                f"{len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit", field="item.payload"
            )
        try:
            _check_payload(op_e, flags, payload, "item", None, item_id)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason, field=exc.field) from None
        return tuple.__new__(
            cls, (item_id, timestamp_ns, origin, tier_e, op_e, prio_e, flags, payload)
        )

    @classmethod
    def trusted(
        cls,
        item_id: bytes,
        timestamp_ns: int,
        origin: int,
        tier: int,
        op: int,
        priority: int,
        flags: int,
        payload: bytes,
    ) -> Item:
        """An item from fields that were validated before, with no checks at all.

        For a store re-reading versions it only ever accepted through the validating
        constructor or the decoder: checking them again cost ~5 us per item of a pull
        answer (three enum lookups and the payload rules), most of a chunk's build time.
        Anything from outside the process must use the constructor.
        """
        return tuple.__new__(
            cls,
            (
                item_id,
                timestamp_ns,
                origin,
                _TIERS[tier],
                _OPS[op],
                _PRIOS[priority],
                flags,
                payload,
            ),
        )

    @property
    def version(self) -> int:
        return ITEM_VERSION

    @property
    def key(self) -> tuple[int, int]:
        """Conflict-order key: greater wins, equal is a duplicate."""
        return (self.timestamp_ns, self.origin)

    @property
    def item_id_hex(self) -> str:
        return self.item_id.hex()

    @property
    def wire_size(self) -> int:
        return ITEM_HEADER_SIZE + len(self.payload)

    def value(self) -> bytes:
        """The value: the payload without name block and base, any compression undone."""
        payload = self.payload
        if self.flags & (NAMED | BASED):
            payload = payload[value_start(self.flags, payload) :]
        if self.flags & PAYLOAD_ZSTD:
            return inflate(payload, MAX_PAYLOAD, "item.payload", None)
        return payload

    @property
    def base(self) -> tuple[int, int] | None:
        """The key of the version this write replaced on its node (SPEC.md section 2.2).

        ``(0, 0)``: its writer held no version; ``None``: unknown (the item is not BASED).
        """
        return read_base(self.flags, self.payload)

    @property
    def name(self) -> Name | None:
        """The item's namespace and key (SPEC.md section 2.1); ``None`` for a nameless item."""
        if not self.flags & NAMED:
            return None
        return read_name(self.payload)[0]


def _check_payload(
    op: int, flags: int, payload: bytes, prefix: str, offset: int | None, item_id: bytes
) -> None:
    """Apply the payload rules of SPEC.md sections 2 and 2.1 to an item named ``prefix``.

    ``offset`` is the payload's position in the buffer (``None``: no offsets). A NAMED
    item's name block is checked first, then that it matches the item id, then the rules
    on the value that follows it. A BASED item's 16-byte base comes before the value
    (section 2.2); any 16 bytes are a base.
    """
    if flags & NAMED:
        _name, used = parse_name(payload, prefix, offset)
        if name_id(payload[:used]) != item_id:
            raise BadFieldError(
                "item_id is not the id of the item's name",
                field=f"{prefix}.item_id",
                offset=None if offset is None else offset - ITEM_HEADER_SIZE,
            )
        payload = payload[used:]
        if offset is not None:
            offset += used
    if flags & BASED:
        if len(payload) < BASE_SIZE:
            raise TruncatedError(
                f"need {BASE_SIZE} base bytes, {len(payload)} left",
                field=f"{prefix}.base",
                offset=offset,
            )
        payload = payload[BASE_SIZE:]
        if offset is not None:
            offset += BASE_SIZE
    check_value(op, flags, payload, f"{prefix}.payload", offset)


def _diagnose(buf: Buffer, off: int, prefix: str) -> ProtocolError:
    """Name the first bad fixed field of a header the fast path refused."""
    _iid, _ts, _origin, version, tier, op, prio, flags, reserved, _plen, _crc = _FIELDS.unpack_from(
        buf, off
    )
    checks: list[tuple[str, int, bool, str]] = [
        ("version", 32, version == ITEM_VERSION, f"{version}, expected {ITEM_VERSION}"),
        ("tier", 33, tier in Tier._value2member_map_, f"unknown tier {tier}"),
        ("op", 34, op in Op._value2member_map_, f"unknown op {op}"),
        ("priority", 35, prio in Priority._value2member_map_, f"unknown priority {prio}"),
        ("flags", 36, flags_problem(flags) is None, str(flags_problem(flags))),
        ("reserved", 38, reserved == 0, f"must be 0, got {reserved:#06x}"),
    ]
    for name, rel, ok, msg in checks:
        if not ok:
            return BadFieldError(msg, field=f"{prefix}.{name}", offset=off + rel)
    return BadFieldError("invalid header", field=prefix, offset=off)  # pragma: no cover


def unpack_item(buf: Buffer, offset: int = 0) -> tuple[Item, int]:
    """Decode one item starting at ``offset``; return it and the offset just past it.

    Raises:
        ProtocolError: any malformed input (see SPEC.md section 2 for the order of checks).
    """
    items, end = _unpack(buf, offset, 1, None, "item")
    return items[0], end


def unpack_items(
    buf: Buffer, count: int, *, tier: int | None = None, prefix: str = "items"
) -> list[Item]:
    """Decode exactly ``count`` items filling ``buf`` completely (a batch body).

    Raises:
        ProtocolError: a malformed item, an item of another tier than ``tier``, or bytes
            left over after ``count`` items.
    """
    items, end = _unpack(buf, 0, count, tier, prefix)
    if end != len(buf):
        raise BadFieldError(
            f"{len(buf) - end} bytes after the last of {count} items", field=prefix, offset=end
        )
    return items


def _name(prefix: str, count: int, index: int) -> str:
    """``item`` for a lone item, ``batch.items[7]`` inside a body."""
    return prefix if count == 1 and prefix == "item" else f"{prefix}[{index}]"


def _load_speedups() -> Callable[..., tuple[int, int]] | None:
    """The optional C scanner; ``MESHSYNCD_PURE_PYTHON=1`` (or a failed build) disables it."""
    if os.environ.get("MESHSYNCD_PURE_PYTHON"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    scan: Callable[..., tuple[int, int]] = _speedups.scan_items
    return scan


_scan: Callable[..., tuple[int, int]] | None = _load_speedups()
_TIERS = tuple(Tier)
_OPS: tuple[Any, ...] = (None, *Op)
_PRIOS = tuple(Priority)


def _unpack(
    buf: Buffer, off: int, count: int, want_tier: int | None, prefix: str
) -> tuple[list[Item], int]:
    """Decode ``count`` items: the C scanner takes the plain happy path, Python the rest."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    scan = _scan
    if scan is None:
        return _unpack_py(data, off, count, want_tier, prefix, 0, count)
    items: list[Item] = []
    index = 0
    tier_arg = -1 if want_tier is None else want_tier
    named: list[tuple[int, int, int]] = []
    while True:
        off, index = scan(
            data, off, index, count, Item, _TIERS, _OPS, _PRIOS, items, tier_arg, named
        )
        if named:  # the C scanner checked their names' form; the ids are checked here
            _check_named_ids(items, named, prefix, count)
            named.clear()
        if index >= count:
            return items, off
        one, off = _unpack_py(data, off, 1, want_tier, prefix, index, count)
        items += one
        index += 1


def _check_named_ids(
    items: list[Item], named: list[tuple[int, int, int]], prefix: str, count: int
) -> None:
    """Check that each NAMED item the C scanner took has the id of its name, in order.

    ``named`` holds (index, offset, name block length); ``items[index]`` is that item
    (every item decoded so far is in ``items``, so its position is its index).

    Raises:
        BadFieldError: the first of them whose id is not its name's (``item_id``).
    """
    sha256 = hashlib.sha256
    for index, offset, used in named:
        item = items[index]
        if sha256(NAME_ID_PREFIX + item[7][:used]).digest()[:16] != item[0]:
            raise BadFieldError(
                "item_id is not the id of the item's name",
                field=f"{_name(prefix, count, index)}.item_id",
                offset=offset,
            )


def _unpack_py(
    buf: bytes,
    off: int,
    count: int,
    want_tier: int | None,
    prefix: str,
    first: int,
    total: int,
) -> tuple[list[Item], int]:
    """The pure-Python decoder: items ``first .. first+count-1`` of ``total``."""
    unpack_from = _FAST.unpack_from
    crc32 = zlib.crc32
    vtop_get = _VTOP.get
    new = tuple.__new__
    size = len(buf)
    data = buf
    items: list[Item] = []
    append = items.append
    for index in range(first, first + count):
        if off + 48 > size:
            name = _name(prefix, total, index)
            raise TruncatedError(
                f"need 48 header bytes, {size - off} left", field=f"{name}.header", offset=off
            )
        item_id, ts, origin, vtop, fr, plen, crc = unpack_from(data, off)
        decoded = vtop_get(vtop)
        # flags other than PAYLOAD_ZSTD | NAMED | BASED | RESOLVES, or RESOLVES alone
        if decoded is None or fr & 0xFFE4FFFF or fr & 0x00180000 == 0x00100000:
            name = _name(prefix, total, index)
            raise _diagnose(data, off, name)
        if plen > 0x100000:
            name = _name(prefix, total, index)
            raise LimitError(
                f"{plen} bytes exceeds the {MAX_PAYLOAD}-byte limit",
                field=f"{name}.payload_len",
                offset=off + 40,
            )
        start = off + 48
        end = start + plen
        if end > size:
            name = _name(prefix, total, index)
            raise TruncatedError(
                f"declares {plen} payload bytes, {size - start} left",
                field=f"{name}.payload",
                offset=start,
            )
        payload = data[start:end]
        if crc32(payload, crc32(data[off : off + 44])) != crc:
            name = _name(prefix, total, index)
            raise ChecksumError("CRC-32 mismatch", field=f"{name}.crc32", offset=off + 44)
        tier, op, prio, check = decoded
        if want_tier is not None and tier != want_tier:
            raise BadFieldError(
                f"item of tier {tier} in a batch of tier {want_tier}",
                field=f"{prefix}[{index}].tier",
                offset=off + 33,
            )
        flags = fr >> 16
        if check or flags:
            name = _name(prefix, total, index)
            _check_payload(op, flags, payload, name, start, item_id)
        append(new(Item, (item_id, ts, origin, tier, op, prio, flags, payload)))
        off = end
    return items, off


def pack_item(item: Item) -> bytes:
    """Encode one item (header + payload). The item was validated when it was built."""
    head = _HEAD44.pack(
        item[0],
        item[1],
        item[2],
        ITEM_VERSION,
        item[3],
        item[4],
        item[5],
        item[6],
        0,
        len(item[7]),
    )
    payload = item[7]
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def pack_items(items: list[Item] | tuple[Item, ...]) -> bytes:
    """Encode items back to back, the raw body of a batch."""
    pack = _HEAD44.pack
    crc_pack = _CRC.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    append = parts.append
    for item_id, ts, origin, tier, op, prio, flags, payload in items:
        head = pack(item_id, ts, origin, 2, tier, op, prio, flags, 0, len(payload))
        append(head)
        append(crc_pack(crc32(payload, crc32(head))))
        append(payload)
    return b"".join(parts)
