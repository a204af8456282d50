"""Protocol-2 frames a peer has no business sending end its session; nothing changes.

Two real stores, two real ``Session`` objects over an in-memory stream pair, the daemon's
barrier state on one side (``mesh/barrier.py``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol as P
from meshsyncd.aengine import AsyncEngine
from meshsyncd.engine import Engine
from meshsyncd.mesh.barrier import Barriers
from meshsyncd.node.session import Session, SessionClosed
from meshsyncd.store import Store
from protocol import Op, Tier

A_ID, B_ID = bytes([1]) * 32, bytes([2]) * 32


async def _exchange(tmp_path: Path, frame: P.Frame, *, b_caps: int) -> tuple[str, Engine]:
    """A (barrier-capable) and B (``b_caps``); B sends ``frame`` after HELLO. Returns how
    B's session ended and A's engine."""
    a = Engine(Store.open(tmp_path / "a.db"), node_id=A_ID)
    b = Engine(Store.open(tmp_path / "b.db"), node_id=B_ID)
    a.write(Tier.EPISODIC, b"k" * 16, Op.INSERT, b"kept")
    before = {t: a.digest(t) for t in Tier}
    sessions: dict[bytes, Session] = {}
    barriers = Barriers(A_ID, links=lambda: sessions, configured=lambda: [B_ID])

    async def on_done(session: Session, event: P.Frame) -> None:
        assert isinstance(event, P.BarrierDone)
        await barriers.on_done(B_ID, event)

    async def on_barrier(session: Session, event: P.Frame) -> None:
        assert isinstance(event, P.Barrier)
        await barriers.on_barrier(B_ID, session, event)

    left, right = trio.testing.memory_stream_pair()
    sa = Session(
        AsyncEngine(a),
        left,
        node_id=A_ID,
        peer_id=B_ID,
        pull_interval=3600,
        extensions={P.BarrierDone: on_done, P.Barrier: on_barrier},
        capabilities=int(P.Capability.BARRIER),
    )
    sb = Session(AsyncEngine(b), right, node_id=B_ID, peer_id=A_ID, capabilities=b_caps)
    sessions[B_ID] = sa
    ended: list[str] = []

    async def run(s: Session) -> None:
        try:
            await s.run()
        except SessionClosed as exc:
            ended.append(exc.reason)

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                barriers.start(nursery)
                nursery.start_soon(run, sa)

                async def b_side() -> None:
                    await run(sb)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(b_side)
                await sb._hello_seen.wait()
                await sa._hello_seen.wait()
                sb._queue_urgent(sb._frame(frame))  # bypasses B's own capability check
        assert {t: a.digest(t) for t in Tier} == before
        return " / ".join(ended), a
    finally:
        with contextlib.suppress(Exception):
            b.store.close()
        a.store.close()


async def test_barrier_done_for_a_barrier_never_sent_ends_the_session(tmp_path: Path) -> None:
    done = P.BarrierDone(barrier_id=os.urandom(16), status=P.BarrierStatus.DONE)
    reason, _ = await _exchange(tmp_path, done, b_caps=int(P.Capability.BARRIER))
    assert "that we did not send" in reason


async def test_barrier_frame_without_the_capability_ends_the_session(tmp_path: Path) -> None:
    barrier = P.Barrier(barrier_id=os.urandom(16), budget_ms=500, hops=0)
    reason, _ = await _exchange(tmp_path, barrier, b_caps=0)
    assert "without the capability" in reason


async def test_a_barrier_seen_twice_is_answered_seen_at_once(tmp_path: Path) -> None:
    """A cycle: the same barrier id arrives a second time and is not served again."""
    sessions: dict[bytes, object] = {}
    barriers = Barriers(A_ID, links=lambda: sessions, configured=lambda: [])
    sent: list[P.Frame] = []

    class Link:
        def send_nowait(self, event: P.Frame) -> None:
            sent.append(event)

    barrier_id = os.urandom(16)
    assert barriers.first_visit(barrier_id)
    await barriers.on_barrier(B_ID, Link(), P.Barrier(barrier_id=barrier_id, budget_ms=100, hops=1))
    assert sent == [P.BarrierDone(barrier_id=barrier_id, status=P.BarrierStatus.SEEN)]
    assert barriers.counts["seen"] == 1


def test_a_late_answer_is_dropped_a_second_one_refused() -> None:
    """After our deadline a child's DONE is normal (dropped, counted); twice is not."""
    barriers = Barriers(A_ID, links=lambda: {}, configured=lambda: [])
    barrier_id = os.urandom(16)
    answers = barriers.expect(barrier_id, B_ID)
    barriers._awaiting.clear()  # what the deadline's cleanup does
    done = P.BarrierDone(barrier_id=barrier_id, status=P.BarrierStatus.DONE)
    barriers.answer_from(B_ID, done)
    assert barriers.counts["late"] == 1
    with pytest.raises(P.SessionStateError, match="answered twice"):
        barriers.answer_from(B_ID, done)
    with pytest.raises(P.SessionStateError, match="did not send"):
        barriers.answer_from(A_ID, done)
    answers.close()
