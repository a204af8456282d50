"""Batch codec: a 56-byte header and a body of packed items (SPEC.md section 3).

Theory of operation: the header is read and every declared size checked against the
limits first (``peek_batch``), which is cheap and allocation-free, so a connection can vet a
batch on the event loop and leave the body to a worker thread. ``unpack_batch`` then checks
the CRC over the body as sent, inflates a compressed body against its declared raw length
(never beyond ``MAX_BATCH_RAW``) and parses the items with the item fast path.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
import zlib

import zstandard

from .constants import (
    BATCH_HEADER_SIZE,
    BATCH_MAGIC,
    BATCH_VERSION,
    BODY_ZSTD,
    COMPRESS_THRESHOLD,
    ITEM_HEADER_SIZE,
    MAX_BATCH_ITEMS,
    MAX_BATCH_RAW,
    ZSTD_LEVEL,
    Tier,
)
from .errors import (
    BadFieldError,
    BadMagicError,
    ChecksumError,
    LimitError,
    LocalProtocolError,
    TruncatedError,
    VersionError,
)
from .item import Buffer, Item, pack_items, unpack_items
from .payload import inflate

__all__ = ["Batch", "BatchHeader", "pack_batch", "peek_batch", "unpack_batch"]

_HEADER = struct.Struct(">4sBBH16sQQIIII")
_HEAD52 = struct.Struct(">4sBBH16sQQIII")
_CRC = struct.Struct(">I")
_U64_MAX = (1 << 64) - 1
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    """One compressor per thread: zstd contexts are not thread-safe and cost to build."""
    cctx: zstandard.ZstdCompressor | None = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_checksum=False, write_content_size=True, write_dict_id=False
        )
        _local.cctx = cctx
    return cctx


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BatchHeader:
    """The fixed fields of a batch, vetted against every limit."""

    tier: Tier
    flags: int
    batch_id: bytes
    source: int
    target: int
    item_count: int
    raw_len: int
    body_len: int
    crc32: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch on the wire."""
        return BATCH_HEADER_SIZE + self.body_len


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """Items of one tier sent by one node.

    ``body_zstd`` records how the batch arrived; it does not take part in equality, and
    :func:`pack_batch` decides compression afresh unless told otherwise.

    Raises:
        LocalProtocolError: a field is out of its domain, or an item has another tier.
    """

    batch_id: bytes
    source: int
    target: int = 0
    tier: Tier
    items: tuple[Item, ...]
    body_zstd: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.batch_id, bytes) or len(self.batch_id) != 16:
            raise LocalProtocolError("must be 16 bytes", field="batch.batch_id")
        for name in ("source", "target"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= _U64_MAX:
                raise LocalProtocolError("must be a u64", field=f"batch.{name}")
        try:
            object.__setattr__(self, "tier", Tier(self.tier))
        except ValueError:
            raise LocalProtocolError(f"unknown tier {self.tier}", field="batch.tier") from None
        if not isinstance(self.items, tuple):
            object.__setattr__(self, "items", tuple(self.items))
        if len(self.items) > MAX_BATCH_ITEMS:
            raise LocalProtocolError(
                f"{len(self.items)} items exceeds {MAX_BATCH_ITEMS}", field="batch.items"
            )
        for index, item in enumerate(self.items):
            if not isinstance(item, Item):
                raise LocalProtocolError("not an Item", field=f"batch.items[{index}]")
            if item.tier != self.tier:
                raise LocalProtocolError(
                    f"item of tier {item.tier} in a batch of tier {self.tier}",
                    field=f"batch.items[{index}].tier",
                )

    @staticmethod
    def new_id() -> bytes:
        return os.urandom(16)


def pack_batch(batch: Batch, *, compress: bool | None = None) -> bytes:
    """Encode a batch; ``compress=None`` applies the MEMSHADOW rule of SPEC.md section 3.

    Raises:
        LocalProtocolError: the raw body would exceed ``MAX_BATCH_RAW``.
    """
    raw = pack_items(batch.items)
    if len(raw) > MAX_BATCH_RAW:
        raise LocalProtocolError(
            f"raw body of {len(raw)} bytes exceeds {MAX_BATCH_RAW}", field="batch.raw_len"
        )
    body = raw
    flags = 0
    if compress is None:
        compress = len(raw) > COMPRESS_THRESHOLD
        if compress:
            packed = _compressor().compress(raw)
            if len(packed) < len(raw):
                body, flags = packed, BODY_ZSTD
    elif compress:
        body, flags = _compressor().compress(raw), BODY_ZSTD
    head = _HEAD52.pack(
        BATCH_MAGIC,
        BATCH_VERSION,
        batch.tier,
        flags,
        batch.batch_id,
        batch.source,
        batch.target,
        len(batch.items),
        len(raw),
        len(body),
    )
    return b"".join((head, _CRC.pack(zlib.crc32(body, zlib.crc32(head))), body))


def peek_batch(buf: Buffer, offset: int = 0, *, prefix: str = "batch") -> BatchHeader:
    """Read and vet a batch header without touching the body beyond its length.

    Raises:
        TruncatedError: fewer than 56 header bytes, or fewer body bytes than declared.
        BadMagicError, VersionError, BadFieldError, LimitError: a header field is invalid.
    """
    size = len(buf)
    if size - offset < BATCH_HEADER_SIZE:
        raise TruncatedError(
            f"need {BATCH_HEADER_SIZE} header bytes, {max(size - offset, 0)} left",
            field=f"{prefix}.header",
            offset=offset,
        )
    magic, version, tier, flags, batch_id, source, target, count, raw_len, body_len, crc = (
        _HEADER.unpack_from(buf, offset)
    )
    if magic != BATCH_MAGIC:
        raise BadMagicError(
            f"{magic!r} is not a batch magic", field=f"{prefix}.magic", offset=offset
        )
    if version != BATCH_VERSION:
        raise VersionError(
            f"batch version {version}, this node speaks {BATCH_VERSION}",
            field=f"{prefix}.batch_version",
            offset=offset + 4,
        )
    if tier not in Tier._value2member_map_:
        raise BadFieldError(f"unknown tier {tier}", field=f"{prefix}.tier", offset=offset + 5)
    if flags & ~BODY_ZSTD:
        raise BadFieldError(
            f"unknown flag bits {flags:#06x}", field=f"{prefix}.flags", offset=offset + 6
        )
    if count > MAX_BATCH_ITEMS:
        raise LimitError(
            f"{count} items exceeds {MAX_BATCH_ITEMS}",
            field=f"{prefix}.item_count",
            offset=offset + 40,
        )
    if raw_len > MAX_BATCH_RAW:
        raise LimitError(
            f"raw body of {raw_len} bytes exceeds {MAX_BATCH_RAW}",
            field=f"{prefix}.raw_len",
            offset=offset + 44,
        )
    if count * ITEM_HEADER_SIZE > raw_len:
        raise BadFieldError(
            f"{count} items cannot fit in {raw_len} bytes",
            field=f"{prefix}.item_count",
            offset=offset + 40,
        )
    if flags & BODY_ZSTD:
        if body_len > MAX_BATCH_RAW:
            raise LimitError(
                f"compressed body of {body_len} bytes exceeds {MAX_BATCH_RAW}",
                field=f"{prefix}.body_len",
                offset=offset + 48,
            )
    elif body_len != raw_len:
        raise BadFieldError(
            f"plain body of {body_len} bytes, raw_len says {raw_len}",
            field=f"{prefix}.body_len",
            offset=offset + 48,
        )
    start = offset + BATCH_HEADER_SIZE
    if size - start < body_len:
        raise TruncatedError(
            f"declares {body_len} body bytes, {size - start} left",
            field=f"{prefix}.body",
            offset=start,
        )
    return BatchHeader(
        tier=Tier(tier),
        flags=flags,
        batch_id=batch_id,
        source=source,
        target=target,
        item_count=count,
        raw_len=raw_len,
        body_len=body_len,
        crc32=crc,
    )


def unpack_batch(buf: Buffer, offset: int = 0, *, prefix: str = "batch") -> tuple[Batch, int]:
    """Decode one batch at ``offset``; return it and the offset just past it.

    Raises:
        ProtocolError: any malformed input, in the order of SPEC.md section 3.
    """
    head = peek_batch(buf, offset, prefix=prefix)
    start = offset + BATCH_HEADER_SIZE
    end = start + head.body_len
    view = memoryview(buf)
    body = bytes(view[start:end])
    if zlib.crc32(body, zlib.crc32(view[offset : offset + 52])) != head.crc32:
        raise ChecksumError("CRC-32 mismatch", field=f"{prefix}.crc32", offset=offset + 52)
    if head.flags & BODY_ZSTD:
        raw = inflate(body, head.raw_len, f"{prefix}.body", start)
        if len(raw) != head.raw_len:
            raise BadFieldError(
                f"body inflated to {len(raw)} bytes, raw_len says {head.raw_len}",
                field=f"{prefix}.raw_len",
                offset=offset + 44,
            )
    else:
        raw = body
    items = unpack_items(raw, head.item_count, tier=head.tier, prefix=f"{prefix}.items")
    # Every field was vetted above; skip the constructor's per-item re-check.
    batch = object.__new__(Batch)
    for name, value in (
        ("batch_id", head.batch_id),
        ("source", head.source),
        ("target", head.target),
        ("tier", head.tier),
        ("items", tuple(items)),
        ("body_zstd", bool(head.flags & BODY_ZSTD)),
    ):
        object.__setattr__(batch, name, value)
    return batch, end
