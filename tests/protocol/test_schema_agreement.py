"""The construct schema and the struct hot path agree (issue 2, SPEC.md sections 2-4).

For valid input both parse to the same field values; for mutated input (byte flips,
truncation, appended bytes) and for random bytes both reject with the same error class,
field and offset, or both accept with the same values. The header rules are construct's own
(``_Rule``/``_Check`` in ``protocol/schemakit.py``); the item payload rules reuse payload.py's
check from within the schema, and a batch's CRC, inflation and items run in
``schema.finish_batch``. Anything but a ``ProtocolError`` out of either side fails a test.
The valid inputs and their mutations are drawn from ``wire_strategies.py``.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path
from typing import Any

import construct
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_strategies import TIERS, batches, frames, items, mutated

import protocol
from protocol import schema
from protocol.constants import BODY_ZSTD

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(parse: Any, data: bytes) -> tuple[Any, ...]:
    """``("ok", fields)`` or ``("error", class, field, offset)``; other exceptions escape."""
    try:
        return ("ok", parse(data))
    except protocol.ProtocolError as exc:
        return ("error", type(exc), exc.field, exc.offset)


# --- normalisers: both sides to plain dicts ---------------------------------------------

ITEM_KEYS = ("item_id", "timestamp_ns", "origin", "tier", "op", "priority", "flags", "payload")


def _item_struct(item: protocol.Item) -> dict[str, Any]:
    return {key: getattr(item, key) for key in ITEM_KEYS}


def _item_schema(fields: Any) -> dict[str, Any]:
    assert fields.version == 2
    assert fields.reserved == 0
    assert fields.payload_len == len(fields.payload)
    return {key: fields[key] for key in ITEM_KEYS}


def _batch_struct(data: bytes) -> dict[str, Any]:
    batch, end = protocol.unpack_batch(data)
    return {
        "batch_id": batch.batch_id,
        "source": batch.source,
        "target": batch.target,
        "tier": batch.tier,
        "body_zstd": batch.body_zstd,
        "items": [_item_struct(item) for item in batch.items],
        "end": end,
    }


def _batch_schema(data: bytes) -> dict[str, Any]:
    batch, end = schema.parse_batch(data)
    assert batch.magic == b"MSBT"
    assert batch.batch_version == 1
    return {
        "batch_id": batch.batch_id,
        "source": batch.source,
        "target": batch.target,
        "tier": batch.tier,
        "body_zstd": bool(batch.flags & BODY_ZSTD),
        "items": [_item_schema(item) for item in batch["items"]],
        "end": end,
    }


def _frame_struct(data: bytes) -> dict[str, Any]:
    frame, end = protocol.parse_frame(data)
    fields = {f.name: getattr(frame, f.name) for f in dataclasses.fields(frame)}
    header = fields.pop("header", None)
    if header is not None:
        fields["batch"] = dataclasses.asdict(header)
    return {"type": frame.TYPE, "fields": fields, "end": end}


BATCH_HEAD_KEYS = (
    "tier", "flags", "batch_id", "source", "target", "item_count", "raw_len", "body_len", "crc32"
)  # fmt: skip


def _frame_schema(data: bytes) -> dict[str, Any]:
    frame, end = schema.parse_frame(data)
    assert frame.length == end - 4
    fields = {k: v for k, v in frame.body.items() if not k.startswith("_")}
    if frame.type == protocol.Hello.TYPE:
        assert fields.pop("magic") == b"MSYN"
    if frame.type in (protocol.Error.TYPE, protocol.Bye.TYPE):
        assert fields.pop("text_len") == len(fields["text"].encode())
    if "more" in fields:
        fields["more"] = bool(fields["more"])
    if "batch" in fields:
        fields["batch"] = {key: fields["batch"][key] for key in BATCH_HEAD_KEYS}
    if frame.type in MESH_TYPES:
        _mesh_fields(frame.type, fields)
    if frame.type in (protocol.Members.TYPE, protocol.Prune.TYPE):
        _member_fields(frame.type, fields)
    if frame.type == protocol.Links.TYPE:
        fields.pop("count")
        fields["records"] = tuple(
            protocol.LinkRecord(r.node_id, r.version, tuple(r.peers)) for r in fields["records"]
        )
    return {"type": frame.type, "fields": fields, "end": end}


MESH_TYPES = {cls.TYPE for cls in (protocol.BarrierDone, protocol.Ranges, protocol.RangeIds)}


def _mesh_fields(ftype: int, fields: dict[str, Any]) -> None:
    """The schema's counts and lists as the dataclasses hold them (tuples, flags as bool)."""
    fields.pop("count")
    if ftype == protocol.BarrierDone.TYPE:
        fields["nodes"] = tuple((n.node_id, n.state) for n in fields["nodes"])
        return
    fields["reply"] = bool(fields["reply"])
    if ftype == protocol.Ranges.TYPE:
        fields["ranges"] = tuple(
            protocol.RangeDigest(r.lo, r.hi, r.count, r.digest) for r in fields["ranges"]
        )
        return
    fields["ranges"] = tuple(
        protocol.RangeList(r.lo, r.hi, tuple((e.item_id, e.hash) for e in r.entries))
        for r in fields["ranges"]
    )


