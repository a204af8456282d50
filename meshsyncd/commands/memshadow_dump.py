"""``meshsyncd decode --format memshadow``: a MEMSHADOW v2 batch, field by field.

The bytes are decoded by ``protocol.memshadow`` (strict: a bad byte is a one-line error
naming the field and offset, like our own frames); this module only lays the result out in
the shape ``decode.py`` renders, with offsets and enum names beside the numbers.
"""

from __future__ import annotations

import contextlib
from typing import Any

from protocol import Op, Priority
from protocol import memshadow as MS

__all__ = ["decode_memshadow", "render_memshadow"]

_HEADER_FLAGS = {
    0x01: "ENCRYPTED",
    0x02: "COMPRESSED",
    0x04: "BATCHED",
    0x08: "REQUIRES_ACK",
    0x10: "FRAGMENTED",
    0x20: "LAST_FRAGMENT",
    0x40: "FROM_KERNEL",
    0x80: "HIGH_CONFIDENCE",
}


def _names(value: int, table: dict[int, str]) -> list[str]:
    return [name for bit, name in table.items() if value & bit]


def _header(lay: MS.MemshadowLayout) -> dict[str, Any]:
    batch = lay.batch
    if batch.fallback:
        return {
            "magic": b"MSYN",
            "item_count": len(batch.items),
            "payload_len": lay.payload_len,
        }
    return {
        "magic": f"{MS.MAGIC:#018x}",
        "version": MS.VERSION,
        "priority": int(batch.priority),
        "priority_name": batch.priority.name,
        "msg_type": f"{MS.MEMORY_SYNC:#06x}",
        "msg_type_name": "MEMORY_SYNC",
        "batch_count": len(batch.items) & 0xFF,
        "flags": batch.header_flags,
        "flags_names": _names(batch.header_flags, _HEADER_FLAGS),
        "payload_len": lay.payload_len,
        "timestamp_ns": batch.timestamp_ns,
    }


def _item(item: MS.MemshadowItem, offset: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "offset": offset,
        "item_id": item.item_id_text,
        "import_id": MS.import_item_id(item.item_id).hex(),
        "timestamp_ns": item.timestamp_ns,
        "tier": int(item.tier),
        "tier_name": item.tier.name,
        "op": int(item.op),
        "op_name": Op(item.op).name,
        "priority": int(item.priority),
        "priority_name": Priority(item.priority).name,
        "payload_len": len(item.payload),
        "payload": item.payload,
    }
    with contextlib.suppress(UnicodeDecodeError):
        out["payload_utf8"] = item.payload.decode("utf-8")
    return out


def decode_memshadow(data: bytes) -> dict[str, Any]:
    """The one batch a MEMSHADOW file or message holds, as a JSON-able document.

    Raises:
        ProtocolError: the batch is malformed, or bytes follow it (names field and offset).
    """
    lay = MS.layout_memshadow(data)
    if lay.end != len(data):
        MS.parse_memshadow(data)  # raises the trailing-bytes error of the codec
    batch = lay.batch
    flags = batch.flags | (int(MS.SyncFlag.COMPRESSED) if batch.items_gzip else 0)
    entry = {
        "offset": 0,
        "format": "fallback (MSYN)" if batch.fallback else "v2",
        "header": _header(lay),
        "metadata_len": len(lay.metadata),
        "metadata": {
            "offset": lay.metadata_offset,
            "batch_id": batch.batch_id,
            "source_node": batch.source_node,
            "target_node": batch.target_node,
            "tier": int(batch.tier),
            "tier_name": batch.tier.name,
            "item_count": len(batch.items),
            "flags": flags,
            "flags_names": [f.name for f in MS.SyncFlag if flags & f],
            "sync_vector": dict(batch.sync_vector),
            "import_origin": f"{MS.import_origin(batch.source_node):016x}",
        },
        "items_offset": lay.items_offset,
        "items_len": lay.items_len,
        "items_gzip": batch.items_gzip,
        "items_raw_len": lay.raw_len,
        "items": [_item(item, at) for item, at in zip(batch.items, lay.item_offsets, strict=True)],
    }
    return {"kind": "memshadow", "batches": [entry]}


def render_memshadow(document: dict[str, Any], render: Any) -> str:
    """Text lines; ``render`` is ``decode._render`` (indentation, hex, names)."""
    lines: list[str] = []
    for index, entry in enumerate(document["batches"]):
        lines.append(f"memshadow batch #{index} ({entry['format']}) at offset {entry['offset']}")
        render({k: v for k, v in entry.items() if k not in ("offset", "format")}, 1, lines)
    return "\n".join(lines)
