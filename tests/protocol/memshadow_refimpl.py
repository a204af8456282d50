"""The reference's ``MemorySyncBatch.unpack`` rules, re-implemented for the tests.

MEMSHADOW's reader (SWORDIntel/MEMSHADOW at 63e1ccc, ``memory_sync_protocol.py``) cannot be
imported at CI time, so this restates what it does, lax parts included, to show that what
our exporter writes is what a MEMSHADOW node reads. It is checked against the real thing
through the golden vectors: each vector's JSON records what the reference's ``unpack`` made
of it (``reference_unpack``), and ``test_memshadow.py`` asserts this module agrees on every
vector, good and bad. The rules, in the reference's order:

- With its protocol library present and at least 32 bytes: the v2 header must have the
  magic, a priority 0..4 and a known message type (version and payload_len are not
  checked); otherwise a 12-byte ``MSYN`` header is skipped if present, else nothing is.
- u32 metadata length, JSON metadata (missing keys default), then everything to the end of
  the input is the items area, gunzipped if metadata flag 0x01 is set.
- Items are read until the area ends; an item that is short, or whose tier, op or priority
  is out of range, ends the list silently (the reference logs a warning).
- A metadata tier outside 1..3 raises.
"""

from __future__ import annotations

import gzip
import json
import struct
from typing import Any

_MESSAGE_TYPES = frozenset(
    (
        *range(0x0001, 0x0006),
        *range(0x0100, 0x0107),
        *range(0x0110, 0x0113),
        *range(0x0201, 0x0206),
        *range(0x0301, 0x0306),
        *range(0x0401, 0x0405),
        *range(0x0501, 0x0507),
    )
)


def _header_ok(data: bytes) -> bool:
    magic, _version, prio, msg_type, _fb, _plen, _ts = struct.unpack(">QHHHHQQ", data[:32])
    return magic == 0x4D534857 and prio <= 4 and msg_type in _MESSAGE_TYPES


def _fallback(data: bytes) -> int:
    return 12 if len(data) >= 12 and struct.unpack("!III", data[:12])[0] == 0x4D53594E else 0


def ref_unpack(data: bytes, *, protocol_available: bool = True) -> dict[str, Any]:
    """What the reference's unpack returns, in the shape of a vector's ``reference_unpack``.

    Raises:
        Exception: whatever the reference would raise (struct, JSON, gzip, enum errors).
    """
    offset = 0
    if protocol_available and len(data) >= 32:
        offset = 32 if _header_ok(data) else _fallback(data)
    else:
        offset = _fallback(data)
    (meta_len,) = struct.unpack("!I", data[offset : offset + 4])
    offset += 4
    meta = json.loads(data[offset : offset + meta_len].decode())
    offset += meta_len
    items_data = data[offset:]
    flags = int(meta.get("flags", 0))
    if flags & 0x01:
        items_data = gzip.decompress(items_data)
    items = []
    pos = 0
    while pos < len(items_data):
        rest = items_data[pos:]
        if len(rest) < 48:
            break
        iid, ts, tier, op, prio, plen = struct.unpack("!32sQBBHH", rest[:46])
        if not (1 <= tier <= 3 and 1 <= op <= 5 and prio <= 4) or len(rest) < 48 + plen:
            break
        items.append(
            {
                "item_id": iid.rstrip(b"\x00").decode("utf-8", errors="replace"),
                "timestamp_ns": ts,
                "tier": tier,
                "op": op,
                "priority": prio,
                "payload_hex": rest[48 : 48 + plen].hex(),
            }
        )
        pos += 48 + plen
    tier = meta.get("tier", 1)
    if tier not in (1, 2, 3):
        raise ValueError(f"{tier} is not a valid MemoryTier")
    return {
        "batch_id": meta.get("batch_id", ""),
        "source_node": meta.get("source_node", ""),
        "target_node": meta.get("target_node", ""),
        "tier": tier,
        "flags": flags,
        "sync_vector": meta.get("sync_vector", {}),
        "items": items,
    }