def _member_fields(ftype: int, fields: dict[str, Any]) -> None:
    """The schema's records as the dataclasses hold them."""
    fields.pop("count")
    if ftype == protocol.Prune.TYPE:
        fields["graft"] = bool(fields["graft"])
        fields["origins"] = tuple(fields["origins"])
        return
    fields["members"] = tuple(
        protocol.Member(
            m.node_id,
            m.state,
            m.tiers,
            m.write_tiers,
            m.heartbeat,
            m.host[: m.host_len].decode("ascii"),
            m.port,
        )
        for m in fields["members"]
    )


def _frame_struct_full(data: bytes) -> tuple[Any, ...]:
    """struct side of a BATCH/PUSH frame, batch body included (``Frame.decode``)."""
    frame, _ = protocol.parse_frame(data)
    if not isinstance(frame, protocol.BatchFrame | protocol.Push | protocol.HopPush):
        return ()
    return tuple(_item_struct(item) for item in frame.decode().items)


def _frame_schema_full(data: bytes) -> tuple[Any, ...]:
    frame, _ = schema.parse_frame(data)
    name = schema.FRAME_BODY_NAMES[frame.type]
    if name not in ("batch_frame", "push", "hop_push"):
        return ()
    start = 5 + {"batch_frame": 21, "hop_push": 1}.get(name, 0)
    inner = data[start : start + 56 + frame.body.batch.body_len]
    found = schema.finish_batch(frame.body.batch, inner, prefix=f"{name}.batch")
    return tuple(_item_schema(item) for item in found)


def _item_struct_parse(data: bytes) -> tuple[dict[str, Any], int]:
    item, end = protocol.unpack_item(data)
    return _item_struct(item), end


def _item_schema_parse(data: bytes) -> tuple[dict[str, Any], int]:
    fields, end = schema.parse_item(data)
    return _item_schema(fields), end


# --- valid input: same values ------------------------------------------------------------


@SETTINGS
@given(items())
def test_valid_items_agree(item: protocol.Item) -> None:
    data = protocol.pack_item(item)
    fields, end = _item_schema_parse(data)
    assert fields == _item_struct(item)
    assert end == len(data)
    header = schema.compiled_item_header().parse(data[:48])
    assert {k: header[k] for k in ITEM_KEYS if k != "payload"} == {
        k: v for k, v in _item_struct(item).items() if k != "payload"
    }


@SETTINGS
@given(batches())
def test_valid_batches_agree(data: bytes) -> None:
    assert _batch_schema(data) == _batch_struct(data)


@SETTINGS
@given(frames())
def test_valid_frames_agree(frame: protocol.Frame) -> None:
    data = protocol.encode_frame(frame)
    assert _frame_schema(data) == _frame_struct(data)
    assert _frame_schema_full(data) == _frame_struct_full(data)


@SETTINGS
@given(TIERS.flatmap(lambda tier: st.lists(items(tier), max_size=10)))
def test_compiled_body_parser_agrees(found: list[protocol.Item]) -> None:
    body = protocol.pack_items(found)
    parsed = schema.construct_parse_items(body, len(found))
    assert [_item_schema(fields) for fields in parsed] == [_item_struct(i) for i in found]


# --- invalid input: both reject alike ----------------------------------------------------


