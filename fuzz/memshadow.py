"""The ``memshadow`` fuzz target: MEMSHADOW v2 batches (SPEC.md section 8; fuzz/README.md).

The contract is the one every decoder of ``protocol`` keeps (``targets._check_decoder``):
a batch or a ``RemoteProtocolError`` naming a field; the same outcome for ``bytes``,
``bytearray`` and ``memoryview``, at an offset (error offsets move with it, except those in
inflated items) and with bytes after the batch; every strict prefix of a batch is a
``TruncatedError``. A decoded batch must be accepted by its own constructors, re-encode to
an equal batch, and re-encode byte for byte when it came plain with the reference's JSON
spelling.

MEMSHADOW has no checksum, but libFuzzer's insertions and erasures break the header's
payload_len and item count; :func:`repair_memshadow` makes them agree again (best effort),
so that mutations reach the metadata and items behind them.
"""

from __future__ import annotations

import dataclasses
import json
import struct

from protocol import ProtocolError
from protocol import memshadow as MS

from .targets import _check_decoder, _fail, _with_repaired

__all__ = ["check_memshadow", "repair_memshadow"]


def repair_memshadow(data: bytes) -> bytes:
    """Set payload_len to the bytes after the header and the count to the metadata's."""
    if data[:8] == b"\x00\x00\x00\x00MSHW" and len(data) >= MS.HEADER_SIZE:
        size, count_at = MS.HEADER_SIZE, 14
        fixed = data[:16] + struct.pack(">Q", len(data) - size) + data[24:]
    elif data[:4] == b"MSYN" and len(data) >= MS.FALLBACK_HEADER_SIZE:
        size, count_at = MS.FALLBACK_HEADER_SIZE, 4
        fixed = data[:8] + struct.pack(">I", len(data) - size) + data[12:]
    else:
        return data
    if len(fixed) < size + 4:
        return fixed
    meta_len = struct.unpack_from(">I", fixed, size)[0]
    try:
        count = json.loads(fixed[size + 4 : size + 4 + meta_len]).get("item_count")
    except (ValueError, AttributeError, RecursionError):
        return fixed
    if not isinstance(count, int) or not 0 <= count <= 0xFFFFFFFF:
        return fixed
    if size == MS.HEADER_SIZE:
        return fixed[:count_at] + bytes([count & 0xFF]) + fixed[count_at + 1 :]
    return fixed[:count_at] + struct.pack(">I", count) + fixed[count_at + 4 :]


def _valid(batch: MS.MemshadowBatch, wire: bytes) -> None:
    try:
        items = tuple(
            MS.MemshadowItem(**{f.name: getattr(i, f.name) for f in dataclasses.fields(i)})
            for i in batch.items
        )
        fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
        rebuilt = MS.MemshadowBatch(**{**fields, "items": items})
    except ProtocolError as exc:
        raise _fail(f"decoded batch is refused by its own constructor: {exc!r}", wire) from None
    if rebuilt != batch:
        raise _fail("constructor changed the decoded batch", wire)
    layout = MS.layout_memshadow(wire)
    for compress in (False, True):
        again = MS.pack_memshadow(batch, compress=compress)
        if MS.parse_memshadow(again) != batch:
            raise _fail(f"batch does not survive pack_memshadow(compress={compress})", wire)
    canonical = layout.metadata == MS.metadata_json(batch, compressed=batch.items_gzip)
    if canonical and not batch.items_gzip and MS.pack_memshadow(batch, compress=False) != wire:
        raise _fail("plain batch with canonical metadata re-encodes to other bytes", wire)


def _offset_moves(exc: ProtocolError) -> bool:
    return not exc.field.startswith("memshadow.inflated_items")


def check_memshadow(data: bytes) -> None:
    """``protocol.memshadow.unpack_memshadow``: a valid batch or a RemoteProtocolError."""
    for buf in _with_repaired(data, repair_memshadow):
        _check_decoder(MS.unpack_memshadow, buf, _valid, _offset_moves)
