"""MEMSHADOW v2 memory-sync batches: the model, the encoder and the import mapping rules.

The numbers here are facts read from the reference implementation (SPEC.md section 8
records the commit); the decoder is in ``_decode.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import hashlib
import json
import re
import struct

from ..constants import Op, Priority, Tier
from ..errors import LocalProtocolError
from ..item import Buffer

__all__ = [
    "COMPRESS_THRESHOLD",
    "FALLBACK_HEADER_SIZE",
    "FALLBACK_MAGIC",
    "HEADER_SIZE",
    "ITEM_SIZE",
    "MAGIC",
    "MAX_ITEMS",
    "MAX_ITEMS_RAW",
    "MAX_ITEM_PAYLOAD",
    "MAX_METADATA",
    "MAX_PAYLOAD_LEN",
    "MEMORY_SYNC",
    "VERSION",
    "HeaderPriority",
    "MemshadowBatch",
    "MemshadowItem",
    "MemshadowLayout",
    "MsTier",
    "SyncFlag",
    "import_item_id",
    "import_origin",
    "is_memshadow",
    "metadata_json",
    "pack_memshadow",
]

MAGIC = 0x4D534857  # "MSHW", packed as a u64: 00 00 00 00 4D 53 48 57
VERSION = 2
MEMORY_SYNC = 0x0304
HEADER_SIZE = 32
FALLBACK_MAGIC = 0x4D53594E  # "MSYN": the reference's header when dsmil_protocol is missing
FALLBACK_HEADER_SIZE = 12
ITEM_SIZE = 48  # the 46-byte item header, zero-padded
MAX_ITEM_PAYLOAD = 0xFFFF  # payload_len is a u16
COMPRESS_THRESHOLD = 1024  # the reference's compression_threshold_bytes default
MAX_ITEMS = 65_536
MAX_ITEMS_RAW = 16 << 20
MAX_METADATA = 1 << 20
MAX_PAYLOAD_LEN = 17 << 20

_HEADER = struct.Struct(">QHHHHQQ")
_FALLBACK = struct.Struct(">III")
_U32 = struct.Struct(">I")
_ITEM = struct.Struct(">32sQBBHH2s")
_U64_MAX = (1 << 64) - 1
_V1_MAGIC = b"MSHW"
_V2_PREFIX = b"\x00\x00\x00\x00MSHW"
_FALLBACK_PREFIX = b"MSYN"
_HEX_ID = re.compile(rb"[0-9a-f]{32}")
_KEYS = ("batch_id", "source_node", "target_node", "tier", "item_count", "flags", "sync_vector")


class MsTier(enum.IntEnum):
    """MEMSHADOW's tier numbers: ours plus one (L1..L3)."""

    WORKING = 1
    EPISODIC = 2
    SEMANTIC = 3

    def to_tier(self) -> Tier:
        return Tier(self - 1)

    @classmethod
    def of(cls, tier: Tier) -> MsTier:
        return cls(int(tier) + 1)


