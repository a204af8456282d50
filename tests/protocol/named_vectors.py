"""Golden vectors of protocol 3: NAMED items (SPEC.md section 2.1), good and bad.

Kept apart from ``make_vectors.py`` (which calls these) so that file does not grow past a
readable size; the same rules hold: fixed inputs only, and vectors are only ever added.
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


def named(
    namespace: tuple[str, ...],
    key: str,
    *,
    n: int,
    op: P.Op = P.Op.INSERT,
    tier: P.Tier = P.Tier.EPISODIC,
    value: bytes = b"",
    zstd: bool = False,
    priority: P.Priority = P.Priority.NORMAL,
) -> P.Item:
    block = P.name_block(namespace, key)
    flags = P.NAMED
    if zstd:
        cctx = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)
        value, flags = cctx.compress(value), flags | P.PAYLOAD_ZSTD
    return P.Item(
        item_id=P.name_id(block),
        timestamp_ns=TS + n,
        origin=ORIGIN_A if n % 2 else ORIGIN_B,
        tier=tier,
        op=op,
        priority=priority,
        flags=flags,
        payload=block + value,
    )


def items() -> dict[str, tuple[P.Item, str]]:
    prefs = json.dumps({"units": "metric", "tz": "Europe/Berlin"}, separators=(",", ":"))
    return {
        "item-named-insert-episodic": (
            named(("agents", "alden", "prefs"), "units", n=500, value=prefs.encode()),
            "NAMED INSERT: namespace agents/alden/prefs, key units, then the JSON value",
        ),
        "item-named-root-key": (
            named((), "units", n=501, tier=P.Tier.SEMANTIC, value=b'"metric"'),
            "NAMED item in the root namespace (depth 0): what --key alone writes",
        ),
        "item-named-delete": (
            named(("agents", "alden", "prefs"), "units", n=502, op=P.Op.DELETE),
            "NAMED DELETE: the name block and no value",
        ),
        "item-named-merge": (
            named(
                ("agents", "alice"), "profile", n=503, op=P.Op.MERGE, value=b'{"mood":"curious"}'
            ),
            "NAMED MERGE: the value after the name is a JSON object",
        ),
        "item-named-zstd-value": (
            named(
                ("kb", "security"),
                "alert/2026-09-21 #7",
                n=504,
                tier=P.Tier.SEMANTIC,
                value=json.dumps({"text": "compressible " * 40}).encode(),
                zstd=True,
                priority=P.Priority.URGENT,
            ),
            "NAMED with PAYLOAD_ZSTD: the name stays plain, only the value is a zstd frame; "
            "a key may hold '/' and spaces",
        ),
        "item-named-unicode": (
            named(("agents", "mimic", "ümlaut é", "日本"), "ключ 🔑", n=505, value=b"{}"),
            "NAMED with non-ASCII labels and key (UTF-8 lengths in bytes)",
        ),
    }


def batches() -> dict[str, tuple[P.Batch, bool | None, str]]:
    inner = [
        named(("agents", "sentry", "alerts"), f"alert-{i:04d}", n=520 + i, value=b'{"level":2}')
        for i in range(3)
    ]
    nameless = P.Item(
        item_id=hashlib.sha256(b"meshsyncd-vector-530").digest()[:16],
        timestamp_ns=TS + 530,
        origin=ORIGIN_A,
        tier=P.Tier.EPISODIC,
        op=P.Op.INSERT,
        payload=b'{"by":"id"}',
    )
    return {
        "batch-named-mixed": (
            P.Batch(
                batch_id=hashlib.sha256(b"meshsyncd-vector-531").digest()[:16],
                source=ORIGIN_A,
                target=ORIGIN_B,
                tier=P.Tier.EPISODIC,
                items=(*inner, nameless),
            ),
            None,
            "three NAMED items and one nameless item in one plain batch",
        ),
    }


def frames() -> dict[str, tuple[P.Frame, str]]:
    return {
        "frame-hello-v3": (
            P.Hello(
                version=3,
                node_id=hashlib.sha256(b"meshsyncd-node-a").digest(),
                incarnation=hashlib.sha256(b"meshsyncd-incarnation-a").digest()[:16],
                capabilities=0x3F,
                timestamp_ns=TS,
            ),
            "HELLO of protocol 3 (NAMED items); older versions are refused by the daemon",
        ),
    }


def _raw(item_id: bytes, flags: int, payload: bytes, op: P.Op = P.Op.INSERT) -> bytes:
    """An item packed without the constructor's checks (to build invalid vectors)."""
    head = struct.pack(">16sQQBBBBHHI", item_id, TS, ORIGIN_A, 2, 1, op, 2, flags, 0, len(payload))
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _bad(block: bytes, value: bytes = b"{}", op: P.Op = P.Op.INSERT) -> bytes:
    return _raw(P.name_id(block), P.NAMED, block + value, op)


def bad_vectors() -> dict[str, tuple[str, bytes, dict[str, Any], str]]:
    good = P.name_block(("agents", "alden"), "units")
    return {
        "bad-item-name-too-deep": (
            "item",
            _bad(b"\x11" + b"\x01a" * 17 + b"\x00\x01k"),
            {"class": "BadFieldError", "field": "item.name.depth", "offset": 48},
            "namespace of 17 labels, one over the limit",
        ),
        "bad-item-name-empty-label": (
            "item",
            _bad(b"\x02\x06agents\x00\x00\x01k"),
            {"class": "BadFieldError", "field": "item.name.labels[1].len", "offset": 56},
            "second label empty",
        ),
        "bad-item-name-separator": (
            "item",
            _bad(b"\x01\x0cagents/alden\x00\x05units"),
            {"class": "BadFieldError", "field": "item.name.labels[0].text", "offset": 56},
            "a label holding the separator '/'",
        ),
        "bad-item-name-utf8": (
            "item",
            _bad(b"\x00\x00\x03k\xc3("),
            {"class": "BadFieldError", "field": "item.name.key", "offset": 52},
            "key that is not UTF-8",
        ),
        "bad-item-name-truncated": (
            "item",
            _raw(P.name_id(good), P.NAMED, good[:-2]),
            {"class": "TruncatedError", "field": "item.name.key", "offset": 64},
            "payload ends inside the key",
        ),
        "bad-item-name-key-long": (
            "item",
            _bad(b"\x00\x04\x01" + b"k" * 1025),
            {"class": "LimitError", "field": "item.name.key_len", "offset": 49},
            "key of 1025 bytes, one over the limit",
        ),
        "bad-item-name-id-mismatch": (
            "item",
            _raw(hashlib.sha256(b"not the name").digest()[:16], P.NAMED, good + b"{}"),
            {"class": "BadFieldError", "field": "item.item_id", "offset": 0},
            "item_id is not SHA-256('meshsyncd-name:' + name block)[:16]",
        ),
        "bad-item-name-delete-value": (
            "item",
            _bad(good, b"{}", P.Op.DELETE),
            {"class": "BadFieldError", "field": "item.payload", "offset": 69},
            "NAMED DELETE with a value after the name",
        ),
        "bad-item-flags-unknown": (
            "item",
            _raw(P.name_id(good), 0x0004, good),
            {"class": "BadFieldError", "field": "item.flags", "offset": 36},
            "flag bit 2 is not assigned",
        ),
    }
