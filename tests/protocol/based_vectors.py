"""Golden vectors of protocol 4: BASED items (SPEC.md section 2.2), good and bad.

Kept apart from ``make_vectors.py`` (which calls these), like ``named_vectors.py``: fixed
inputs only, and vectors are only ever added.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import Any

import zstandard

import protocol as P

ORIGIN_A = 0x0123456789ABCDEF
ORIGIN_B = 0xFEDCBA9876543210
TS = 1_790_000_000_123_456_789


def based(
    base: tuple[int, int],
    *,
    n: int,
    name: tuple[tuple[str, ...], str] | None = None,
    op: P.Op = P.Op.UPDATE,
    value: bytes = b"",
    zstd: bool = False,
    resolves: bool = False,
    tier: P.Tier = P.Tier.EPISODIC,
) -> P.Item:
    flags = 0
    if zstd:
        cctx = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)
        value, flags = cctx.compress(value), P.PAYLOAD_ZSTD
    block = b""
    item_id = hashlib.sha256(b"meshsyncd-vector-%d" % n).digest()[:16]
    if name is not None:
        block = P.name_block(*name)
        flags, item_id = flags | P.NAMED, P.name_id(block)
    flags, payload = P.with_base(flags, block + value, base, resolves=resolves)
    return P.Item(
        item_id=item_id,
        timestamp_ns=TS + n,
        origin=ORIGIN_A if n % 2 else ORIGIN_B,
        tier=tier,
        op=op,
        flags=flags,
        payload=payload,
    )


PREFS = ("agents", "alden", "prefs")


def items() -> dict[str, tuple[P.Item, str]]:
    return {
        "item-based-named-update": (
            based((TS + 600, ORIGIN_B), n=601, name=(PREFS, "units"), value=b'"metric"'),
            "BASED UPDATE of a NAMED item: name block, then the 16-byte base "
            "(timestamp_ns, origin of the version it replaced), then the value",
        ),
        "item-based-insert-zero": (
            based((0, 0), n=602, op=P.Op.INSERT, value=b'{"first":true}'),
            "BASED nameless INSERT whose writer held no version: base all zeros",
        ),
        "item-based-named-delete": (
            based((TS + 601, ORIGIN_A), n=603, name=(PREFS, "units"), op=P.Op.DELETE),
            "BASED DELETE: name block and base, no value",
        ),
        "item-based-merge-zstd": (
            based(
                (TS + 603, ORIGIN_A),
                n=604,
                name=(("kb",), "facts"),
                op=P.Op.MERGE,
                value=json.dumps({"text": "compressible " * 40}).encode(),
                zstd=True,
                tier=P.Tier.SEMANTIC,
            ),
            "BASED MERGE with PAYLOAD_ZSTD: name and base stay plain, only the value is zstd",
        ),
        "item-based-resolves": (
            based(
                (TS + 610, ORIGIN_A),
                n=611,
                name=(PREFS, "units"),
                value=b'"imperial"',
                resolves=True,
            ),
            "RESOLVES | BASED: a resolution whose base covers the conflict's winner and loser",
        ),
    }


def batches() -> dict[str, tuple[P.Batch, bool | None, str]]:
    inner = [
        based((TS + 619 + i, ORIGIN_B), n=620 + i, name=(PREFS, f"k{i}"), value=b'{"v":1}')
        for i in range(3)
    ]
    plain = P.Item(
        item_id=hashlib.sha256(b"meshsyncd-vector-630").digest()[:16],
        timestamp_ns=TS + 630,
        origin=ORIGIN_A,
        tier=P.Tier.EPISODIC,
        op=P.Op.INSERT,
        payload=b'{"by":"id"}',
    )
    return {
        "batch-based-mixed": (
            P.Batch(
                batch_id=hashlib.sha256(b"meshsyncd-vector-631").digest()[:16],
                source=ORIGIN_A,
                target=ORIGIN_B,
                tier=P.Tier.EPISODIC,
                items=(*inner, plain),
            ),
            None,
            "three BASED NAMED items and one item without a base in one plain batch",
        ),
    }


def frames() -> dict[str, tuple[P.Frame, str]]:
    return {
        "frame-hello-v4": (
            P.Hello(
                version=4,
                node_id=hashlib.sha256(b"meshsyncd-node-a").digest(),
                incarnation=hashlib.sha256(b"meshsyncd-incarnation-a").digest()[:16],
                capabilities=0x3F,
                timestamp_ns=TS,
            ),
            "HELLO of protocol 4 (BASED items); older versions are refused by the daemon",
        ),
    }


def _raw(flags: int, payload: bytes, op: P.Op = P.Op.INSERT) -> bytes:
    """An item packed without the constructor's checks (to build invalid vectors)."""
    item_id = hashlib.sha256(b"meshsyncd-vector-650").digest()[:16]
    head = struct.pack(">16sQQBBBBHHI", item_id, TS, ORIGIN_A, 2, 1, op, 2, flags, 0, len(payload))
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


def bad_vectors() -> dict[str, tuple[str, bytes, dict[str, Any], str]]:
    base = struct.pack(">QQ", TS, ORIGIN_B)
    return {
        "bad-item-base-truncated": (
            "item",
            _raw(P.BASED, base[:10]),
            {"class": "TruncatedError", "field": "item.base", "offset": 48},
            "BASED item whose payload ends inside the 16-byte base",
        ),
        "bad-item-base-delete-value": (
            "item",
            _raw(P.BASED, base + b"{}", P.Op.DELETE),
            {"class": "BadFieldError", "field": "item.payload", "offset": 64},
            "BASED DELETE with a value after the base",
        ),
        "bad-item-resolves-without-base": (
            "item",
            _raw(P.RESOLVES, base + b"{}"),
            {"class": "BadFieldError", "field": "item.flags", "offset": 36},
            "RESOLVES is only valid together with BASED",
        ),
    }
