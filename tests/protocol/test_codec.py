"""Items and batches: construction rules, every rejection path, and hypothesis round trips."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol as P

ID = bytes(range(16))


def _item(**kw: object) -> P.Item:
    fields: dict[str, object] = {
        "item_id": ID,
        "timestamp_ns": 10,
        "origin": 3,
        "tier": P.Tier.EPISODIC,
        "op": P.Op.INSERT,
        "payload": b'{"x":1}',
    }
    fields.update(kw)
    return P.Item(**fields)  # type: ignore[arg-type]


def _raw_item(op: int = 1, flags: int = 0, payload: bytes = b"", tier: int = 1) -> bytes:
    head = struct.pack(">16sQQBBBBHHI", ID, 1, 2, 2, tier, op, 2, flags, 0, len(payload))
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


items_st = st.builds(
    lambda iid, ts, origin, tier, op, prio, body: P.Item(
        item_id=iid,
        timestamp_ns=ts,
        origin=origin,
        tier=tier,
        op=op,
        priority=prio,
        payload=b""
        if op == P.Op.DELETE
        else (json.dumps({"k": body.hex()}).encode() if op == P.Op.MERGE else body),
    ),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.sampled_from(P.Tier),
    st.sampled_from(P.Op),
    st.sampled_from(P.Priority),
    st.binary(max_size=300),
)


@given(items_st)
def test_item_round_trip(item: P.Item) -> None:
    data = P.pack_item(item)
    assert len(data) == 48 + len(item.payload)
    assert P.unpack_item(data) == (item, len(data))


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_item_decoder(data: bytes) -> None:
    try:
        item, end = P.unpack_item(data)
    except P.ProtocolError:
        return
    assert P.pack_item(item) == data[:end]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"item_id": b"short"}, "item.item_id"),
        ({"timestamp_ns": -1}, "item.timestamp_ns"),
        ({"origin": 2**64}, "item.origin"),
        ({"tier": 3}, "item.tier/op/priority"),
        ({"op": 0}, "item.tier/op/priority"),
        ({"flags": 4}, "item.flags"),
        ({"flags": P.NAMED}, "item.name.depth"),
        ({"payload": bytes(P.MAX_PAYLOAD + 1)}, "item.payload"),
        ({"op": P.Op.DELETE, "payload": b"x"}, "item.payload"),
        ({"op": P.Op.MERGE, "payload": b"[1]"}, "item.payload"),
        ({"op": P.Op.MERGE, "payload": b"\xff"}, "item.payload"),
        ({"flags": P.PAYLOAD_ZSTD, "payload": b"not zstd"}, "item.payload"),
    ],
)
def test_item_constructor_refuses(fields: dict[str, object], field: str) -> None:
    with pytest.raises(P.LocalProtocolError) as info:
        _item(**fields)
    assert info.value.field == field


def test_item_key_and_value() -> None:
    raw = json.dumps({"t": "y" * 2000}).encode()
    item = _item(flags=P.PAYLOAD_ZSTD, payload=zstandard.ZstdCompressor().compress(raw))
    assert item.key == (10, 3)
    assert item.value() == raw
    assert item.item_id_hex == ID.hex()
    assert P.unpack_item(P.pack_item(item))[0].payload == item.payload  # stays compressed


@pytest.mark.parametrize(
    ("data", "cls", "field", "offset"),
    [
        (_raw_item(op=3, payload=b"x"), P.BadFieldError, "item.payload", 48),
        (_raw_item(op=4, payload=b'"str"'), P.BadFieldError, "item.payload", 48),
        (_raw_item(op=4, payload=b"{bad"), P.BadFieldError, "item.payload", 48),
        (_raw_item(op=0), P.BadFieldError, "item.op", 34),
        (_raw_item(op=1, flags=4), P.BadFieldError, "item.flags", 36),
        (_raw_item(flags=1, payload=b"\x28\xb5\x2f\xfd"), P.CompressionError, "item.payload", 48),
        (
            _raw_item(flags=1, payload=zstandard.ZstdCompressor().compress(b"a") + b"!"),
            P.CompressionError,
            "item.payload",
            48,
        ),
        (
            _raw_item(
                flags=1,
                payload=zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 99),
            ),
            P.CompressionError,
            "item.payload",
            48,
        ),
    ],
)
def test_item_decoder_names_field_and_offset(
    data: bytes, cls: type[P.ProtocolError], field: str, offset: int
) -> None:
    with pytest.raises(cls) as info:
        P.unpack_item(data)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert f"{field} at offset {offset}" in str(info.value)


def test_reserved_must_be_zero() -> None:
    data = bytearray(_raw_item(payload=b"x"))
    data[39] = 1
    with pytest.raises(P.BadFieldError, match=r"item.reserved at offset 38"):
        P.unpack_item(bytes(data))


def test_compressed_payload_bomb_is_refused_before_inflating() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(64 << 20))
    data = _raw_item(flags=1, payload=bomb)
    tracemalloc.start()
    try:
        with pytest.raises(P.LimitError):
            P.unpack_item(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _batch(n: int, tier: P.Tier = P.Tier.SEMANTIC, size: int = 200) -> P.Batch:
    items = tuple(
        _item(
            item_id=i.to_bytes(16, "big"),
            timestamp_ns=i,
            tier=tier,
            payload=json.dumps({"i": i, "text": "memory " * (size // 7)}).encode(),
        )
        for i in range(n)
    )
    return P.Batch(batch_id=bytes(16), source=1, target=2, tier=tier, items=items)


def test_batch_compression_rule() -> None:
    small = P.pack_batch(_batch(2, size=50))
    assert small[7] & 1 == 0  # under 1 KiB: plain
    big = P.pack_batch(_batch(50))
    assert big[7] & 1 == 1  # over 1 KiB and it pays: zstd
    assert P.unpack_batch(big)[0] == _batch(50)
    forced = P.pack_batch(_batch(50), compress=False)
    assert forced[7] & 1 == 0 and P.unpack_batch(forced)[0] == _batch(50)


def test_batch_refuses_items_of_another_tier() -> None:
    with pytest.raises(P.LocalProtocolError, match="tier"):
        P.Batch(batch_id=bytes(16), source=1, tier=P.Tier.WORKING, items=_batch(1).items)
    data = bytearray(P.pack_batch(_batch(3), compress=False))
    data[5] = 0  # header says WORKING, items say SEMANTIC; fix the CRC so only that differs
    struct.pack_into(">I", data, 52, zlib.crc32(bytes(data[56:]), zlib.crc32(bytes(data[:52]))))
    with pytest.raises(P.BadFieldError) as info:
        P.unpack_batch(bytes(data))
    assert info.value.field == "batch.items[0].tier"


def _set_header(data: bytes, fmt: str, off: int, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, off, value)
    return bytes(buf)


@pytest.mark.parametrize(
    ("fmt", "off", "value", "cls", "field"),
    [
        (">I", 40, P.MAX_BATCH_ITEMS + 1, P.LimitError, "batch.item_count"),
        (">I", 44, P.MAX_BATCH_RAW + 1, P.LimitError, "batch.raw_len"),
        (">I", 40, 10_000, P.BadFieldError, "batch.item_count"),
        (">B", 4, 2, P.VersionError, "batch.batch_version"),
        (">H", 6, 2, P.BadFieldError, "batch.flags"),
        (">I", 48, 5, P.BadFieldError, "batch.body_len"),
        (">H", 6, 1, P.ChecksumError, "batch.crc32"),
        (">I", 52, 0, P.ChecksumError, "batch.crc32"),
    ],
)
def test_batch_header_rejections(
    fmt: str, off: int, value: int, cls: type[P.ProtocolError], field: str
) -> None:
    data = _set_header(P.pack_batch(_batch(3), compress=False), fmt, off, value)
    with pytest.raises(cls) as info:
        P.unpack_batch(data)
    assert info.value.field == field


def test_batch_decompression_bomb_costs_nothing() -> None:
    """A body declaring 16 MiB raw but inflating further is refused before inflating."""
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(512 << 20))
    head = struct.pack(">4sBBH16sQQIII", b"MSBT", 1, 0, 1, bytes(16), 1, 0, 1, 1 << 20, len(bomb))
    data = head + struct.pack(">I", zlib.crc32(bomb, zlib.crc32(head))) + bomb
    tracemalloc.start()
    try:
        with pytest.raises(P.LimitError, match="declares"):
            P.unpack_batch(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_batch_body_with_leftover_bytes_is_refused() -> None:
    raw = P.pack_items(_batch(2).items) + b"junk"
    head = struct.pack(">4sBBH16sQQIII", b"MSBT", 1, 2, 0, bytes(16), 1, 0, 2, len(raw), len(raw))
    data = head + struct.pack(">I", zlib.crc32(raw, zlib.crc32(head))) + raw
    with pytest.raises(P.BadFieldError, match="after the last of 2 items"):
        P.unpack_batch(data)


@settings(max_examples=50, deadline=None)
@given(st.lists(items_st, max_size=20), st.sampled_from(P.Tier), st.booleans())
def test_batch_round_trip(items: list[P.Item], tier: P.Tier, compress: bool) -> None:
    fixed = tuple(i._replace(tier=tier) for i in items)
    batch = P.Batch(batch_id=bytes(16), source=5, target=6, tier=tier, items=fixed)
    data = P.pack_batch(batch, compress=compress)
    got, end = P.unpack_batch(data)
    assert got == batch and end == len(data) and got.body_zstd == compress
