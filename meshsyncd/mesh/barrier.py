"""The mesh-wide sync barrier: ``sync --now`` across every reachable node (SPEC.md 4.1).

Theory of operation. A barrier spreads along sessions as a first-visit tree. A node that
receives ``BARRIER(id)`` from its parent P for the first time pulls everything P has
(``Link.wait_synced``), passes the barrier to its other peers with a smaller budget, waits
for their ``BARRIER_DONE`` (bounded), pulls from each child that answered DONE, and answers
P with the state of every node it reached. A node that sees the same id again answers
``SEEN`` at once, so cycles and concurrent barriers never wait on each other. Data therefore
flows out from the initiator (each node pulls from its parent before going on) and back in
(each parent pulls from its children after they answered): when the initiator's run ends
with every node covered, every write acknowledged anywhere before it began is readable at
the initiator, and the initiator's earlier writes are on every node.

``Barriers`` keeps the ids seen and the answers awaited; it decides what to answer and
whom to wait for, and takes its links through :class:`Link` so it never touches a socket,
the store or the node layer. The session gates the frames by capability; this module
refuses the rest of what a peer has no business sending (an answer to a barrier we did
not send it, a second answer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio

import protocol as P
from protocol import BarrierStatus, NodeState

from ..identity import short_text_of

__all__ = ["MAX_IN_FLIGHT", "SEEN_FOR", "BarrierResult", "Barriers", "Link", "child_budget"]

MAX_IN_FLIGHT = 64
SEEN_FOR = 60.0
MIN_CHILD_BUDGET_MS = 20

log: Any = structlog.get_logger("meshsyncd.barrier")


class Link(Protocol):
    """What the barrier needs of a peer session."""

    def peer_speaks(self, capability: P.Capability) -> bool: ...

    def send_nowait(self, event: P.Frame) -> bool: ...

    async def wait_synced(self) -> None: ...

    async def announce(self) -> dict[P.Tier, int]: ...

    async def wait_acked(self, targets: dict[P.Tier, int]) -> None: ...


def child_budget(budget_ms: int) -> int:
    """The budget passed one hop further: a fifth less and 50 ms, so the far end times out
    first and its parent still has time to answer its own parent."""
    return int(budget_ms * 0.8) - 50


def merge_states(into: dict[bytes, NodeState], nodes: Mapping[bytes, NodeState]) -> None:
    """Fold a child's report into ours: COVERED wins (some path reached that node)."""
    for node, state in nodes.items():
        old = into.get(node)
        if old is None or state == NodeState.COVERED:
            into[node] = state


@dataclass
class BarrierResult:
    """Per-node states of one barrier as seen from the node that ran it."""

    nodes: dict[bytes, NodeState] = field(default_factory=dict)

    @property
    def covered(self) -> list[bytes]:
        return sorted(n for n, s in self.nodes.items() if s == NodeState.COVERED)

    @property
    def failed(self) -> dict[bytes, NodeState]:
        return {n: s for n, s in self.nodes.items() if s != NodeState.COVERED}