@SETTINGS
@given(st.data())
def test_mutated_items_agree(data: st.DataObject) -> None:
    valid = protocol.pack_item(data.draw(items()))
    broken = data.draw(mutated(valid, 48))
    assert _outcome(_item_schema_parse, broken) == _outcome(_item_struct_parse, broken)


def _repacked(item: protocol.Item, payload: bytes) -> bytes:
    """``item`` with another payload: length and CRC fixed up, so the payload rules run."""
    head = bytearray(protocol.pack_item(item)[:44])
    head[40:44] = len(payload).to_bytes(4, "big")
    crc = zlib.crc32(payload, zlib.crc32(bytes(head)))
    return bytes(head) + crc.to_bytes(4, "big") + payload


@SETTINGS
@given(st.data())
def test_mutated_names_agree(data: st.DataObject) -> None:
    """A NAMED item with a broken name block (valid CRC): both name the same part."""
    item = data.draw(items().filter(lambda i: bool(i.flags & protocol.NAMED)))
    broken = _repacked(item, data.draw(mutated(item.payload, 24)))
    expected = _outcome(_item_struct_parse, broken)
    assert _outcome(_item_schema_parse, broken) == expected
    count = 1

    def body_side(raw: bytes) -> list[dict[str, Any]]:
        got = protocol.unpack_items(raw, count, prefix="batch.items")
        return [_item_struct(one) for one in got]

    def compiled_side(raw: bytes) -> list[dict[str, Any]]:
        return [_item_schema(f) for f in schema.construct_parse_items(raw, count)]

    assert _outcome(compiled_side, broken) == _outcome(body_side, broken)


@pytest.mark.parametrize(
    ("block", "field", "offset"),
    [
        (b"", "item.name.depth", 48),
        (b"\x11", "item.name.depth", 48),
        (b"\x01\x00", "item.name.labels[0].len", 49),
        (b"\x01\x03a/b\x00\x01k", "item.name.labels[0].text", 51),
        (b"\x01\x02\xff\xfe\x00\x01k", "item.name.labels[0].text", 50),
        (b"\x00\x00\x00", "item.name.key_len", 49),
        (b"\x00\x04\x01" + bytes(1025), "item.name.key_len", 49),
        (b"\x00\x00\x05abc", "item.name.key", 51),
        (b"\x00\x00\x01k", "item.item_id", 0),
    ],
)
def test_bad_names_are_named(block: bytes, field: str, offset: int) -> None:
    """Every malformed part of a name is refused by both codecs, naming the part."""
    item = protocol.Item(item_id=bytes(16), timestamp_ns=1, origin=2, tier=0, op=1)
    data = bytearray(_repacked(item, block))
    data[36:38] = protocol.NAMED.to_bytes(2, "big")
    data[44:48] = zlib.crc32(block, zlib.crc32(bytes(data[:44]))).to_bytes(4, "big")
    for side in (_item_struct_parse, _item_schema_parse):
        outcome = _outcome(side, bytes(data))
        assert outcome[0] == "error" and outcome[2:] == (field, offset), outcome


@pytest.mark.parametrize(
    ("flags", "payload", "op", "error", "field", "offset"),
    [
        (protocol.BASED, b"", 1, "TruncatedError", "item.base", 48),
        (protocol.BASED, bytes(15), 1, "TruncatedError", "item.base", 48),
        (protocol.BASED, bytes(16) + b"x", 3, "BadFieldError", "item.payload", 64),
        (
            protocol.BASED | protocol.RESOLVES,
            bytes(16) + b"[1]",
            4,
            "BadFieldError",
            "item.payload",
            64,
        ),
        (protocol.RESOLVES, bytes(16), 1, "BadFieldError", "item.flags", 36),
        (0x0004 | protocol.BASED, bytes(16), 1, "BadFieldError", "item.flags", 36),
    ],
)
def test_bad_bases_are_named(
    flags: int, payload: bytes, op: int, error: str, field: str, offset: int
) -> None:
    """A BASED item too short for its base, a bad value after it, RESOLVES without BASED:
    both codecs refuse it the same way (SPEC.md section 2.2)."""
    item = protocol.Item(item_id=bytes(16), timestamp_ns=1, origin=2, tier=0, op=1)
    data = bytearray(_repacked(item, payload))
    data[34] = op
    data[36:38] = flags.to_bytes(2, "big")
    data[44:48] = zlib.crc32(payload, zlib.crc32(bytes(data[:44]))).to_bytes(4, "big")
    for side in (_item_struct_parse, _item_schema_parse):
        outcome = _outcome(side, bytes(data))
        assert outcome[0] == "error" and outcome[1].__name__ == error, outcome
        assert outcome[2:] == (field, offset), outcome


