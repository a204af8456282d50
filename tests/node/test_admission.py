"""Admission of unauthenticated connections, the refusal log and the heap relief, without I/O.

The limits and timeouts are decided by :class:`Admission` (pure state); the log lines by
:class:`RefusalLog` over real structlog (captured); the relief's timing with trio's
autojump clock. A real daemon under a real flood is ``tests/faults/test_flood.py``.
"""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from meshsyncd.config import HandshakeLimits
from meshsyncd.node.admission import (
    KNOWN_SOURCES,
    Admission,
    AdmissionRefused,
    classify,
    source_of,
)
from meshsyncd.node.heap import HeapRelief, trim_heap
from meshsyncd.node.refusals import DETAILED, REASONS, SOURCES, RefusalLog
from meshsyncd.node.transport import HandshakeRefused

LIMITS = HandshakeLimits(
    max=6, max_per_source=3, reserved=2, timeout=10.0, first_contact_timeout=3.0
)


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_sources_are_addresses_or_ipv6_slash_64(host: str, source: str) -> None:
    assert source_of(host) == source


def test_per_source_limit_then_release() -> None:
    gate = Admission(LIMITS)
    assert [gate.admit("10.0.0.9") for _ in range(4)] == [None, None, None, "source_limit"]
    assert gate.statistics().in_progress == 3
    gate.release("10.0.0.9")
    assert gate.admit("10.0.0.9") is None
    for _ in range(3):
        gate.release("10.0.0.9")
    assert gate.statistics().in_progress == 0
    assert gate.statistics().sources == 0


def test_unknown_sources_leave_the_reserved_slots_to_peers() -> None:
    gate = Admission(LIMITS, peer_hosts=["192.0.2.1", "peer.example"])
    # strangers fill max - reserved = 4 slots, then are refused
    taken = [gate.admit(f"10.0.0.{i}") for i in range(5)]
    assert taken == [None, None, None, None, "limit"]
    # a configured peer's address still gets the reserved ones, and no more
    assert [gate.admit("192.0.2.1") for _ in range(3)] == [None, None, "limit"]
    assert gate.statistics().in_progress == LIMITS.max


def test_a_source_a_peer_authenticated_from_becomes_known() -> None:
    gate = Admission(LIMITS)
    assert not gate.is_known("198.51.100.4")
    assert gate.timeout_for("198.51.100.4") == LIMITS.first_contact_timeout
    gate.learn("198.51.100.4")
    assert gate.is_known("198.51.100.4")
    assert gate.timeout_for("198.51.100.4") == LIMITS.timeout
    for i in range(KNOWN_SOURCES):
        gate.learn(f"10.9.{i // 256}.{i % 256}")
    assert not gate.is_known("198.51.100.4"), "the known set is bounded (least recent goes)"
    assert gate.statistics().known == KNOWN_SOURCES


def test_reload_lowers_limits_without_dropping_handshakes() -> None:
    gate = Admission(LIMITS)
    for i in range(4):
        assert gate.admit(f"10.0.0.{i}") is None
    gate.configure(HandshakeLimits(max=3, reserved=0), peer_hosts=["10.0.0.0"])
    assert gate.statistics().in_progress == 4
    assert gate.admit("10.0.0.0") == "limit"  # known now, but 4 >= 3
    gate.release("10.0.0.1")
    gate.release("10.0.0.2")
    assert gate.admit("10.0.0.0") is None


def _refused_by(cause: BaseException) -> HandshakeRefused:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise HandshakeRefused("TLS handshake failed: x", address="a:1") from exc
    except HandshakeRefused as refused:
        return refused


def test_classify_by_cause() -> None:
    assert classify(_refused_by(trio.TooSlowError())) == "timeout"
    assert classify(_refused_by(ssl.SSLError(1, "PEER_DID_NOT_RETURN_A_CERTIFICATE"))) == "tls"
    assert classify(_refused_by(trio.BrokenResourceError())) == "tls"
    assert classify(HandshakeRefused("not a configured peer", address="a:1")) == "untrusted"
    assert classify(AdmissionRefused("full", address="a:1", kind="limit")) == "limit"


# -- the refusal log ---------------------------------------------------------------------------


