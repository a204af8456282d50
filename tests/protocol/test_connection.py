"""The sans-I/O session: order of frames, limits before buffering, clear first-contact errors."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol as P

HELLO = P.Hello(
    version=1, node_id=b"n" * 32, incarnation=b"i" * 16, capabilities=0xF, timestamp_ns=5
)
PING = P.Ping(nonce=1, timestamp_ns=2)


def _events(conn: P.Connection) -> list[object]:
    out: list[object] = []
    while (event := conn.next_event()) is not P.NEED_DATA:
        out.append(event)
        if isinstance(event, P.ConnectionClosed):
            break
    return out


def test_hello_then_data_then_bye() -> None:
    a, b = P.Connection(), P.Connection()
    b.receive_data(a.send(HELLO) + a.send(PING) + a.send(P.Bye()))
    assert _events(b) == [HELLO, PING, P.Bye()]
    assert b.their_state is P.State.CLOSED and b.their_hello == HELLO
    assert a.our_state is P.State.CLOSED


def test_data_before_hello_is_not_a_peer() -> None:
    b = P.Connection()
    b.receive_data(P.encode_frame(PING))
    with pytest.raises(P.BadMagicError, match="expected HELLO"):
        b.next_event()


def test_duplicate_hello_and_frames_after_bye() -> None:
    b = P.Connection()
    b.receive_data(P.encode_frame(HELLO) * 2)
    assert b.next_event() == HELLO
    with pytest.raises(P.SessionStateError, match="duplicate HELLO"):
        b.next_event()
    c = P.Connection()
    c.receive_data(P.encode_frame(HELLO) + P.encode_frame(P.Bye()) + P.encode_frame(PING))
    assert _events_until_error(c) == [HELLO, P.Bye()]


def _events_until_error(conn: P.Connection) -> list[object]:
    out: list[object] = []
    with pytest.raises(P.SessionStateError, match="after the session was closed"):
        while True:
            out.append(conn.next_event())
    return out


def test_error_poisons_the_connection() -> None:
    b = P.Connection()
    b.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(P.BadMagicError, match="not a meshsyncd peer") as first:
        b.next_event()
    with pytest.raises(P.BadMagicError) as again:
        b.next_event()
    assert again.value is first.value


def test_tls_client_hello_on_the_port_is_reported_clearly() -> None:
    b = P.Connection()
    b.receive_data(bytes.fromhex("160301020001") + bytes(40))
    with pytest.raises(P.BadMagicError, match="not a meshsyncd peer"):
        b.next_event()


def test_oversized_length_is_refused_before_buffering() -> None:
    b = P.Connection(max_frame=4096)
    b.receive_data(P.encode_frame(HELLO))
    assert b.next_event() == HELLO
    b.receive_data(struct.pack(">IB", 4097, P.Ping.TYPE))
    with pytest.raises(P.LimitError) as info:
        b.next_event()
    assert info.value.field == "frame.length"
    assert info.value.offset == len(P.encode_frame(HELLO))


def test_send_enforces_our_side() -> None:
    a = P.Connection()
    with pytest.raises(P.LocalProtocolError, match="HELLO must come first"):
        a.send(PING)
    a.send(HELLO)
    with pytest.raises(P.LocalProtocolError, match="duplicate HELLO"):
        a.send(HELLO)
    a.send(P.Error(code=P.ErrorCode.PROTOCOL, text="bad frame"))
    with pytest.raises(P.LocalProtocolError, match="closed"):
        a.send(PING)


def test_eof_mid_frame_is_truncation_and_at_boundary_is_close() -> None:
    data = P.encode_frame(HELLO) + P.encode_frame(PING)
    clean = P.Connection()
    clean.receive_data(data)
    clean.receive_data(b"")
    assert _events(clean) == [HELLO, PING, P.ConnectionClosed()]
    cut = P.Connection()
    cut.receive_data(data[:-3])
    cut.receive_data(b"")
    assert cut.next_event() == HELLO
    with pytest.raises(P.TruncatedError):
        cut.next_event()


def test_offsets_are_absolute_across_buffer_compaction() -> None:
    b = P.Connection()
    ping = P.encode_frame(PING)
    b.receive_data(P.encode_frame(HELLO))
    b.next_event()
    for _ in range(50):
        b.receive_data(ping)
        assert b.next_event() == PING
    bad = bytearray(P.encode_frame(P.Ack(request_id=1, tier=0, seq=1)))
    bad[9] = 9  # tier byte: after length, type and request_id
    b.receive_data(bytes(bad))
    with pytest.raises(P.BadFieldError) as info:
        b.next_event()
    assert info.value.offset == len(P.encode_frame(HELLO)) + 50 * len(ping) + 9


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        (lambda: P.Pull(request_id=1, tier=5, after_seq=0, max_items=1, max_bytes=1), "pull.tier"),
        (
            lambda: P.Pull(request_id=1, tier=0, after_seq=0, max_items=0, max_bytes=1),
            "pull.max_items",
        ),
        (lambda: P.Error(code=1, text="x" * 2000), "error.text"),
        (lambda: P.Ack(request_id=-1, tier=0, seq=0), "ack.request_id"),
        (lambda: P.Push(batch=b"MSBT"), "push.batch.header"),
        (lambda: dataclasses.replace(HELLO, version=0), "hello.version"),
    ],
)
def test_frame_constructors_refuse(frame: object, field: str) -> None:
    with pytest.raises(P.LocalProtocolError) as info:
        frame()  # type: ignore[operator]
    assert info.value.field == field


def test_hello_version_zero_is_too_old_and_wrong_magic_is_not_a_peer() -> None:
    data = bytearray(P.encode_frame(HELLO))
    data[9:11] = b"\x00\x00"
    with pytest.raises(P.VersionError, match="too old"):
        P.parse_frame(bytes(data))


@given(st.binary(max_size=300), st.integers(1, 50))
def test_any_bytes_any_split_same_outcome(data: bytes, step: int) -> None:
    def run(chunks: list[bytes]) -> tuple[list[object], str]:
        conn = P.Connection()
        events: list[object] = []
        try:
            for chunk in chunks:
                conn.receive_data(chunk)
                events += _events(conn)
            conn.receive_data(b"")
            events += _events(conn)
        except P.ProtocolError as exc:
            return events, f"{type(exc).__name__}:{exc.field}"
        return events, ""

    whole = run([data] if data else [])
    pieces = run([data[i : i + step] for i in range(0, len(data), step)])
    assert whole == pieces


@pytest.mark.parametrize(
    "first",
    [
        b"\x00\x00\x00\x05\xee",  # unknown type
        b"\x00\x00\x00\x00\x01",  # zero length
        b"\x00\x10\x00\x00\x02",  # a PULL declaring 1 MiB: refused before any body arrives
    ],
)
def test_bad_first_frame_header_is_not_a_peer(first: bytes) -> None:
    conn = P.Connection()
    conn.receive_data(first)
    with pytest.raises(P.BadMagicError, match="not a meshsyncd peer") as info:
        conn.next_event()
    assert info.value.offset in (0, 4)
    assert conn.buffered == len(first)
