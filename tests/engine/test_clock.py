"""Hybrid logical clock: monotonic under wall steps, skew refusal, persisted high water."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from enginekit import BASE_NS, Node, Wall

from meshsyncd.clock import ClockSkewError, HybridClock
from protocol import Tier


def test_now_is_strictly_increasing_when_wall_steps_back() -> None:
    wall = Wall()
    clock = HybridClock(wall=wall)
    first = clock.now()
    assert first == BASE_NS
    wall.ns -= 10_000_000_000  # NTP steps us back ten seconds
    readings = [clock.now() for _ in range(5)]
    assert readings == [first + 1 + i for i in range(5)]
    wall.ns = BASE_NS + 1_000_000
    assert clock.now() == BASE_NS + 1_000_000


def test_observe_moves_last_forward_only() -> None:
    wall = Wall()
    clock = HybridClock(wall=wall)
    clock.observe(BASE_NS + 100_000_000, peer=7)
    assert clock.now() == BASE_NS + 100_000_001
    clock.observe(BASE_NS - 5, peer=7)
    assert clock.last == BASE_NS + 100_000_001


def test_skew_beyond_limit_is_refused_naming_the_peer_and_counted() -> None:
    wall = Wall()
    clock = HybridClock(wall=wall, max_skew_ns=500_000_000)
    clock.observe(BASE_NS + 500_000_000, peer=1)  # exactly at the limit: accepted
    with pytest.raises(ClockSkewError) as info:
        clock.observe(BASE_NS + 500_000_001, peer=0xDEADBEEF)
    assert "00000000deadbeef" in str(info.value)
    assert info.value.peer == 0xDEADBEEF
    assert clock.refused == 1
    assert clock.last == BASE_NS + 500_000_000


def test_restart_never_reuses_a_timestamp(make_node: Callable[..., Node]) -> None:
    wall = Wall()
    node = make_node(1, wall=wall)
    written = [node.engine.add(Tier.EPISODIC, b"x").timestamp_ns for _ in range(3)]
    wall.ns -= 3_600_000_000_000  # the machine comes back an hour in the past
    node.restart()
    again = node.engine.add(Tier.EPISODIC, b"y").timestamp_ns
    assert again > max(written)


def test_received_timestamps_are_persisted_too(make_node: Callable[..., Node]) -> None:
    a, b = make_node(1), make_node(2)
    a.wall.ns += 400_000_000
    item = a.engine.add(Tier.SEMANTIC, b"v")
    from enginekit import pull

    pull(b, a, Tier.SEMANTIC)
    b.restart()
    assert b.engine.clock.last >= item.timestamp_ns
    assert b.engine.add(Tier.SEMANTIC, b"w").timestamp_ns > item.timestamp_ns


def test_urgent_writes_keep_a_lease_that_a_restart_never_stamps_below(
    make_node: Callable[..., Node],
) -> None:
    """An urgent version sent before its commit: after a crash, no stamp reuses it."""
    from meshsyncd.engine import LEASE_NS
    from protocol import Op, Priority

    wall = Wall()
    node = make_node(1, wall=wall)
    engine = node.engine
    normal = engine.add(Tier.WORKING, b"n")
    assert not engine.may_send_early(normal)  # no urgent write yet: no lease
    first = engine.add(Tier.WORKING, b"a", priority=Priority.URGENT)
    assert engine.lease == first.timestamp_ns + LEASE_NS
    wall.ns += 1000
    sent = engine.stamp(Tier.WORKING, b"s" * 16, Op.INSERT, b"s", priority=Priority.URGENT)
    assert engine.may_send_early(sent)
    # Crash before ``sent`` commits; restart with the wall clock where it was (or behind it).
    wall.ns -= 5000
    node.restart()
    engine = node.engine
    assert engine.store.get_row(Tier.WORKING, b"s" * 16) is None
    assert 0 < engine.lease_wait_s() <= 2 * LEASE_NS / 1e9
    after = engine.stamp(Tier.WORKING, b"t" * 16, Op.INSERT, b"t")
    assert after.timestamp_ns > sent.timestamp_ns
    # Once the wall clock has passed the lease (the daemon waits for that), no jump at all.
    wall.ns = first.timestamp_ns + LEASE_NS + 10
    node.restart()
    assert node.engine.lease_wait_s() == 0
    assert node.engine.stamp(Tier.WORKING, b"u" * 16, Op.INSERT, b"u").timestamp_ns == wall.ns


def test_a_wall_clock_far_behind_the_lease_does_not_wait(make_node: Callable[..., Node]) -> None:
    from meshsyncd.engine import LEASE_NS
    from protocol import Priority

    wall = Wall()
    node = make_node(1, wall=wall)
    first = node.engine.add(Tier.WORKING, b"a", priority=Priority.HIGH)
    wall.ns -= 3600 * 10**9  # stepped back an hour across the restart
    node.restart()
    assert node.engine.lease_wait_s() == 0
    assert node.engine.add(Tier.WORKING, b"b").timestamp_ns == first.timestamp_ns + LEASE_NS + 1
