"""The peers table's reasons, from the exceptions the dialer and the session really see."""

from __future__ import annotations

import ssl

import trio

from meshsyncd.clock import ClockSkewError
from meshsyncd.node.endings import SessionClosed
from meshsyncd.node.reasons import NOT_LISTED, dial_reason, refusal_hint, session_reason
from meshsyncd.node.transport import HandshakeRefused


def _raised(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as exc:
        return exc


def test_connection_refused_also_when_trio_wraps_it() -> None:
    assert dial_reason(ConnectionRefusedError(111, "Connection refused"), "h:1") == (
        "connection refused at h:1"
    )
    wrapped = _raised(
        OSError("all attempts to connect to 127.0.0.1:7 failed"),
        ExceptionGroup("x", [ConnectionRefusedError(111, "Connection refused")]),
    )
    assert dial_reason(wrapped, "127.0.0.1:7") == "connection refused at 127.0.0.1:7"
    unreachable = OSError(113, "No route to host")
    assert dial_reason(unreachable, "h:1") == "cannot reach h:1: no route to host"


def test_wrong_certificate_at_the_address() -> None:
    exc = HandshakeRefused("peer at h:1 is aaaa, expected bbbb", address="h:1", claimed="aaaa")
    assert dial_reason(exc, "h:1").startswith("TLS: certificate does not match the configured id")


def test_a_cut_before_hello_is_a_refusal_after_it_a_lost_connection() -> None:
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    closed = _raised(
        SessionClosed("connection lost: BrokenResourceError"),
        _raised(trio.BrokenResourceError(), eof),
    )
    assert session_reason(closed, opened=False) == NOT_LISTED
    assert session_reason(closed, opened=True) == "connection lost: BrokenResourceError"


def test_clock_skew_either_side() -> None:
    ours = ClockSkewError(peer=1, remote_ns=3_200_000_000, wall_ns=0, max_skew_ns=500_000_000)
    mine = _raised(SessionClosed(f"clock skew: {ours}"), ours)
    assert session_reason(mine, opened=True) == "clock skew 3.2 s"
    theirs = SessionClosed(f"peer error 4: {ours}")
    assert session_reason(theirs, opened=True) == "clock skew 3.2 s"


def test_bye_reasons_and_the_admit_hint() -> None:
    bye = SessionClosed("peer said bye (1) shutting down")
    assert session_reason(bye, opened=True) == "the peer shut down"
    removed = SessionClosed("peer said bye (3) removed from config")
    assert session_reason(removed, opened=True).startswith("refused by peer: it removed")
    assert refusal_hint("abcd", "10.0.0.9:51234") == "meshsyncd peers add abcd 10.0.0.9:PORT"
    assert refusal_hint("abcd", "[::1]:51234") == "meshsyncd peers add abcd [::1]:PORT"
