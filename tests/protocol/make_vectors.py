"""Write the golden vectors into ``protocol/vectors/`` (``make vectors``).

Vectors only ever grow: an existing file is never rewritten, so a change in the encoder can
never quietly move the goalposts; the golden tests compare the encoder with the stored bytes.
Every input here is fixed (no randomness, no clock), so running this twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import based_vectors
import hop_vectors
import link_vectors
import member_vectors
import mesh_vectors
import named_vectors
import zstandard
from vectorlib import (
    VECTORS,
    batch_to_json,
    frame_to_json,
    item_to_json,
    zstd_version,
)

import protocol as P

ORIGIN_A = 0x0123456789ABCDEF
ORIGIN_B = 0xFEDCBA9876543210
TS = 1_790_000_000_123_456_789  # 2026-09-21, a fixed HLC reading


def _id(n: int) -> bytes:
    return hashlib.sha256(b"meshsyncd-vector-%d" % n).digest()[:16]


def _payload(op: P.Op, n: int) -> bytes:
    if op == P.Op.DELETE or op == P.Op.REPLICATE:
        return b""
    if op == P.Op.MERGE:
        return json.dumps({f"field_{n}": n, "note": "merged"}, separators=(",", ":")).encode()
    return json.dumps(
        {"kind": "finding", "n": n, "text": f"agent memory item {n}"}, separators=(",", ":")
    ).encode()


def items() -> dict[str, tuple[P.Item, str]]:
    out: dict[str, tuple[P.Item, str]] = {}
    n = 0
    for op in P.Op:
        for prio in P.Priority:
            tier = P.Tier((op + prio) % 3)
            item = P.Item(
                item_id=_id(n),
                timestamp_ns=TS + n,
                origin=ORIGIN_A if n % 2 else ORIGIN_B,
                tier=tier,
                op=op,
                priority=prio,
                payload=_payload(op, n),
            )
            name = f"item-{op.name.lower()}-{prio.name.lower()}-{tier.name.lower()}"
            out[name] = (item, f"{op.name} at {prio.name} priority in tier {tier.name}")
            n += 1
    raw = json.dumps({"text": "compressible " * 40}).encode()
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)
    out["item-insert-zstd-payload"] = (
        P.Item(
            item_id=_id(100),
            timestamp_ns=TS + 100,
            origin=ORIGIN_A,
            tier=P.Tier.SEMANTIC,
            op=P.Op.INSERT,
            priority=P.Priority.NORMAL,
            flags=P.PAYLOAD_ZSTD,
            payload=cctx.compress(raw),
        ),
        "INSERT whose payload is zstd-compressed on its own (flags bit 0)",
    )
    out["item-replicate-whole-tier"] = (
        P.Item(
            item_id=bytes(16),
            timestamp_ns=TS + 101,
            origin=ORIGIN_B,
            tier=P.Tier.EPISODIC,
            op=P.Op.REPLICATE,
            priority=P.Priority.HIGH,
        ),
        "REPLICATE with the all-zero item_id: send me the whole tier",
    )
    out["item-max-keys"] = (
        P.Item(
            item_id=b"\xff" * 16,
            timestamp_ns=(1 << 64) - 1,
            origin=(1 << 64) - 1,
            tier=P.Tier.SEMANTIC,
            op=P.Op.UPDATE,
            priority=P.Priority.URGENT,
            payload=b"\x00\xff",
        ),
        "largest timestamp and origin; binary payload",
    )
    return out


def _batch_items(tier: P.Tier, count: int, start: int) -> tuple[P.Item, ...]:
    return tuple(
        P.Item(
            item_id=_id(start + i),
            timestamp_ns=TS + start + i,
            origin=ORIGIN_A,
            tier=tier,
            op=P.Op.INSERT,
            priority=P.Priority.NORMAL,
            payload=json.dumps(
                {"kind": "episode", "seq": i, "text": f"the agent observed event {i}"}
            ).encode(),
        )
        for i in range(count)
    )


def batches() -> dict[str, tuple[P.Batch, bool | None, str]]:
    noise = b"".join(hashlib.sha256(b"noise-%d" % i).digest() for i in range(64))
    incompressible = tuple(
        P.Item(
            item_id=_id(300 + i),
            timestamp_ns=TS + 300 + i,
            origin=ORIGIN_B,
            tier=P.Tier.WORKING,
            op=P.Op.UPDATE,
            priority=P.Priority.LOW,
            payload=noise[i * 512 : (i + 1) * 512],
        )
        for i in range(4)
    )
    return {
        "batch-plain-small": (
            P.Batch(
                batch_id=_id(200),
                source=ORIGIN_A,
                target=ORIGIN_B,
                tier=P.Tier.EPISODIC,
                items=_batch_items(P.Tier.EPISODIC, 3, 200),
            ),
            None,
            "three items, body under 1 KiB: sent plain",
        ),
        "batch-zstd": (
            P.Batch(
                batch_id=_id(201),
                source=ORIGIN_A,
                target=ORIGIN_B,
                tier=P.Tier.SEMANTIC,
                items=_batch_items(P.Tier.SEMANTIC, 40, 400),
            ),
            None,
            "forty items, body over 1 KiB: zstd-compressed body",
        ),
        "batch-empty": (
            P.Batch(batch_id=_id(202), source=ORIGIN_B, target=0, tier=P.Tier.WORKING, items=()),
            None,
            "no items (an empty pull answer); target 0 means any",
        ),
        "batch-plain-incompressible": (
            P.Batch(
                batch_id=_id(203),
                source=ORIGIN_B,
                target=ORIGIN_A,
                tier=P.Tier.WORKING,
                items=incompressible,
            ),
            None,
            "body over 1 KiB that zstd does not shrink: sent plain",
        ),
    }


def frames() -> dict[str, tuple[P.Frame, str]]:
    small = P.pack_batch(batches()["batch-plain-small"][0])
    return {
        "frame-hello": (
            P.Hello(
                version=1,
                node_id=hashlib.sha256(b"node-a public key").digest(),
                incarnation=_id(500),
                capabilities=int(P.Capability.ZSTD | P.Capability.MERGE | P.Capability.PUSH),
                timestamp_ns=TS,
            ),
            "HELLO: protocol 1, node id, incarnation, capabilities, clock",
        ),
        "frame-pull": (
            P.Pull(
                request_id=7, tier=P.Tier.EPISODIC, after_seq=41, max_items=1000, max_bytes=262144
            ),
            "PULL: tier EPISODIC changes after sequence 41",
        ),
        "frame-batch": (
            P.BatchFrame(request_id=7, from_seq=41, to_seq=44, more=False, batch=small),
            "BATCH answering request 7 with sequences (41, 44], last chunk",
        ),
        "frame-ack": (P.Ack(request_id=7, tier=P.Tier.EPISODIC, seq=44), "ACK through 44"),
        "frame-push": (P.Push(batch=small), "PUSH of a live batch"),
        "frame-replicate": (
            P.Replicate(request_id=8, tier=P.Tier.SEMANTIC, item_id=_id(3)),
            "REPLICATE one item",
        ),
        "frame-ping": (P.Ping(nonce=0xDEADBEEF, timestamp_ns=TS), "PING"),
        "frame-pong": (P.Pong(nonce=0xDEADBEEF, echo_ns=TS, timestamp_ns=TS + 1500), "PONG"),
        "frame-error": (
            P.Error(code=P.ErrorCode.CLOCK_SKEW, text="clock 3.6 s ahead of ours (limit 500 ms)"),
            "ERROR CLOCK_SKEW with text",
        ),
        "frame-bye": (P.Bye(code=P.ByeCode.SHUTDOWN, text="shutting down"), "BYE SHUTDOWN"),
        "frame-digest": (
            P.Digest(tier=P.Tier.WORKING, seq=99, digest=hashlib.sha256(b"state").digest()),
            "DIGEST of tier WORKING at sequence 99",
        ),
        **mesh_vectors.mesh_frames(),
    }


def bad_vectors() -> dict[str, tuple[str, bytes, dict[str, Any], str]]:
    """Inputs every decoder must refuse, with the error class, field and offset."""
    base = P.pack_item(
        P.Item(
            item_id=_id(900),
            timestamp_ns=TS,
            origin=ORIGIN_A,
            tier=P.Tier.EPISODIC,
            op=P.Op.INSERT,
            payload=b'{"a":1}',
        )
    )

    def patch(buf: bytes, off: int, value: bytes) -> bytes:
        return buf[:off] + value + buf[off + len(value) :]

    bomb_raw = bytes(P.MAX_PAYLOAD + 1)
    bomb = zstandard.ZstdCompressor(level=19).compress(bomb_raw)
    small = P.pack_batch(batches()["batch-plain-small"][0])
    return {
        "bad-item-tier": (
            "item",
            patch(base, 33, b"\x07"),
            {"class": "BadFieldError", "field": "item.tier", "offset": 33},
            "tier 7 does not exist",
        ),
        "bad-item-version": (
            "item",
            patch(base, 32, b"\x01"),
            {"class": "BadFieldError", "field": "item.version", "offset": 32},
            "header version 1",
        ),
        "bad-item-crc": (
            "item",
            patch(base, 48, b"["),
            {"class": "ChecksumError", "field": "item.crc32", "offset": 44},
            "payload byte changed after the CRC was computed",
        ),
        "bad-item-oversized": (
            "item",
            patch(base, 40, (P.MAX_PAYLOAD + 1).to_bytes(4, "big")),
            {"class": "LimitError", "field": "item.payload_len", "offset": 40},
            "payload_len one over 1 MiB",
        ),
        "bad-item-truncated": (
            "item",
            base[:-1],
            {"class": "TruncatedError", "field": "item.payload", "offset": 48},
            "one payload byte missing",
        ),
        "bad-item-zstd-bomb": (
            "item",
            _item_raw(P.Op.INSERT, P.PAYLOAD_ZSTD, bomb),
            {"class": "LimitError", "field": "item.payload", "offset": 48},
            "compressed payload declaring 1 MiB + 1 inflated bytes",
        ),
        "bad-item-zstd-skippable": (
            "item",
            _item_raw(P.Op.INSERT, P.PAYLOAD_ZSTD, bytes.fromhex("502a4d1800000000")),
            {"class": "CompressionError", "field": "item.payload", "offset": 48},
            "a zstd skippable frame is not a compressed payload (it would be a second empty form)",
        ),
        "bad-batch-magic": (
            "batch",
            patch(small, 0, b"MSBX"),
            {"class": "BadMagicError", "field": "batch.magic", "offset": 0},
            "wrong magic",
        ),
        "bad-batch-raw-len": (
            "batch",
            patch(small, 44, (P.MAX_BATCH_RAW + 1).to_bytes(4, "big")),
            {"class": "LimitError", "field": "batch.raw_len", "offset": 44},
            "declared raw length over 16 MiB, refused before reading the body",
        ),
        "bad-frame-length": (
            "frame",
            (P.MAX_FRAME + 1).to_bytes(4, "big") + b"\x07",
            {"class": "LimitError", "field": "frame.length", "offset": 0},
            "frame length one over the maximum",
        ),
        "bad-frame-hello-magic": (
            "frame",
            patch(P.encode_frame(frames()["frame-hello"][0]), 5, b"HTTP"),
            {"class": "BadMagicError", "field": "hello.magic", "offset": 5},
            "not a meshsyncd peer",
        ),
        **mesh_vectors.bad_mesh_vectors(patch),
        **member_vectors.bad_member_vectors(patch),
    }


def _item_raw(op: P.Op, flags: int, payload: bytes) -> bytes:
    """Pack an item bypassing the constructor's checks (to build invalid vectors)."""
    import struct
    import zlib

    head = struct.pack(">16sQQBBBBHHI", _id(901), TS, ORIGIN_A, 2, 1, op, 2, flags, 0, len(payload))
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _write(name: str, data: bytes, desc: dict[str, Any]) -> bool:
    bin_path = VECTORS / f"{name}.bin"
    if bin_path.exists():
        return False
    bin_path.write_bytes(data)
    (VECTORS / f"{name}.json").write_text(json.dumps(desc, indent=2, sort_keys=True) + "\n")
    return True


