"""Golden vectors: every stored vector decodes whole, byte by byte and with trailing data,
and re-encodes to the stored bytes (SPEC.md section 6: vectors only ever grow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from vectorlib import (
    VECTORS,
    batch_from_json,
    frame_from_json,
    item_from_json,
    zstd_version,
)

import protocol as P

TRAILER = b"\x00\x01trailing"


def _load() -> list[tuple[str, bytes, dict[str, Any]]]:
    out = []
    for path in sorted(VECTORS.glob("*.json")):
        desc = json.loads(path.read_text())
        if desc["kind"] == "memshadow":  # another format: test_memshadow.py
            continue
        out.append((path.stem, path.with_suffix(".bin").read_bytes(), desc))
    return out


ALL = _load()
GOOD = [v for v in ALL if "expect_error" not in v[2]]
BAD = [v for v in ALL if "expect_error" in v[2]]


def _ids(vs: list[tuple[str, bytes, dict[str, Any]]]) -> list[str]:
    return [v[0] for v in vs]


def test_vector_set_is_complete() -> None:
    kinds = {v[2]["kind"] for v in GOOD}
    assert kinds == {"item", "batch", "frame", "stream"}
    items = [v[2]["item"] for v in GOOD if v[2]["kind"] == "item"]
    assert {i["tier"] for i in items} == {t.name for t in P.Tier}
    assert {i["op"] for i in items} == {o.name for o in P.Op}
    assert {i["priority"] for i in items} == {p.name for p in P.Priority}
    frames = {v[2]["frame"]["type"] for v in GOOD if v[2]["kind"] == "frame"}
    assert frames == {cls.NAME for cls in P.FRAME_TYPES.values()}
    zstd = {v[2]["batch"]["body_zstd"] for v in GOOD if v[2]["kind"] == "batch"}
    assert zstd == {True, False}


@pytest.mark.parametrize(("name", "data", "desc"), GOOD, ids=_ids(GOOD))
def test_good_vector(name: str, data: bytes, desc: dict[str, Any]) -> None:
    kind = desc["kind"]
    if kind == "item":
        _check_item(data, item_from_json(desc["item"]))
    elif kind == "batch":
        _check_batch(data, desc)
    elif kind == "frame":
        _check_stream(data, [frame_from_json(desc["frame"])])
    else:
        _check_stream(data, [frame_from_json(f) for f in desc["frames"]])


def _check_item(data: bytes, want: P.Item) -> None:
    assert P.pack_item(want) == data
    got, end = P.unpack_item(data)
    assert (got, end) == (want, len(data))
    got, end = P.unpack_item(data + TRAILER)
    assert (got, end) == (want, len(data))
    got, end = P.unpack_item(TRAILER + data, len(TRAILER))
    assert (got, end) == (want, len(TRAILER) + len(data))
    for cut in range(len(data)):
        with pytest.raises(P.TruncatedError):
            P.unpack_item(data[:cut])


def _check_batch(data: bytes, desc: dict[str, Any]) -> None:
    want = batch_from_json(desc["batch"])
    zstd = desc["batch"]["body_zstd"]
    got, end = P.unpack_batch(data)
    assert (got, end) == (want, len(data))
    assert got.body_zstd is zstd
    got, end = P.unpack_batch(data + TRAILER)
    assert (got, end) == (want, len(data))
    for cut in range(len(data)):
        with pytest.raises(P.ProtocolError):
            P.unpack_batch(data[:cut])
    encoded = P.pack_batch(want)
    if not zstd or desc["zstd_version"] == zstd_version():
        assert encoded == data
    else:  # another zstd build may compress differently; the content must not change
        assert P.unpack_batch(encoded)[0] == want
    assert P.pack_batch(want, compress=zstd)[:52] == data[:52] or zstd


def _drain(conn: P.Connection) -> list[object]:
    events: list[object] = []
    while True:
        event = conn.next_event()
        if event is P.NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, P.ConnectionClosed):
            return events


def _check_stream(data: bytes, want: list[P.Frame]) -> None:
    encoded = b"".join(P.encode_frame(f) for f in want)
    assert encoded == data
    # parse_frame, whole and with trailing data
    off, got = 0, []
    while off < len(data):
        frame, off = P.parse_frame(data, off)
        got.append(frame)
    assert got == want
    assert P.parse_frame(data + TRAILER)[0] == want[0]
    # the connection, whole, byte by byte, and with a clean end of stream
    first = want[0]
    if not isinstance(first, P.Hello | P.Error | P.Bye):
        data = P.encode_frame(_hello()) + data
        want = [_hello(), *want]
    whole = P.Connection()
    whole.receive_data(data)
    whole.receive_data(b"")
    assert _drain(whole) == [*want, P.ConnectionClosed()]
    bytewise = P.Connection()
    events: list[object] = []
    for i in range(len(data)):
        bytewise.receive_data(data[i : i + 1])
        events += _drain(bytewise)
    assert events == want
    # a session that ends mid-frame is truncated, not closed
    if len(data) > 1:
        cut = P.Connection()
        cut.receive_data(data[:-1])
        cut.receive_data(b"")
        with pytest.raises(P.TruncatedError):
            _drain(cut)


def _hello() -> P.Hello:
    return P.Hello(
        version=1, node_id=bytes(32), incarnation=bytes(16), capabilities=0, timestamp_ns=0
    )


@pytest.mark.parametrize(("name", "data", "desc"), BAD, ids=_ids(BAD))
def test_bad_vector(name: str, data: bytes, desc: dict[str, Any]) -> None:
    expect = desc["expect_error"]
    decode = {
        "item": lambda b: P.unpack_item(b),
        "batch": lambda b: P.unpack_batch(b),
        "frame": lambda b: P.parse_frame(b),
    }[desc["kind"]]
    # Trailing bytes must not change the verdict (except that they complete a truncation).
    bufs = [data] if expect["class"] == "TruncatedError" else [data, data + TRAILER]
    for buf in bufs:
        with pytest.raises(P.ProtocolError) as info:
            decode(buf)
        err = info.value
        assert type(err).__name__ == expect["class"], str(err)
        assert err.field == expect["field"], str(err)
        assert err.offset == expect["offset"], str(err)
        assert expect["field"] in str(err)


def test_vectors_are_only_added() -> None:
    """The generator never rewrites an existing vector (it would report additions)."""
    import subprocess
    import sys

    script = Path(__file__).with_name("make_vectors.py")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("0 vectors added"), out
