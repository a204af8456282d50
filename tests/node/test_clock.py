"""Hybrid logical clock: monotonic under wall steps, skew refusal, persisted high water."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import BASE_NS, Node, Wall

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
    from conftest import pull

    pull(b, a, Tier.SEMANTIC)
    b.restart()
    assert b.engine.clock.last >= item.timestamp_ns
    assert b.engine.add(Tier.SEMANTIC, b"w").timestamp_ns > item.timestamp_ns