@dataclass
class Barriers:
    """Barrier state of one node: ids seen, answers awaited, progress of the local run."""

    node_id: bytes
    links: Callable[[], Mapping[bytes, Link]]  # connected sessions by peer node id
    configured: Callable[[], list[bytes]]  # peers the config names (reachable or not)
    now: Callable[[], float] = time.monotonic
    _seen: dict[bytes, float] = field(default_factory=dict)  # barrier id -> forget after
    _awaiting: dict[tuple[bytes, bytes], trio.MemorySendChannel[P.BarrierDone]] = field(
        default_factory=dict
    )  # (barrier id, child) -> where its answer goes
    # (barrier id, child) -> (forget after, answered): tells a late answer from a forged one
    _sent: dict[tuple[bytes, bytes], tuple[float, bool]] = field(default_factory=dict)
    _in_flight: int = 0
    progress: dict[bytes, NodeState] = field(default_factory=dict)  # the latest local run
    _nursery: trio.Nursery | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"started": 0, "relayed": 0, "seen": 0, "busy": 0, "late": 0}
    )

    # -- decisions ------------------------------------------------------------------------

    def first_visit(self, barrier_id: bytes) -> bool:
        """Remember ``barrier_id``; False if it was here already (answer SEEN)."""
        now = self.now()
        for old in [b for b, until in self._seen.items() if until < now]:
            del self._seen[old]
        if barrier_id in self._seen:
            return False
        self._seen[barrier_id] = now + SEEN_FOR
        return True

    def expect(self, barrier_id: bytes, child: bytes) -> trio.MemoryReceiveChannel[P.BarrierDone]:
        send, recv = trio.open_memory_channel[P.BarrierDone](1)
        self._awaiting[(barrier_id, child)] = send
        self._sent[(barrier_id, child)] = (self.now() + SEEN_FOR, False)
        return recv

    def answer_from(self, child: bytes, done: P.BarrierDone) -> None:
        """Deliver a child's BARRIER_DONE; one that comes after we stopped waiting is dropped.

        Raises:
            P.SessionStateError: we sent that child no BARRIER with this id, or it already
                answered (the session ends: SPEC.md 4.1).
        """
        key = (done.barrier_id, child)
        now = self.now()
        for old in [k for k, (until, _) in self._sent.items() if until < now]:
            del self._sent[old]
        sent = self._sent.get(key)
        if sent is None or sent[1]:
            said = "answered twice" if sent is not None else "that we did not send"
            raise P.SessionStateError(
                f"BARRIER_DONE for barrier {done.barrier_id.hex()} {said}",
                field="barrier_done.barrier_id",
            )
        self._sent[key] = (sent[0], True)
        send = self._awaiting.pop(key, None)
        if send is None:
            self.counts["late"] += 1  # our deadline passed first: its nodes were reported
            return
        send.send_nowait(done)

    # -- frame handlers (the session awaits these: they must not block) -------------------

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    async def on_barrier(self, parent: bytes, link: Link, frame: P.Barrier) -> None:
        if not self.first_visit(frame.barrier_id):
            self.counts["seen"] += 1
            link.send_nowait(P.BarrierDone(barrier_id=frame.barrier_id, status=BarrierStatus.SEEN))
            return
        if self._in_flight >= MAX_IN_FLIGHT or self._nursery is None:
            self.counts["busy"] += 1
            link.send_nowait(P.BarrierDone(barrier_id=frame.barrier_id, status=BarrierStatus.BUSY))
            return
        self.counts["relayed"] += 1
        self._nursery.start_soon(self._serve, parent, link, frame)

    async def on_done(self, child: bytes, frame: P.BarrierDone) -> None:
        self.answer_from(child, frame)

    # -- runs -----------------------------------------------------------------------------

    async def run(self, budget_s: float) -> BarrierResult:
        """Run a barrier from here (``sync --now``) and return every node's state."""
        barrier_id = os.urandom(16)
        self.first_visit(barrier_id)
        self.counts["started"] += 1
        self.progress = {self.node_id: NodeState.COVERED}
        deadline = trio.current_time() + budget_s
        nodes = await self._spread(barrier_id, deadline, 0, None, self.progress)
        return BarrierResult(nodes)

    async def _serve(self, parent: bytes, link: Link, frame: P.Barrier) -> None:
        self._in_flight += 1
        try:
            deadline = trio.current_time() + frame.budget_ms / 1000
            with trio.move_on_at(deadline):
                await link.wait_synced()  # the parent's writes (and all it had) are here
            nodes = await self._spread(frame.barrier_id, deadline, frame.hops, parent, None)
            nodes.pop(parent, None)
            done = P.BarrierDone(
                barrier_id=frame.barrier_id,
                status=BarrierStatus.DONE,
                nodes=tuple(sorted(nodes.items()))[: P.MAX_BARRIER_NODES],
            )
            current = self.links().get(parent)
            if current is not None:
                current.send_nowait(done)
        finally:
            self._in_flight -= 1

    async def _spread(
        self,
        barrier_id: bytes,
        deadline: float,
        hops: int,
        parent: bytes | None,
        progress: dict[bytes, NodeState] | None,
    ) -> dict[bytes, NodeState]:
        """Pass the barrier to every peer but ``parent``; gather what they cover.

        ``progress`` (the local run only) is updated as each child's answer comes in.
        """
        nodes: dict[bytes, NodeState] = {self.node_id: NodeState.COVERED}
        links = dict(self.links())
        for peer in self.configured():
            if peer not in links and peer != parent:
                merge_states(nodes, {peer: NodeState.UNREACHABLE})
        if progress is not None:
            merge_states(progress, nodes)
        remaining_ms = int((deadline - trio.current_time()) * 1000)
        budget = child_budget(remaining_ms)
        async with trio.open_nursery() as nursery:
            for peer, link in links.items():
                if peer != parent:
                    child = _Child(barrier_id, budget, hops, peer, link, deadline)
                    nursery.start_soon(self._child, child, nodes, progress)
        return nodes

    async def _child(
        self,
        child: _Child,
        nodes: dict[bytes, NodeState],
        progress: dict[bytes, NodeState] | None,
    ) -> None:
        state, report = NodeState.TIMEOUT, {}
        link, peer = child.link, child.peer
        with trio.move_on_at(child.deadline):
            if not link.peer_speaks(P.Capability.BARRIER):
                # An older peer: a two-node sync with it; nothing beyond it is covered.
                targets = await link.announce()
                await link.wait_synced()
                await link.wait_acked(targets)
                state = NodeState.UNSUPPORTED
            elif child.budget_ms >= MIN_CHILD_BUDGET_MS:
                answers = self.expect(child.barrier_id, peer)
                try:
                    link.send_nowait(
                        P.Barrier(
                            barrier_id=child.barrier_id,
                            budget_ms=child.budget_ms,
                            hops=min(child.hops + 1, 255),
                        )
                    )
                    done = await answers.receive()
                finally:
                    self._awaiting.pop((child.barrier_id, peer), None)
                if done.status == BarrierStatus.SEEN:
                    return  # reached through another path: nothing to add from this link
                if done.status == BarrierStatus.BUSY:
                    state = NodeState.BUSY
                else:
                    await link.wait_synced()  # what the child gathered comes back to us
                    state, report = NodeState.COVERED, dict(done.nodes)
        found = {peer: state, **report}
        merge_states(nodes, found)
        if progress is not None:
            merge_states(progress, found)
        if state != NodeState.COVERED:
            log.info("barrier did not cover peer", peer=short_text_of(peer), state=state.name)


@dataclass(frozen=True, slots=True)
class _Child:
    """One peer a barrier is passed to, with the budget it gets and our own deadline."""

    barrier_id: bytes
    budget_ms: int
    hops: int
    peer: bytes
    link: Link
    deadline: float
