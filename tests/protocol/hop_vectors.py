"""Golden vectors of protocol 5: HOP_PUSH (SPEC.md section 4.4), good and bad.

Kept apart from ``make_vectors.py`` (which calls these), like ``based_vectors.py``: fixed
inputs only, and vectors are only ever added.
"""

from __future__ import annotations

import hashlib
from typing import Any

import protocol as P

ORIGIN_A = 0x0123456789ABCDEF
ORIGIN_B = 0xFEDCBA9876543210
TS = 1_790_000_000_123_456_789


def _urgent_batch() -> bytes:
    items = tuple(
        P.Item(
            item_id=hashlib.sha256(b"meshsyncd-vector-hop-%d" % n).digest()[:16],
            timestamp_ns=TS + n,
            origin=ORIGIN_A,
            tier=P.Tier.WORKING,
            op=P.Op.INSERT,
            priority=P.Priority.URGENT,
            payload=b'{"urgent":%d}' % n,
        )
        for n in range(2)
    )
    batch = P.Batch(
        batch_id=hashlib.sha256(b"meshsyncd-hop-batch").digest()[:16],
        source=ORIGIN_B,
        target=ORIGIN_A,
        tier=P.Tier.WORKING,
        items=items,
    )
    return P.pack_batch(batch, compress=False)


def frames() -> dict[str, tuple[P.Frame, str]]:
    return {
        "frame-hello-v5": (
            P.Hello(
                version=5,
                node_id=hashlib.sha256(b"meshsyncd-node-a").digest(),
                incarnation=hashlib.sha256(b"meshsyncd-incarnation-a").digest()[:16],
                capabilities=0x7F,
                timestamp_ns=TS,
            ),
            "HELLO of protocol 5 (HOP_PUSH); older versions are refused by the daemon",
        ),
        "frame-hop-push": (
            P.HopPush(hops=3, batch=_urgent_batch()),
            "HOP_PUSH: two URGENT versions that crossed 3 sessions before this one",
        ),
        "frame-hop-push-origin": (
            P.HopPush(hops=0, batch=_urgent_batch()),
            "HOP_PUSH from the writer itself (hops 0)",
        ),
    }


def bad_vectors() -> dict[str, tuple[str, bytes, dict[str, Any], str]]:
    good = P.encode_frame(frames()["frame-hop-push"][0])
    empty = (1).to_bytes(4, "big") + bytes((P.HopPush.TYPE,))
    trailing = (int.from_bytes(good[:4], "big") + 2).to_bytes(4, "big") + good[4:] + b"\x00\x00"
    return {
        "bad-frame-hop-push-empty": (
            "frame",
            empty,
            {"class": "BadFieldError", "field": "hop_push", "offset": 5},
            "HOP_PUSH without its hop count",
        ),
        "bad-frame-hop-push-trailing": (
            "frame",
            trailing,
            {"class": "BadFieldError", "field": "hop_push.batch", "offset": len(good)},
            "HOP_PUSH with two bytes after its batch",
        ),
        "bad-frame-hop-push-magic": (
            "frame",
            good[:6] + b"XXXX" + good[10:],
            {"class": "BadMagicError", "field": "hop_push.batch.magic", "offset": 6},
            "HOP_PUSH whose batch does not start with MSBT",
        ),
    }
