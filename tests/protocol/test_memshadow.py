"""MEMSHADOW v2 batches (SPEC.md section 8): golden vectors made by the reference, strictness,
round trips, and what the reference's reader makes of what we write."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memshadow_refimpl import ref_unpack
from vectorlib import VECTORS

import protocol as P
from protocol import memshadow as MS

REFERENCE_COMMIT = "63e1ccce0bdcb542316f9b7efb52a9b85fcc8b0b"


def _load() -> list[tuple[str, bytes, dict[str, Any]]]:
    out = []
    for path in sorted(VECTORS.glob("memshadow-*.json")):
        out.append((path.stem, path.with_suffix(".bin").read_bytes(), json.loads(path.read_text())))
    return out


ALL = _load()
GOOD = [v for v in ALL if "expect_error" not in v[2]]
BAD = [v for v in ALL if "expect_error" in v[2]]


def _ids(vs: list[tuple[str, bytes, dict[str, Any]]]) -> list[str]:
    return [v[0] for v in vs]


def _view(batch: MS.MemshadowBatch) -> dict[str, Any]:
    """Our batch in the shape of a vector's ``reference_unpack``."""
    return {
        "batch_id": batch.batch_id,
        "source_node": batch.source_node,
        "target_node": batch.target_node,
        "tier": int(batch.tier),
        "flags": batch.flags | (1 if batch.items_gzip else 0),
        "sync_vector": dict(batch.sync_vector),
        "items": [
            {
                "item_id": i.item_id_text,
                "timestamp_ns": i.timestamp_ns,
                "tier": int(i.tier),
                "op": int(i.op),
                "priority": int(i.priority),
                "payload_hex": i.payload.hex(),
            }
            for i in batch.items
        ],
    }


def test_vectors_cover_the_format() -> None:
    assert len(GOOD) >= 7 and len(BAD) >= 10
    for _, _, desc in ALL:
        assert desc["reference"]["commit"] == REFERENCE_COMMIT
    batches = [MS.parse_memshadow(data) for _, data, _ in GOOD]
    assert {b.items_gzip for b in batches} == {True, False}
    assert {b.fallback for b in batches} == {True, False}
    items = [i for b in batches for i in b.items]
    assert {i.op for i in items} == set(P.Op)
    assert {i.priority for i in items} == set(P.Priority)
    assert {i.tier for i in items} == set(MS.MsTier)
    assert REFERENCE_COMMIT in (VECTORS.parent / "SPEC.md").read_text()


