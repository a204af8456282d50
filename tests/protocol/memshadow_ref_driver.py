"""Runs INSIDE a scratch copy of the MEMSHADOW reference code; never imported by the tests.

``make_memshadow_vectors.py`` copies the reference modules into a temporary directory,
puts this file beside them and runs it there: ``pack`` builds batches with the reference's
own ``MemorySyncBatch.pack`` and prints them as JSON; ``unpack`` reads JSON hex inputs from
stdin and prints what the reference's ``MemorySyncBatch.unpack`` makes of each (its view of
the batch, or the exception it raised). ``tests/protocol/test_memshadow_export.py`` uses
``unpack`` too when ``MESHSYNCD_MEMSHADOW_REF`` names such a directory.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any

sys.path.insert(0, os.getcwd())
logging.disable(logging.CRITICAL)  # the reference logs a warning when it drops an item

from ai.brain.memory import memory_sync_protocol as M  # noqa: E402  (the reference)

TS = 1_790_000_000_123_456_789
CREATED = datetime.datetime(2026, 9, 21, 12, 0, 0, tzinfo=datetime.UTC)


def _item(iid: str, n: int, tier: int, op: int, prio: int, payload: bytes) -> Any:
    return M.MemorySyncItem(
        item_id=iid,
        timestamp_ns=TS + n,
        tier=M.MemoryTier(tier),
        operation=M.SyncOperation(op),
        priority=M.SyncPriority(prio),
        payload=payload,
    )


def _hex_id(n: int) -> str:
    import hashlib

    return hashlib.sha256(b"memshadow-vector-%d" % n).hexdigest()[:32]


def _doc(n: int) -> bytes:
    return json.dumps({"content": f"memory {n}", "n": n, "tags": ["agent", "vector"]}).encode()


def _batch(tier: int, items: list[Any], flags: int = 0, vector: Any = None) -> Any:
    return M.MemorySyncBatch(
        batch_id=f"b{tier}{len(items):04d}{flags:02x}",
        source_node="memshadow-node-a",
        target_node="meshsyncd-node-b",
        tier=M.MemoryTier(tier),
        items=items,
        created_at=CREATED,
        flags=M.SyncFlags(flags),
        sync_vector=vector or {},
    )


def pack_all() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def keep(name: str, batch: Any, text: str, fallback: bool = False) -> None:
        M.PROTOCOL_AVAILABLE = not fallback
        try:
            out[name] = {"hex": batch.pack().hex(), "description": text}
        finally:
            M.PROTOCOL_AVAILABLE = True

    keep(
        "memshadow-episodic-plain",
        _batch(
            2,
            [
                _item(_hex_id(1), 1, 2, 1, 2, _doc(1)),
                _item(_hex_id(2), 2, 2, 2, 3, _doc(2)),
                _item(_hex_id(3), 3, 2, 4, 1, json.dumps({"mood": "calm"}).encode()),
            ],
        ),
        "three items (INSERT, UPDATE, MERGE) with 32-hex ids; items under 1 KiB: plain",
    )
    keep(
        "memshadow-semantic-gzip",
        _batch(
            3,
            [_item(_hex_id(100 + i), 100 + i, 3, 1, 2, _doc(100 + i)) for i in range(40)],
            flags=int(M.SyncFlags.DELTA_ONLY | M.SyncFlags.REQUIRES_ACK),
            vector={"memshadow-node-c": TS - 1000, "memshadow-node-d": TS - 2000},
        ),
        "forty INSERTs, items over 1 KiB: gzip (metadata flag 0x01); a sync vector",
    )
    mixed = [
        _item(_hex_id(200), 200, 1, 1, 0, _doc(200)),
        _item("note-42", 201, 1, 2, 1, _doc(201)),
        _item("user:alice/prefs", 202, 1, 4, 2, json.dumps({"theme": "dark"}).encode()),
        _item("ABCDEF0123456789ABCDEF0123456789", 203, 1, 1, 3, b"uppercase hex id"),
        _item("x" * 32, 204, 1, 1, 4, b"thirty-two characters, not hex"),
        _item("an-id-longer-than-thirty-two-characters-is-cut", 205, 1, 1, 2, b"cut id"),
        _item("caf\u00e9-\u00fcber", 206, 1, 1, 2, b"non-ASCII id"),
        _item(_hex_id(1), 207, 1, 3, 4, _doc(1)),
        _item(_hex_id(2), 208, 1, 3, 2, b""),
        _item(_hex_id(3), 209, 1, 5, 3, b""),
    ]
    keep(
        "memshadow-working-mixed",
        _batch(1, mixed),
        "every op and priority; hex, short, uppercase, 32-char, cut and non-ASCII ids;"
        " a DELETE with a payload (as the reference's create_delta_batch writes them)",
    )
    keep("memshadow-empty", _batch(2, []), "no items")
    keep(
        "memshadow-fallback-header",
        _batch(2, [_item(_hex_id(300 + i), 300 + i, 2, 1, 2, _doc(i)) for i in range(2)]),
        "the 12-byte MSYN header, written when dsmil_protocol cannot be imported",
        fallback=True,
    )
    keep(
        "memshadow-300-items",
        _batch(2, [_item(_hex_id(400 + i), 400 + i, 2, 2, 1, b"{}") for i in range(300)]),
        "300 items: the header's count byte wraps to 44 (300 mod 256); gzip",
    )
    keep(
        "memshadow-cross-tier",
        _batch(
            1,
            [_item(_hex_id(500 + t), 500 + t, t, 1, 2, _doc(t)) for t in (1, 2, 3)],
            flags=int(M.SyncFlags.CROSS_TIER),
        ),
        "batch tier WORKING with items of all three tiers, flag CROSS_TIER",
    )
    return out


def view(data: bytes) -> dict[str, Any]:
    """What the reference's unpack makes of ``data``."""
    try:
        batch = M.MemorySyncBatch.unpack(data)
    except Exception as exc:
        return {"raises": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {
        "batch_id": batch.batch_id,
        "source_node": batch.source_node,
        "target_node": batch.target_node,
        "tier": int(batch.tier),
        "flags": int(batch.flags),
        "sync_vector": batch.sync_vector,
        "items": [
            {
                "item_id": i.item_id,
                "timestamp_ns": i.timestamp_ns,
                "tier": int(i.tier),
                "op": int(i.operation),
                "priority": int(i.priority),
                "payload_hex": i.payload.hex(),
            }
            for i in batch.items
        ],
    }


def main() -> None:
    if sys.argv[1] == "pack":
        json.dump(pack_all(), sys.stdout)
    else:
        inputs = json.load(sys.stdin)
        json.dump({k: view(bytes.fromhex(v)) for k, v in inputs.items()}, sys.stdout)


if __name__ == "__main__":
    main()