class HeaderPriority(enum.IntEnum):
    """The v2 header's priority, named as dsmil_protocol names it (the batch writes NORMAL)."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3
    EMERGENCY = 4


class SyncFlag(enum.IntFlag):
    """Bits of the metadata's ``flags`` (the reference's ``SyncFlags``)."""

    COMPRESSED = 0x01
    ENCRYPTED = 0x02
    DELTA_ONLY = 0x04
    REQUIRES_ACK = 0x08
    CONFLICT_RESOLUTION = 0x10
    CROSS_TIER = 0x20


# Bits a MemshadowBatch may carry: COMPRESSED is decided by the encoder, and ENCRYPTED names
# a scheme the reference never implemented, so nothing could decrypt such a batch.
_BATCH_FLAGS = 0x3C
_COMPRESSED = 0x01  # an int: ~ on an IntFlag would only complement its known bits


def _local(cond: bool, message: str, field: str) -> None:
    if not cond:
        raise LocalProtocolError(message, field=field)


def _u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemshadowItem:
    """One item of a memory-sync batch. There is no origin node and no checksum.

    ``item_id`` is the id field without its NUL padding (the reference writes up to 32
    characters of a string, UTF-8 encoded). ``op`` and ``priority`` use our enums: the
    numbers are the same.

    Raises:
        LocalProtocolError: a field is outside its domain.
    """

    item_id: bytes
    timestamp_ns: int
    tier: MsTier
    op: Op
    priority: Priority = Priority.NORMAL
    payload: bytes = b""

    def __post_init__(self) -> None:
        iid = self.item_id
        _local(
            isinstance(iid, bytes) and len(iid) <= 32, "at most 32 bytes", "memshadow.item.item_id"
        )
        _local(
            not iid.endswith(b"\x00"), "NUL is padding, not part of an id", "memshadow.item.item_id"
        )
        _local(_u64(self.timestamp_ns), "must be a u64", "memshadow.item.timestamp_ns")
        try:
            object.__setattr__(self, "tier", MsTier(self.tier))
            object.__setattr__(self, "op", Op(self.op))
            object.__setattr__(self, "priority", Priority(self.priority))
        except ValueError as exc:
            raise LocalProtocolError(str(exc), field="memshadow.item.tier/op/priority") from None
        ok = isinstance(self.payload, bytes) and len(self.payload) <= MAX_ITEM_PAYLOAD
        _local(ok, f"must be bytes of at most {MAX_ITEM_PAYLOAD}", "memshadow.item.payload")

    @property
    def item_id_text(self) -> str:
        """The id as the reference reads it (UTF-8, bad bytes replaced)."""
        return self.item_id.decode("utf-8", errors="replace")

    def pack(self) -> bytes:
        """The 48-byte header and the payload, as the reference packs an item."""
        head = _ITEM.pack(
            self.item_id,
            self.timestamp_ns,
            self.tier,
            self.op,
            self.priority,
            len(self.payload),
            b"",
        )
        return head + self.payload


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemshadowBatch:
    """A MEMORY_SYNC batch: metadata, items, and the header fields around them.

    ``flags`` are the metadata flags without COMPRESSED, which the encoder decides;
    ``items_gzip`` records how the items arrived and takes no part in equality.
    ``fallback`` selects the 12-byte ``MSYN`` header (which has no priority, timestamp or
    header flags: they must stay at their defaults). ``sync_vector`` keeps its JSON order.

    Raises:
        LocalProtocolError: a field is outside its domain, or an item is of another tier
            while CROSS_TIER is not set.
    """

    batch_id: str
    source_node: str
    target_node: str
    tier: MsTier
    items: tuple[MemshadowItem, ...]
    flags: int = 0
    sync_vector: tuple[tuple[str, int], ...] = ()
    priority: HeaderPriority = HeaderPriority.NORMAL
    timestamp_ns: int = 0
    header_flags: int = 0
    fallback: bool = False
    items_gzip: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("batch_id", "source_node", "target_node"):
            _local(
                isinstance(getattr(self, name), str),
                "must be a string",
                f"memshadow.metadata.{name}",
            )
        try:
            object.__setattr__(self, "tier", MsTier(self.tier))
            object.__setattr__(self, "priority", HeaderPriority(self.priority))
        except ValueError as exc:
            raise LocalProtocolError(str(exc), field="memshadow.tier/priority") from None
        ok = isinstance(self.flags, int) and self.flags >= 0 and not self.flags & ~_BATCH_FLAGS
        _local(ok, f"flags {self.flags!r}: only bits {_BATCH_FLAGS:#x}", "memshadow.metadata.flags")
        _local(_u64(self.timestamp_ns), "must be a u64", "memshadow.timestamp_ns")
        ok = isinstance(self.header_flags, int) and 0 <= self.header_flags <= 0xFF
        _local(ok, "must be one byte", "memshadow.flags")
        if self.fallback:
            plain = self.priority == HeaderPriority.NORMAL and not self.timestamp_ns
            _local(plain and not self.header_flags, "the MSYN header has none", "memshadow")
        object.__setattr__(self, "flags", int(self.flags))
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "sync_vector", tuple(self.sync_vector))
        _local(len(self.items) <= MAX_ITEMS, f"more than {MAX_ITEMS}", "memshadow.items")
        keys = set()
        for pair in self.sync_vector:
            ok = isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
            _local(
                ok and _u64(pair[1]) and pair[0] not in keys,
                "bad entry",
                "memshadow.metadata.sync_vector",
            )
            keys.add(pair[0])
        cross = bool(self.flags & SyncFlag.CROSS_TIER)
        for index, item in enumerate(self.items):
            _local(
                isinstance(item, MemshadowItem), "not a MemshadowItem", f"memshadow.items[{index}]"
            )
            ok = cross or item.tier == self.tier
            _local(ok, "another tier without CROSS_TIER", f"memshadow.items[{index}].tier")


def metadata_json(batch: MemshadowBatch, *, compressed: bool) -> bytes:
    """The metadata exactly as the reference spells it (``json.dumps`` defaults, its key order),
    so that a plain batch re-encodes to the bytes it was decoded from."""
    flags = batch.flags | (_COMPRESSED if compressed else 0)
    doc = {
        "batch_id": batch.batch_id,
        "source_node": batch.source_node,
        "target_node": batch.target_node,
        "tier": int(batch.tier),
        "item_count": len(batch.items),
        "flags": int(flags),
        "sync_vector": dict(batch.sync_vector),
    }
    return json.dumps(doc).encode()


def pack_memshadow(batch: MemshadowBatch, *, compress: bool | None = None) -> bytes:
    """Encode a batch the way ``MemorySyncBatch.pack`` does; ``None``: gzip when items > 1 KiB.

    The gzip member has mtime 0 (the reference stamps the time), so output is reproducible.

    Raises:
        LocalProtocolError: the items or the payload would exceed the decoder's limits.
    """
    raw = b"".join(item.pack() for item in batch.items)
    _local(len(raw) <= MAX_ITEMS_RAW, f"{len(raw)} bytes of items", "memshadow.items")
    if compress is None:
        compress = len(raw) > COMPRESS_THRESHOLD
    body = gzip.compress(raw, mtime=0) if compress else raw
    meta = metadata_json(batch, compressed=compress)
    _local(len(meta) <= MAX_METADATA, f"{len(meta)} bytes of metadata", "memshadow.metadata")
    payload = b"".join((_U32.pack(len(meta)), meta, body))
    _local(len(payload) <= MAX_PAYLOAD_LEN, f"{len(payload)} bytes", "memshadow.payload_len")
    count = len(batch.items)
    if batch.fallback:
        return _FALLBACK.pack(FALLBACK_MAGIC, count, len(payload)) + payload
    flags_batch = ((count & 0xFF) << 8) | batch.header_flags
    head = _HEADER.pack(
        MAGIC, VERSION, batch.priority, MEMORY_SYNC, flags_batch, len(payload), batch.timestamp_ns
    )
    return head + payload


def is_memshadow(data: Buffer) -> bool:
    """Whether ``data`` starts like a MEMSHADOW batch (v2, fallback, or the old v1 magic)."""
    head = bytes(data[:8])
    return head == _V2_PREFIX or head[:4] in (_FALLBACK_PREFIX, _V1_MAGIC)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemshadowLayout:
    """Where everything is: what ``meshsyncd decode`` shows besides the decoded batch.

    Offsets are in the buffer given, except ``item_offsets`` of a gzip batch, which are in
    the inflated items.
    """

    batch: MemshadowBatch
    start: int
    end: int
    header_size: int
    payload_len: int
    metadata_offset: int
    metadata: bytes
    items_offset: int
    items_len: int
    raw_len: int
    item_offsets: tuple[int, ...]


# -- id and origin mapping (SPEC.md section 8, "Import") ---------------------------------


def import_item_id(item_id: bytes) -> bytes:
    """Our 16-byte item id for a MEMSHADOW id: 32 lowercase hex digits are the id itself;
    any other id is ``SHA-256("memshadow-id:" + id bytes)[:16]``.

    The hash keeps the mapping stable (every node and every re-import compute the same id)
    and keeps distinct MEMSHADOW ids apart; uppercase hex is hashed, not folded, because
    MEMSHADOW compares ids as strings and ``"AB.."`` and ``"ab.."`` are different items.
    """
    if _HEX_ID.fullmatch(item_id):
        return bytes.fromhex(item_id.decode("ascii"))
    return hashlib.sha256(b"memshadow-id:" + item_id).digest()[:16]


def import_origin(source_node: str) -> int:
    """The u64 origin given to imported versions: ``SHA-256("memshadow-origin:" + source)``.

    MEMSHADOW items carry no writer; a fixed origin per source node makes a re-import an
    exact duplicate (same key, changes nothing) and never collides with a real node's
    origin, whose equal timestamp would otherwise make two different values "duplicates".
    """
    digest = hashlib.sha256(
        b"memshadow-origin:" + source_node.encode("utf-8", "surrogatepass")
    ).digest()
    return int.from_bytes(digest[:8], "big")
