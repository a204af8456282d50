"""The MEMSHADOW v2 batch decoder (SPEC.md section 8, "Decoding").

Theory of operation: the header (the 32-byte v2 header, or the 12-byte ``MSYN`` fallback
header that the reference writes when its protocol library is missing) is vetted first and
the payload it declares must be all there, so every strict prefix of a batch is a
``TruncatedError``. Then the metadata length is checked against its limit and the payload,
the JSON metadata is parsed and every key vetted, the header's item count is compared with
the metadata's, the items are inflated if COMPRESSED is set (never beyond what
``item_count`` items can hold, nor ``MAX_ITEMS_RAW``) and exactly ``item_count`` items must
fill the items area. Errors in inflated items name ``memshadow.inflated_items[i]`` and give
offsets in the inflated bytes; everything else gives offsets in the buffer.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from ..constants import Op, Priority
from ..errors import (
    BadFieldError,
    BadMagicError,
    CompressionError,
    LimitError,
    ProtocolError,
    TruncatedError,
    VersionError,
)
from ..item import Buffer
from ._model import (
    _BATCH_FLAGS,
    _COMPRESSED,
    _FALLBACK,
    _FALLBACK_PREFIX,
    _HEADER,
    _ITEM,
    _KEYS,
    _U32,
    _V1_MAGIC,
    FALLBACK_HEADER_SIZE,
    HEADER_SIZE,
    ITEM_SIZE,
    MAGIC,
    MAX_ITEM_PAYLOAD,
    MAX_ITEMS,
    MAX_ITEMS_RAW,
    MAX_METADATA,
    MAX_PAYLOAD_LEN,
    MEMORY_SYNC,
    VERSION,
    HeaderPriority,
    MemshadowBatch,
    MemshadowItem,
    MemshadowLayout,
    MsTier,
    SyncFlag,
    _u64,
)

__all__ = ["layout_memshadow", "parse_memshadow", "unpack_memshadow"]


def unpack_memshadow(buf: Buffer, offset: int = 0) -> tuple[MemshadowBatch, int]:
    """Decode one batch at ``offset``; return it and the offset just past its payload.

    Raises:
        ProtocolError: any malformed input, checked in the order of SPEC.md section 8.
    """
    found = layout_memshadow(buf, offset)
    return found.batch, found.end


def parse_memshadow(buf: Buffer) -> MemshadowBatch:
    """Decode a whole file or message: exactly one batch, nothing after it.

    Raises:
        ProtocolError: as :func:`unpack_memshadow`, or bytes after the declared payload.
    """
    batch, end = unpack_memshadow(buf)
    if end != len(buf):
        raise BadFieldError(
            f"{len(buf) - end} bytes after the payload the header declares",
            field="memshadow.trailing",
            offset=end,
        )
    return batch


def layout_memshadow(buf: Buffer, offset: int = 0) -> MemshadowLayout:
    """Decode one batch at ``offset`` and say where each part was.

    Raises:
        ProtocolError: as :func:`unpack_memshadow`.
    """
    data = bytes(buf) if not isinstance(buf, bytes) else buf
    head = _read_header(data, offset)
    fallback, hsize, count_field, payload_len, fields = head
    start = offset + hsize
    end = start + payload_len
    meta_len = _U32.unpack_from(data, start)[0]
    if meta_len > MAX_METADATA:
        raise LimitError(
            f"{meta_len} bytes exceeds {MAX_METADATA}", field="memshadow.metadata_len", offset=start
        )
    if meta_len > payload_len - 4:
        raise BadFieldError(
            f"{meta_len} bytes of metadata in a {payload_len}-byte payload",
            field="memshadow.metadata_len",
            offset=start,
        )
    meta_at = start + 4
    meta_bytes = data[meta_at : meta_at + meta_len]
    meta = _metadata(meta_bytes, meta_at)
    count = meta["item_count"]
    if count > MAX_ITEMS:
        raise LimitError(
            f"{count} items exceeds {MAX_ITEMS}",
            field="memshadow.metadata.item_count",
            offset=meta_at,
        )
    if fallback and count_field != count:
        raise BadFieldError(
            f"header says {count_field} items, metadata {count}",
            field="memshadow.item_count",
            offset=offset + 4,
        )
    if not fallback and count_field != count & 0xFF:
        raise BadFieldError(
            f"header says {count_field} items (mod 256), metadata {count}",
            field="memshadow.batch_count",
            offset=offset + 14,
        )
    items_at = meta_at + meta_len
    gz = bool(meta["flags"] & SyncFlag.COMPRESSED)
    if gz:
        bound = min(MAX_ITEMS_RAW, count * (ITEM_SIZE + MAX_ITEM_PAYLOAD))
        raw = _gunzip(data[items_at:end], bound, items_at)
        prefix = "memshadow.inflated_items"
        items, offsets = _items(raw, 0, len(raw), count, prefix)
    else:
        raw, prefix = b"", "memshadow.items"
        items, offsets = _items(data, items_at, end, count, prefix)
    cross = bool(meta["flags"] & SyncFlag.CROSS_TIER)
    for index, item in enumerate(items):
        if not cross and item.tier != meta["tier"]:
            raise BadFieldError(
                f"item of tier {item.tier} in a batch of tier {meta['tier']} without CROSS_TIER",
                field=f"{prefix}[{index}].tier",
                offset=offsets[index] + 40,
            )
    batch = MemshadowBatch(
        batch_id=meta["batch_id"],
        source_node=meta["source_node"],
        target_node=meta["target_node"],
        tier=MsTier(meta["tier"]),
        items=tuple(items),
        flags=meta["flags"] & ~_COMPRESSED,
        sync_vector=tuple(meta["sync_vector"].items()),
        items_gzip=gz,
        fallback=fallback,
        **fields,
    )
    return MemshadowLayout(
        batch=batch,
        start=offset,
        end=end,
        header_size=hsize,
        payload_len=payload_len,
        metadata_offset=meta_at,
        metadata=meta_bytes,
        items_offset=items_at,
        items_len=end - items_at,
        raw_len=len(raw) if gz else end - items_at,
        item_offsets=tuple(offsets),
    )


def _need(data: bytes, offset: int, size: int, field: str) -> None:
    if len(data) - offset < size:
        raise TruncatedError(
            f"need {size} bytes, {max(len(data) - offset, 0)} left", field=field, offset=offset
        )


def _read_header(data: bytes, off: int) -> tuple[bool, int, int, int, dict[str, Any]]:
    """(fallback, header size, count field, payload_len, header fields for the batch)."""
    _need(data, off, 4, "memshadow.header")
    first = data[off : off + 4]
    if first == _FALLBACK_PREFIX:
        _need(data, off, FALLBACK_HEADER_SIZE, "memshadow.header")
        _magic, count, payload_len = _FALLBACK.unpack_from(data, off)
        if count > MAX_ITEMS:
            raise LimitError(
                f"{count} items exceeds {MAX_ITEMS}", field="memshadow.item_count", offset=off + 4
            )
        _payload_len(data, off, FALLBACK_HEADER_SIZE, payload_len, off + 8)
        return True, FALLBACK_HEADER_SIZE, count, payload_len, {}
    if first == _V1_MAGIC:
        raise VersionError(
            "MEMSHADOW v1 (4-byte magic) is not supported; this reads v2",
            field="memshadow.magic",
            offset=off,
        )
    if first != b"\x00\x00\x00\x00":
        raise BadMagicError(
            f"{first.hex()}: not a MEMSHADOW batch", field="memshadow.magic", offset=off
        )
    _need(data, off, HEADER_SIZE, "memshadow.header")
    magic, version, prio, msg_type, flags_batch, payload_len, ts = _HEADER.unpack_from(data, off)
    if magic != MAGIC:
        raise BadMagicError(
            f"{magic:#018x}: not a MEMSHADOW batch", field="memshadow.magic", offset=off
        )
    if version != VERSION:
        raise VersionError(
            f"MEMSHADOW version {version}, this reads {VERSION}",
            field="memshadow.version",
            offset=off + 8,
        )
    if prio not in HeaderPriority._value2member_map_:
        raise BadFieldError(f"unknown priority {prio}", field="memshadow.priority", offset=off + 10)
    if msg_type != MEMORY_SYNC:
        raise BadFieldError(
            f"message type {msg_type:#06x}, only MEMORY_SYNC ({MEMORY_SYNC:#06x}) holds a batch",
            field="memshadow.msg_type",
            offset=off + 12,
        )
    _payload_len(data, off, HEADER_SIZE, payload_len, off + 16)
    fields = {
        "priority": HeaderPriority(prio),
        "timestamp_ns": ts,
        "header_flags": flags_batch & 0xFF,
    }
    return False, HEADER_SIZE, flags_batch >> 8, payload_len, fields


def _payload_len(data: bytes, off: int, hsize: int, payload_len: int, at: int) -> None:
    if payload_len > MAX_PAYLOAD_LEN:
        raise LimitError(
            f"{payload_len} bytes exceeds {MAX_PAYLOAD_LEN}",
            field="memshadow.payload_len",
            offset=at,
        )
    if payload_len < 4:
        raise BadFieldError(
            f"{payload_len} bytes cannot hold the metadata length",
            field="memshadow.payload_len",
            offset=at,
        )
    start = off + hsize
    if len(data) - start < payload_len:
        raise TruncatedError(
            f"declares {payload_len} payload bytes, {len(data) - start} left",
            field="memshadow.payload",
            offset=start,
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _metadata(raw: bytes, at: int) -> dict[str, Any]:
    """The metadata object, every key present, known and of its type."""

    def bad(message: str, name: str = "") -> ProtocolError:
        field = f"memshadow.metadata.{name}" if name else "memshadow.metadata"
        return BadFieldError(message, field=field, offset=at)

    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"not UTF-8 JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise bad("must be a JSON object")
    missing = [k for k in _KEYS if k not in doc]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    extra = sorted(set(doc) - set(_KEYS))
    if extra:
        raise bad(f"unknown key {extra[0]!r}")
    for name in ("batch_id", "source_node", "target_node"):
        if not isinstance(doc[name], str):
            raise bad("must be a string", name)
    for name in ("tier", "item_count", "flags"):
        if not _u64(doc[name]):
            raise bad("must be a non-negative integer", name)
    if doc["tier"] not in MsTier._value2member_map_:
        raise bad(f"unknown tier {doc['tier']}", "tier")
    if doc["flags"] & ~(_BATCH_FLAGS | _COMPRESSED):
        what = "ENCRYPTED is not supported" if doc["flags"] & SyncFlag.ENCRYPTED else "unknown bits"
        raise bad(f"{what} in {doc['flags']:#x}", "flags")
    vector = doc["sync_vector"]
    if not isinstance(vector, dict) or not all(_u64(v) for v in vector.values()):
        raise bad("must map node ids to non-negative integers", "sync_vector")
    return doc


def _gunzip(body: bytes, limit: int, at: int) -> bytes:
    """Inflate exactly one gzip member into at most ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise CompressionError(
            f"corrupt gzip ({exc})", field="memshadow.items", offset=at
        ) from None
    if len(out) > limit:
        raise LimitError(
            f"gzip inflates beyond {limit} bytes, what the declared item count can hold",
            field="memshadow.items",
            offset=at,
        )
    if not inflater.eof:
        raise CompressionError("gzip member is cut short", field="memshadow.items", offset=at)
    if inflater.unused_data:
        raise CompressionError(
            f"{len(inflater.unused_data)} bytes after the gzip member",
            field="memshadow.items",
            offset=at,
        )
    return out