@pytest.mark.parametrize(("name", "data", "desc"), GOOD, ids=_ids(GOOD))
def test_reference_vector_decodes_as_the_reference_reads_it(
    name: str, data: bytes, desc: dict[str, Any]
) -> None:
    batch = MS.parse_memshadow(data)
    assert _view(batch) == desc["reference_unpack"]
    # whole, with trailing data (unpack stops at the declared end), at an offset
    assert MS.unpack_memshadow(data + b"\x00junk") == (batch, len(data))
    assert MS.unpack_memshadow(b"xyz" + data, 3) == (batch, 3 + len(data))
    for cut in range(0, len(data), max(1, len(data) // 200)):
        with pytest.raises(P.TruncatedError):
            MS.unpack_memshadow(data[:cut])
    if not batch.items_gzip:  # plain: byte for byte, metadata JSON spelled as the reference does
        assert MS.pack_memshadow(batch) == data
    else:  # gzip: the reference stamps the time into the member; the content is the same
        again = MS.pack_memshadow(batch)
        assert MS.parse_memshadow(again) == batch
        lay, ours = MS.layout_memshadow(data), MS.layout_memshadow(again)
        assert lay.metadata == ours.metadata
        assert gzip.decompress(data[lay.items_offset :]) == gzip.decompress(
            again[ours.items_offset :]
        )


def test_header_count_wraps_and_fallback_header() -> None:
    data = (VECTORS / "memshadow-300-items.bin").read_bytes()
    assert data[14] == 300 % 256
    assert len(MS.parse_memshadow(data).items) == 300
    fallback = (VECTORS / "memshadow-fallback-header.bin").read_bytes()
    assert fallback[:4] == b"MSYN"
    assert MS.parse_memshadow(fallback).fallback


@pytest.mark.parametrize(("name", "data", "desc"), BAD, ids=_ids(BAD))
def test_bad_vector(name: str, data: bytes, desc: dict[str, Any]) -> None:
    expect = desc["expect_error"]
    with pytest.raises(P.RemoteProtocolError) as info:
        MS.parse_memshadow(data)
    err = info.value
    assert (type(err).__name__, err.field, err.offset) == (
        expect["class"],
        expect["field"],
        expect["offset"],
    ), str(err)
    assert f"{expect['field']} at offset {expect['offset']}" in str(err)


@pytest.mark.parametrize(("name", "data", "desc"), ALL, ids=_ids(ALL))
def test_refimpl_agrees_with_the_real_reference(
    name: str, data: bytes, desc: dict[str, Any]
) -> None:
    """The test re-implementation reads every vector as the real reference did."""
    want = desc["reference_unpack"]
    try:
        got = ref_unpack(data)
    except Exception as exc:
        assert "raises" in want, f"refimpl raised {exc!r}, the reference read {want}"
        assert want["raises"].startswith(type(exc).__name__)
    else:
        assert "raises" not in want, f"refimpl read {got}, the reference raised {want}"
        assert got == want


# -- hand-made malformed inputs ---------------------------------------------------------------


def _meta(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "batch_id": "b",
        "source_node": "s",
        "target_node": "t",
        "tier": 2,
        "item_count": 0,
        "flags": 0,
        "sync_vector": {},
    }
    doc.update(over)
    return doc


def _raw(meta: bytes | dict[str, Any], items: bytes = b"", count: int | None = None) -> bytes:
    m = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    payload = struct.pack(">I", len(m)) + m + items
    n = (json.loads(m).get("item_count", 0) if count is None else count) if m[:1] == b"{" else 0
    head = struct.pack(">QHHHHQQ", MS.MAGIC, 2, 1, MS.MEMORY_SYNC, (n & 0xFF) << 8, len(payload), 7)
    return head + payload


def _item(
    tier: int = 2, op: int = 1, prio: int = 2, payload: bytes = b"{}", pad: bytes = b""
) -> bytes:
    head = struct.pack(">32sQBBHH", b"id", 5, tier, op, prio, len(payload))
    return head + (pad or b"\x00\x00") + payload


@pytest.mark.parametrize(
    ("data", "cls", "field"),
    [
        (b"", P.TruncatedError, "memshadow.header"),
        (b"\x00\x00\x00\x00MSH", P.TruncatedError, "memshadow.header"),
        (b"HTTP/1.1 200 OK\r\n", P.BadMagicError, "memshadow.magic"),
        (_raw(b"[1]"), P.BadFieldError, "memshadow.metadata"),
        (_raw(b"\xff"), P.BadFieldError, "memshadow.metadata"),
        (_raw(b'{"a": 1, "a": 2}'), P.BadFieldError, "memshadow.metadata"),
        (
            _raw(json.dumps(_meta()).replace("{}", '{"n": NaN}').encode()),
            P.BadFieldError,
            "memshadow.metadata",
        ),
        (_raw(_meta(extra=1)), P.BadFieldError, "memshadow.metadata"),
        (
            _raw({k: v for k, v in _meta().items() if k != "flags"}),
            P.BadFieldError,
            "memshadow.metadata",
        ),
        (_raw(_meta(tier=0)), P.BadFieldError, "memshadow.metadata.tier"),
        (_raw(_meta(tier=True)), P.BadFieldError, "memshadow.metadata.tier"),
        (_raw(_meta(batch_id=7)), P.BadFieldError, "memshadow.metadata.batch_id"),
        (_raw(_meta(flags=2)), P.BadFieldError, "memshadow.metadata.flags"),
        (_raw(_meta(flags=0x40)), P.BadFieldError, "memshadow.metadata.flags"),
        (_raw(_meta(sync_vector={"n": -1})), P.BadFieldError, "memshadow.metadata.sync_vector"),
        (_raw(_meta(item_count=70_000)), P.LimitError, "memshadow.metadata.item_count"),
        (_raw(_meta(item_count=2), _item()), P.BadFieldError, "memshadow.metadata.item_count"),
        (
            _raw(_meta(item_count=1), _item()[:-1]),
            P.TruncatedError,
            "memshadow.items[0].payload",
        ),
        (
            _raw(_meta(item_count=1), _item(pad=b"\x00\x01")),
            P.BadFieldError,
            "memshadow.items[0].padding",
        ),
        (_raw(_meta(item_count=1), _item(tier=3)), P.BadFieldError, "memshadow.items[0].tier"),
        (_raw(_meta(item_count=1, flags=1), _item()), P.CompressionError, "memshadow.items"),
        (
            _raw(_meta(item_count=1, flags=1), gzip.compress(_item())[:-3]),
            P.CompressionError,
            "memshadow.items",
        ),
        (
            _raw(_meta(item_count=1, flags=1), gzip.compress(_item()) + gzip.compress(b"")),
            P.CompressionError,
            "memshadow.items",
        ),
        (
            _raw(_meta(item_count=1, flags=1), gzip.compress(_item(tier=0))),
            P.BadFieldError,
            "memshadow.inflated_items[0].tier",
        ),
    ],
)
def test_malformed_input(data: bytes, cls: type[P.ProtocolError], field: str) -> None:
    with pytest.raises(cls) as info:
        MS.parse_memshadow(data)
    assert info.value.field == field, str(info.value)


def test_cross_tier_flag_allows_other_tiers() -> None:
    batch = MS.parse_memshadow(_raw(_meta(item_count=1, flags=0x20), _item(tier=3)))
    assert batch.items[0].tier == MS.MsTier.SEMANTIC and batch.flags == 0x20


def test_metadata_limit_checked_before_reading() -> None:
    head = struct.pack(">QHHHHQQ", MS.MAGIC, 2, 1, MS.MEMORY_SYNC, 0, 8, 0)
    with pytest.raises(P.LimitError) as info:
        MS.parse_memshadow(head + struct.pack(">I", MS.MAX_METADATA + 1) + b"{}\x00\x00")
    assert (info.value.field, info.value.offset) == ("memshadow.metadata_len", 32)


def test_constructors_refuse_what_cannot_be_encoded() -> None:
    ok = {"timestamp_ns": 1, "tier": 1, "op": 1}
    for bad in (
        {"item_id": b"x" * 33},
        {"item_id": b"ab\x00"},
        {"item_id": b"a", "payload": bytes(65_536)},
        {"item_id": b"a", "tier": 0},
        {"item_id": b"a", "op": 6},
        {"item_id": b"a", "timestamp_ns": -1},
    ):
        with pytest.raises(P.LocalProtocolError):
            MS.MemshadowItem(**{**ok, **bad})
    item = MS.MemshadowItem(item_id=b"a", timestamp_ns=1, tier=1, op=1)
    base = {"batch_id": "b", "source_node": "s", "target_node": "t", "tier": 1}
    for bad_batch in (
        {"items": (item,), "tier": 2},
        {"items": (), "flags": 0x02},
        {"items": (), "flags": 0x01},
        {"items": (), "fallback": True, "timestamp_ns": 5},
        {"items": (), "sync_vector": (("a", 1), ("a", 2))},
    ):
        with pytest.raises(P.LocalProtocolError):
            MS.MemshadowBatch(**{**base, **bad_batch})


# -- id and origin mapping (SPEC.md 8.4) ------------------------------------------------------


def test_id_mapping_rule() -> None:
    hex_id = "00112233445566778899aabbccddeeff"
    assert MS.import_item_id(hex_id.encode()) == bytes.fromhex(hex_id)
    upper = hex_id.upper().encode()
    assert MS.import_item_id(upper) != bytes.fromhex(hex_id)
    import hashlib

    assert MS.import_item_id(b"note-42") == hashlib.sha256(b"memshadow-id:note-42").digest()[:16]
    assert len({MS.import_item_id(x) for x in (b"a", b"b", b"A", upper)}) == 4
    assert MS.import_origin("node-a") == MS.import_origin("node-a") != MS.import_origin("node-b")


# -- round trips ----------------------------------------------------------------------------

_items = st.builds(
    MS.MemshadowItem,
    item_id=st.binary(max_size=32).map(lambda b: b.rstrip(b"\x00")),
    timestamp_ns=st.integers(0, (1 << 64) - 1),
    tier=st.just(MS.MsTier.EPISODIC),
    op=st.sampled_from(P.Op),
    priority=st.sampled_from(P.Priority),
    payload=st.binary(max_size=300),
)
_batches = st.builds(
    MS.MemshadowBatch,
    batch_id=st.text(max_size=20),
    source_node=st.text(max_size=20),
    target_node=st.text(max_size=20),
    tier=st.just(MS.MsTier.EPISODIC),
    items=st.lists(_items, max_size=12).map(tuple),
    flags=st.sampled_from([0, 0x04, 0x0C, 0x3C]),
    sync_vector=st.dictionaries(st.text(max_size=8), st.integers(0, (1 << 64) - 1), max_size=3).map(
        lambda d: tuple(d.items())
    ),
    priority=st.sampled_from(MS.HeaderPriority),
    timestamp_ns=st.integers(0, (1 << 64) - 1),
    header_flags=st.integers(0, 255),
)


@settings(max_examples=150, deadline=None)
@given(batch=_batches, compress=st.sampled_from([None, True, False]))
def test_round_trip(batch: MS.MemshadowBatch, compress: bool | None) -> None:
    data = MS.pack_memshadow(batch, compress=compress)
    back = MS.parse_memshadow(data)
    assert back == batch
    assert back.items_gzip == (
        len(b"".join(i.pack() for i in batch.items)) > 1024 if compress is None else compress
    )
    if not back.items_gzip:
        assert MS.pack_memshadow(back, compress=False) == data
    # what a MEMSHADOW node reads: the same items (the reference reads ids as UTF-8 text)
    seen = ref_unpack(data)
    assert seen["items"] == _view(batch)["items"]
    assert seen["batch_id"] == batch.batch_id and seen["tier"] == batch.tier


@settings(max_examples=40, deadline=None)
@given(batch=_batches)
def test_fallback_round_trip(batch: MS.MemshadowBatch) -> None:
    import dataclasses

    plain = dataclasses.replace(batch, fallback=True, priority=1, timestamp_ns=0, header_flags=0)
    data = MS.pack_memshadow(plain)
    assert data[:4] == b"MSYN"
    assert MS.parse_memshadow(data) == plain
    assert ref_unpack(data, protocol_available=False)["items"] == _view(plain)["items"]


@settings(max_examples=300, deadline=None)
@given(batch=_batches, flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255)), max_size=4))
def test_mutations_give_a_batch_or_a_protocol_error(
    batch: MS.MemshadowBatch, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(MS.pack_memshadow(batch))
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        got = MS.parse_memshadow(bytes(data))
    except P.RemoteProtocolError as exc:
        assert exc.field.startswith("memshadow")
    else:
        assert MS.parse_memshadow(MS.pack_memshadow(got)) == got


def test_spec_documents_every_limit() -> None:
    spec = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()
    assert "## 8. MEMSHADOW v2 interop" in spec
    for fact in (
        "0x4D534857",
        "0x4D53594E",
        "0x0304",
        "`!32sQBBHH`",
        "memshadow-id:",
        "memshadow-origin:",
    ):
        assert fact in spec