def main() -> int:
    VECTORS.mkdir(parents=True, exist_ok=True)
    added = 0
    for name, (item, text) in (items() | named_vectors.items() | based_vectors.items()).items():
        added += _write(
            name,
            P.pack_item(item),
            {"kind": "item", "description": text, "item": item_to_json(item)},
        )
    for name, (batch, compress, text) in (
        batches() | named_vectors.batches() | based_vectors.batches()
    ).items():
        data = P.pack_batch(batch, compress=compress)
        zstd = bool(data[7] & 1)
        added += _write(
            name,
            data,
            {
                "kind": "batch",
                "description": text,
                "zstd_version": zstd_version(),
                "batch": batch_to_json(batch, body_zstd=zstd),
            },
        )
    stream = b""
    for name, (frame, text) in frames().items():
        data = P.encode_frame(frame)
        if name not in ("frame-error", "frame-bye"):
            stream += data
        added += _write(
            name, data, {"kind": "frame", "description": text, "frame": frame_to_json(frame)}
        )
    for name, (frame, text) in member_vectors.member_frames().items():
        added += _write(
            name,
            P.encode_frame(frame),
            {"kind": "frame", "description": text, "frame": frame_to_json(frame)},
        )
    stream += P.encode_frame(frames()["frame-bye"][0])
    order = [n for n in frames() if n not in ("frame-error", "frame-bye")] + ["frame-bye"]
    added += _write(
        "stream-session",
        stream,
        {
            "kind": "stream",
            "description": "a whole session one way: HELLO, every data frame, then BYE",
            "frames": [frame_to_json(frames()[n][0]) for n in order],
        },
    )
    for name, (frame, text) in (
        named_vectors.frames()
        | based_vectors.frames()
        | hop_vectors.frames()
        | link_vectors.frames()
    ).items():
        added += _write(
            name,
            P.encode_frame(frame),
            {"kind": "frame", "description": text, "frame": frame_to_json(frame)},
        )
    bad = bad_vectors() | named_vectors.bad_vectors() | based_vectors.bad_vectors()
    bad |= hop_vectors.bad_vectors() | link_vectors.bad_vectors()
    for name, (kind, data, error, text) in bad.items():
        added += _write(name, data, {"kind": kind, "description": text, "expect_error": error})
    print(f"{added} vectors added to {VECTORS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