@SETTINGS
@given(st.data())
def test_mutated_batch_bodies_agree(data: st.DataObject) -> None:
    tier = data.draw(TIERS)
    found = data.draw(st.lists(items(tier), min_size=1, max_size=6))
    broken = data.draw(mutated(protocol.pack_items(found), 48 * len(found)))
    count = len(found)

    def struct_side(raw: bytes) -> list[dict[str, Any]]:
        got = protocol.unpack_items(raw, count, tier=tier, prefix="batch.items")
        return [_item_struct(item) for item in got]

    def schema_side(raw: bytes) -> list[dict[str, Any]]:
        return [_item_schema(f) for f in schema.parse_batch_body(raw, count, tier=tier)]

    def compiled_side(raw: bytes) -> list[dict[str, Any]]:
        return [_item_schema(f) for f in schema.construct_parse_items(raw, count)]

    expected = _outcome(struct_side, broken)
    assert _outcome(schema_side, broken) == expected
    if expected[0] == "ok" or expected[2] is None or not expected[2].endswith(".tier"):
        # The compiled reference is not told the batch tier; everything else agrees.
        assert _outcome(compiled_side, broken) == expected


@SETTINGS
@given(st.data())
def test_mutated_batches_agree(data: st.DataObject) -> None:
    broken = data.draw(mutated(data.draw(batches()), 56))
    assert _outcome(_batch_schema, broken) == _outcome(_batch_struct, broken)


@SETTINGS
@given(st.data())
def test_mutated_frames_agree(data: st.DataObject) -> None:
    broken = data.draw(mutated(protocol.encode_frame(data.draw(frames())), 5 + 21 + 56))
    expected = _outcome(_frame_struct, broken)
    assert _outcome(_frame_schema, broken) == expected
    if expected[0] == "ok":
        assert _outcome(_frame_schema_full, broken) == _outcome(_frame_struct_full, broken)


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_agree(data: bytes) -> None:
    assert _outcome(_item_schema_parse, data) == _outcome(_item_struct_parse, data)
    assert _outcome(_batch_schema, b"MSBT\x01" + data) == _outcome(
        _batch_struct, b"MSBT\x01" + data
    )
    assert _outcome(_frame_schema, data) == _outcome(_frame_struct, data)


def test_header_rules_are_the_schemas_own() -> None:
    """A bad tier is refused by construct itself, before any protocol code runs."""
    item = protocol.Item(item_id=bytes(16), timestamp_ns=1, origin=2, tier=0, op=1)
    data = bytearray(protocol.pack_item(item))
    data[33] = 9
    with pytest.raises(construct.ConstructError, match="unknown tier 9"):
        schema.ITEM_HEADER.parse(bytes(data))


def _stream(parse: Any, data: bytes) -> list[Any]:
    found, offset = [], 0
    while offset < len(data):
        fields = parse(data[offset:])
        offset += fields["end"]
        found.append(fields)
    return found


VECTOR_SIDES: dict[str, tuple[Any, Any]] = {
    "item": (_item_schema_parse, _item_struct_parse),
    "batch": (_batch_schema, _batch_struct),
    "frame": (_frame_schema, _frame_struct),
    "stream": (
        lambda data: _stream(_frame_schema, data),
        lambda data: _stream(_frame_struct, data),
    ),
}


@pytest.mark.parametrize(
    "meta",
    # memshadow-*: another format with one codec (protocol/memshadow, test_memshadow.py)
    sorted(
        p
        for p in (Path(protocol.__file__).parent / "vectors").glob("*.json")
        if not p.name.startswith("memshadow-")
    ),
    ids=lambda path: path.stem,
)
def test_golden_vectors_agree(meta: Path) -> None:
    """Both codecs read every golden vector alike, errors included (class, field, offset)."""
    kind = json.loads(meta.read_text())["kind"]
    data = meta.with_suffix(".bin").read_bytes()
    schema_side, struct_side = VECTOR_SIDES[kind]
    assert _outcome(schema_side, data) == _outcome(struct_side, data)
