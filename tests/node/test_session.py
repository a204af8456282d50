"""Two real stores syncing through Session over an in-memory stream pair."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol as P
from meshsyncd.aengine import AsyncEngine
from meshsyncd.engine import Engine
from meshsyncd.node.session import Session, SessionClosed
from meshsyncd.store import Store
from protocol import Op, Priority, Tier


def _engine(path: Path, n: int) -> Engine:
    return Engine(Store.open(path), node_id=bytes([n]) * 32)


async def _run_pair(a: Engine, b: Engine, body: object, **kw: object) -> tuple[Session, Session]:
    left, right = trio.testing.memory_stream_pair()
    sa = Session(AsyncEngine(a), left, node_id=bytes([1]) * 32, peer_id=bytes([2]) * 32, **kw)  # type: ignore[arg-type]
    sb = Session(AsyncEngine(b), right, node_id=bytes([2]) * 32, peer_id=bytes([1]) * 32, **kw)  # type: ignore[arg-type]

    async def run(s: Session) -> None:
        with contextlib.suppress(SessionClosed):
            await s.run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, sa)
        nursery.start_soon(run, sb)
        await body(sa, sb)  # type: ignore[operator]
        nursery.cancel_scope.cancel()
    return sa, sb


async def test_two_nodes_converge_by_pull(tmp_path: Path) -> None:
    a, b = _engine(tmp_path / "a.db", 1), _engine(tmp_path / "b.db", 2)
    try:
        for i in range(600):
            a.write(Tier.EPISODIC, i.to_bytes(16, "big"), Op.INSERT, json.dumps({"i": i}).encode())
        b.write(Tier.SEMANTIC, b"s" * 16, Op.INSERT, b'{"fact": 1}')

        async def body(sa: Session, sb: Session) -> None:
            await sa._hello_seen.wait()
            await sb._hello_seen.wait()
            await sa.wait_synced()
            await sb.wait_synced()

        _, sb = await _run_pair(a, b, body, pull_interval=3600, chunk_items=100)
        for tier in Tier:
            assert a.digest(tier) == b.digest(tier)
        assert b.store.count(Tier.EPISODIC) == 600
        assert sb.stats.items_in >= 600 and sb.stats.batches_in >= 6  # 100-item chunks
        assert b.store.cursor(a.origin, Tier.EPISODIC) == a.store.tier_seq(Tier.EPISODIC)
    finally:
        a.store.close()
        b.store.close()


async def test_urgent_push_and_tier_permissions(tmp_path: Path) -> None:
    a, b = _engine(tmp_path / "a.db", 1), _engine(tmp_path / "b.db", 2)
    arrived = trio.Event()
    try:

        async def body(sa: Session, sb: Session) -> None:
            await sa._hello_seen.wait()
            await sb._hello_seen.wait()
            # Through the session's AsyncEngine: one writer thread per store, never two.
            item = await sa.engine.write(
                Tier.WORKING, b"u" * 16, Op.INSERT, b"now", priority=Priority.URGENT
            )
            assert sa.push_nowait(item)
            with trio.fail_after(5):
                await arrived.wait()
            assert await sb.engine.get(Tier.WORKING, b"u" * 16) is not None
            # SEMANTIC is not given to b: neither pushed nor pulled
            secret = await sa.engine.write(Tier.SEMANTIC, b"x" * 16, Op.INSERT, b"secret")
            assert not sa.push_nowait(secret)
            await sb.wait_synced()

        await _run_pair(
            a,
            b,
            body,
            pull_interval=3600,
            send_tiers=(Tier.WORKING, Tier.EPISODIC),
            accept_tiers=(Tier.WORKING, Tier.EPISODIC),
            on_change=lambda _batch: arrived.set(),
        )
        assert b.get(Tier.SEMANTIC, b"x" * 16) is None
    finally:
        a.store.close()
        b.store.close()


async def test_malformed_frame_closes_only_that_session_with_an_error(tmp_path: Path) -> None:
    a = _engine(tmp_path / "a.db", 1)
    before = a.digest(Tier.EPISODIC)
    try:
        left, right = trio.testing.memory_stream_pair()
        session = Session(AsyncEngine(a), left, node_id=bytes([1]) * 32, pull_interval=3600)
        peer = P.Connection()
        hello = P.Hello(
            version=P.PROTOCOL_VERSION,
            node_id=bytes([2]) * 32,
            incarnation=bytes(16),
            capabilities=0,
            timestamp_ns=1,
        )
        await right.send_all(peer.send(hello))
        await right.send_all(b"\x00\x00\x00\x05\x02garb")  # a PULL with a 4-byte body
        with pytest.raises(SessionClosed, match="protocol error: pull"):
            await session.run()
        seen = []
        peer.receive_data(await right.receive_some(65536))
        while (event := peer.next_event()) is not P.NEED_DATA:
            seen.append(event)
        assert isinstance(seen[0], P.Hello)
        assert isinstance(seen[-1], P.Error) and seen[-1].code == P.ErrorCode.PROTOCOL
        assert "pull" in seen[-1].text
        assert a.digest(Tier.EPISODIC) == before
        # A service that still holds the session (repair announcing its digests) and sends
        # after the close: the frame is dropped, not raised into that service's task (it
        # took the whole daemon down once, tests/faults/test_clock_skew.py).
        assert not session.send_nowait(P.Digest(tier=Tier.EPISODIC, seq=1, digest=bytes(32)))
        assert session.urgent_backlog == 0
    finally:
        a.store.close()


async def test_silent_peer_is_declared_dead(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """A half-open link (peer says HELLO, then nothing) ends after three ping intervals."""
    a = _engine(tmp_path / "a.db", 1)
    try:
        left, right = trio.testing.memory_stream_pair()
        session = Session(
            AsyncEngine(a), left, node_id=bytes([1]) * 32, pull_interval=3600, ping_interval=1.0
        )
        peer = P.Connection()
        hello = P.Hello(
            version=P.PROTOCOL_VERSION,
            node_id=bytes([2]) * 32,
            incarnation=bytes(16),
            capabilities=0,
            timestamp_ns=1,
        )
        await right.send_all(peer.send(hello))
        with pytest.raises(SessionClosed, match="silent"):
            await session.run()
        assert trio.current_time() >= 3.0
    finally:
        a.store.close()


async def test_peer_clock_far_ahead_is_refused_at_hello(tmp_path: Path) -> None:
    a = _engine(tmp_path / "a.db", 1)
    try:
        left, right = trio.testing.memory_stream_pair()
        session = Session(AsyncEngine(a), left, node_id=bytes([1]) * 32, pull_interval=3600)
        peer = P.Connection()
        an_hour_ahead = time.time_ns() + 3600 * 10**9
        hello = P.Hello(
            version=P.PROTOCOL_VERSION,
            node_id=bytes([2]) * 32,
            incarnation=bytes(16),
            capabilities=0,
            timestamp_ns=an_hour_ahead,
        )
        await right.send_all(peer.send(hello))
        with pytest.raises(SessionClosed, match="clock skew"):
            await session.run()
        peer.receive_data(await right.receive_some(65536))
        events = []
        while (event := peer.next_event()) is not P.NEED_DATA:
            events.append(event)
        assert isinstance(events[-1], P.Error) and events[-1].code == P.ErrorCode.CLOCK_SKEW
        assert "ahead" in events[-1].text
        assert a.clock.refused == 1
    finally:
        a.store.close()


async def test_sync_barrier_completes_when_the_peer_is_already_up_to_date(tmp_path: Path) -> None:
    """A new session to a peer that is already caught up: no pull happens, yet it ACKs."""
    a, b = _engine(tmp_path / "a.db", 1), _engine(tmp_path / "b.db", 2)
    try:
        a.write(Tier.EPISODIC, b"e" * 16, Op.INSERT, b'{"x": 1}')

        async def first(sa: Session, sb: Session) -> None:
            await sa._hello_seen.wait()
            await sb._hello_seen.wait()
            await sb.wait_synced()

        async def second(sa: Session, sb: Session) -> None:
            await sa._hello_seen.wait()
            await sb._hello_seen.wait()
            await sb.wait_synced()  # finds nothing new: no pull round ACKs anything
            with trio.fail_after(5):
                seqs = await sa.announce()
                await sa.wait_acked(seqs)

        await _run_pair(a, b, first, pull_interval=3600)
        await _run_pair(a, b, second, pull_interval=3600)
    finally:
        a.store.close()
        b.store.close()


async def test_peer_of_protocol_2_is_refused_at_hello_by_name(tmp_path: Path) -> None:
    """A protocol-2 peer cannot decode NAMED items: refused with both versions named."""
    a = _engine(tmp_path / "a.db", 1)
    try:
        left, right = trio.testing.memory_stream_pair()
        session = Session(AsyncEngine(a), left, node_id=bytes([1]) * 32, pull_interval=3600)
        peer = P.Connection()
        hello = P.Hello(
            version=2,
            node_id=bytes([2]) * 32,
            incarnation=bytes(16),
            capabilities=0x3F,
            timestamp_ns=1,
        )
        await right.send_all(peer.send(hello))
        with pytest.raises(SessionClosed, match="protocol 2"):
            await session.run()
        peer.receive_data(await right.receive_some(65536))
        events = []
        while (event := peer.next_event()) is not P.NEED_DATA:
            events.append(event)
        assert isinstance(events[-1], P.Error) and "upgrade" in events[-1].text
    finally:
        a.store.close()


async def test_peer_of_protocol_5_is_refused_at_hello_by_name(tmp_path: Path) -> None:
    """A protocol-5 peer sends no LINKS (SPEC.md section 4.5): refused by name."""
    a = _engine(tmp_path / "a.db", 1)
    try:
        left, right = trio.testing.memory_stream_pair()
        session = Session(AsyncEngine(a), left, node_id=bytes([1]) * 32, pull_interval=3600)
        peer = P.Connection()
        hello = P.Hello(
            version=5,
            node_id=bytes([2]) * 32,
            incarnation=bytes(16),
            capabilities=0x7F,
            timestamp_ns=1,
        )
        await right.send_all(peer.send(hello))
        with pytest.raises(SessionClosed, match="protocol 5, this node needs at least 6"):
            await session.run()
        peer.receive_data(await right.receive_some(65536))
        events = []
        while (event := peer.next_event()) is not P.NEED_DATA:
            events.append(event)
        assert isinstance(events[-1], P.Error) and "upgrade" in events[-1].text
    finally:
        a.store.close()