def test_a_flood_from_one_source_is_one_line_then_one_summary(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def main() -> list[dict[str, object]]:
        refusals = RefusalLog()
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(refusals.run)
                for port in range(503):
                    refusals.refused(
                        source="127.0.0.1",
                        address=f"127.0.0.1:{40000 + port}",
                        claimed="flooder",
                        reason="TooSlowError",
                        noise=True,
                    )
                    await trio.sleep(0.01)
                await trio.sleep(11)
                nursery.cancel_scope.cancel()
        assert refusals.lines == len(logs)
        return logs

    logs = trio.run(main, clock=autojump_clock)
    assert [e["log_level"] for e in logs] == ["info", "info"]
    first, summary = logs
    assert first["event"] == "connection refused"
    assert first["peer"] == "flooder"
    assert first["address"] == "127.0.0.1:40000"
    assert (
        summary["event"]
        == "refused 503 connections from 127.0.0.1 in the last 10 s: TooSlowError x503"
    )
    assert summary["refused"] == 503
    assert summary["reasons"] == {"TooSlowError": 503}


def test_lines_per_window_are_bounded_whatever_the_sources_and_reasons(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def main() -> tuple[list[dict[str, object]], int]:
        refusals = RefusalLog()
        with capture_logs() as logs:
            for i in range(2000):
                refusals.refused(
                    source=f"10.{i % 50}.0.1",
                    address=f"10.{i % 50}.0.1:{i}",
                    claimed=f"id{i}",
                    reason=f"reason {i % 20}",
                    noise=i % 3 == 0,
                )
            refusals.flush()
        return logs, refusals.lines

    logs, lines = trio.run(main, clock=autojump_clock)
    assert lines == len(logs) <= DETAILED + SOURCES + 1
    summaries = [e for e in logs if "refused" in e]
    assert sum(int(e["refused"]) for e in summaries) == 2000
    assert {e["log_level"] for e in summaries} == {"warning"}  # some were not noise
    others = next(e for e in summaries if e["source"] == "other sources")
    assert int(others["refused"]) == 2000 - 40 * SOURCES
    for e in summaries:
        assert len(e["reasons"]) <= REASONS + 1


def test_distinct_probes_each_get_their_own_line_and_levels_follow_noise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def main() -> list[dict[str, object]]:
        refusals = RefusalLog()
        with capture_logs() as logs:
            refusals.refused(
                source="127.0.0.1", address="127.0.0.1:1", claimed=None, reason="x", noise=False
            )
            refusals.refused(
                source="127.0.0.1", address="127.0.0.1:2", claimed="abc", reason="y", noise=True
            )
            refusals.flush()  # everything was shown: no summary
        return logs

    logs = trio.run(main, clock=autojump_clock)
    assert [(e["event"], e["peer"], e["log_level"]) for e in logs] == [
        ("connection refused", "?", "warning"),
        ("connection refused", "abc", "info"),
    ]


# -- the heap relief ---------------------------------------------------------------------------


def test_heap_relief_waits_for_a_burst_to_end(autojump_clock: trio.testing.MockClock) -> None:
    trims: list[float] = []

    def fake_trim() -> bool:
        trims.append(trio.current_time())
        return True

    async def main() -> None:
        relief = HeapRelief(burst=10, quiet=1.0, min_interval=5.0, trim=fake_trim)
        busy = [3]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relief.run, lambda: busy[0])
            for _ in range(9):
                relief.note_ended()
            await trio.sleep(20)
            assert trims == [], "fewer than a burst: nothing to give back"
            relief.note_ended()
            await trio.sleep(10)
            assert trims == [], "handshakes still in progress"
            busy[0] = 0
            await trio.sleep(1.5)
            assert len(trims) == 1
            for _ in range(10):
                relief.note_ended()
            await trio.sleep(1.5)
            assert len(trims) == 1, "at most one relief per min_interval"
            await trio.sleep(5)
            assert len(trims) == 2
            assert trims[1] - trims[0] >= 5.0
            assert relief.reliefs == 2
            nursery.cancel_scope.cancel()

    trio.run(main, clock=autojump_clock)


def test_trim_heap_runs_here() -> None:
    assert trim_heap() in (True, False)  # glibc: True; elsewhere a no-op