def _items(
    data: bytes, off: int, end: int, count: int, prefix: str
) -> tuple[list[MemshadowItem], list[int]]:
    """Exactly ``count`` items filling ``data[off:end]``."""
    if count * ITEM_SIZE > end - off:
        raise BadFieldError(
            f"{count} items cannot fit in {end - off} bytes",
            field="memshadow.metadata.item_count",
            offset=off,
        )
    items: list[MemshadowItem] = []
    offsets: list[int] = []
    for index in range(count):
        name = f"{prefix}[{index}]"
        if end - off < ITEM_SIZE:
            raise TruncatedError(
                f"need {ITEM_SIZE} header bytes, {end - off} left",
                field=f"{name}.header",
                offset=off,
            )
        iid, ts, tier, op, prio, plen, pad = _ITEM.unpack_from(data, off)
        if not (0 < tier < 4 and 0 < op < 6 and prio < 5 and pad == b"\x00\x00"):
            raise _diagnose(tier, op, prio, pad, f"{name}", off)
        start = off + ITEM_SIZE
        if end - start < plen:
            raise TruncatedError(
                f"declares {plen} payload bytes, {end - start} left",
                field=f"{name}.payload",
                offset=start,
            )
        items.append(
            MemshadowItem(
                item_id=iid.rstrip(b"\x00"),
                timestamp_ns=ts,
                tier=MsTier(tier),
                op=Op(op),
                priority=Priority(prio),
                payload=data[start : start + plen],
            )
        )
        offsets.append(off)
        off = start + plen
    if off != end:
        raise BadFieldError(
            f"{end - off} bytes after the last of {count} items", field=prefix, offset=off
        )
    return items, offsets


def _diagnose(tier: int, op: int, prio: int, pad: bytes, name: str, off: int) -> ProtocolError:
    """Name the first bad fixed field of an item header the fast check refused."""
    for ok, field, rel, what in (
        (tier in MsTier._value2member_map_, "tier", 40, f"unknown tier {tier}"),
        (op in Op._value2member_map_, "op", 41, f"unknown op {op}"),
        (prio in Priority._value2member_map_, "priority", 42, f"unknown priority {prio}"),
        (pad == b"\x00\x00", "padding", 46, f"must be zero, got {pad.hex()}"),
    ):
        if not ok:
            return BadFieldError(what, field=f"{name}.{field}", offset=off + rel)
    return BadFieldError("invalid item header", field=name, offset=off)  # pragma: no cover
