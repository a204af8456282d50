"""The simulated network and nodes of ``meshsyncd bench sim`` (``sim.py`` runs scenarios).

Theory of operation. Everything above the byte stream is the real code: each ``SimNode``
is a :class:`~meshsyncd.node.members.MemberLinks` (so the daemon's own session bookkeeping,
MEMBERS/PRUNE handlers, membership tick and introduced-link management run unchanged) over
a real :class:`~meshsyncd.node.session.Session`, :class:`~meshsyncd.mesh.relay.Relay`,
:class:`~meshsyncd.mesh.membership.Membership` and a real SQLite :class:`Store` per node.
Only three things are replaced, each because the real one is nondeterministic:

* TLS over TCP becomes ``SimStream``: FIFO pipes whose bytes arrive after the link's
  latency (from the nodes' positions on a plane, plus 1 ms of processing per hop and
  serialisation at 100 Mbit/s), under
  trio's ``MockClock`` with autojump, so model time passes only when every task waits;
* the engine's worker thread becomes ``InlineWorker`` (SQLite runs on the trio thread,
  synchronous OFF, no checkpointer thread), and ``inline_threads`` makes
  ``trio.to_thread.run_sync`` run inline for the duration of the run: a thread would let
  the mock clock jump while SQLite works;
* the dialer is ``SimNode._sim_dialer``: the same loop and backoff as ``links.py``, asking
  the network (``SimNet.connect``) instead of a socket; partitions and crashed nodes refuse.
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import trio

import protocol as P
from protocol import Tier

from ..aengine import AsyncEngine
from ..clock import HybridClock
from ..config import Config, PeerConfig
from ..config.introduced import IntroducedPeer
from ..engine import Engine
from ..mesh.linkstate import forward_filter
from ..mesh.membership import Membership
from ..mesh.relay import Relay
from ..mesh.tree import Trees
from ..node.links import BACKOFF_MAX, BACKOFF_MIN, PeerState
from ..node.members import MemberLinks, link_state
from ..node.session import FrameHandler, Session
from ..store import Store
from ..store.aio import SerialWorker

__all__ = ["InlineWorker", "SimNet", "SimNode", "SimStream", "host_of", "inline_threads"]

T = TypeVar("T")
BANDWIDTH = 12.5e6  # bytes per second on every link (100 Mbit/s)
# What a hop costs besides the wire: decode, relay, TLS (the model clock does not see CPU
# time). ``bench latency`` measures ~3 ms for a whole write-to-readable hop on loopback.
HOP_COST = 0.001


class InlineWorker(SerialWorker):
    """Run engine calls on the trio thread, one at a time (deterministic, no clock jumps)."""

    async def run(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args)


@contextlib.contextmanager
def inline_threads() -> Iterator[None]:
    """``trio.to_thread.run_sync`` runs inline while the simulation runs (see module doc)."""

    async def inline(fn: Callable[..., T], *args: Any, **_: Any) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args)

    real = trio.to_thread.run_sync
    trio.to_thread.run_sync = inline  # type: ignore[assignment]
    try:
        yield
    finally:
        trio.to_thread.run_sync = real


class _Pipe:
    """One direction of a link: (arrival time, bytes) in FIFO order."""

    def __init__(self) -> None:
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.leftover = b""
        self.closed = False
        self.wake = trio.Event()
        self.last_at = 0.0


class SimStream(trio.abc.Stream):
    """A byte stream with latency; closing either end ends both (a crash or a cut)."""

    def __init__(self, out: _Pipe, inp: _Pipe, latency: float, net: SimNet) -> None:
        self.out, self.inp, self.latency, self.net = out, inp, latency, net

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self.out.closed:
            if self.inp.queue or self.inp.leftover:
                # like TCP: bytes the other end sent before it closed (its BYE) still
                # arrive, and what we write meanwhile is lost, not an error yet
                return
            raise trio.BrokenResourceError("link down")
        delay = self.latency + HOP_COST + len(data) / BANDWIDTH
        at = max(self.out.last_at, trio.current_time() + delay)
        self.out.last_at = at
        self.out.queue.append((at, bytes(data)))
        self.net.bytes += len(data)
        self.out.wake.set()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        pipe = self.inp
        while True:
            if pipe.leftover:
                n = max_bytes or len(pipe.leftover)
                data, pipe.leftover = pipe.leftover[:n], pipe.leftover[n:]
                await trio.lowlevel.checkpoint()
                return data
            if pipe.queue:
                at, data = pipe.queue[0]
                if at > trio.current_time():
                    await trio.sleep_until(at)
                    continue
                pipe.queue.popleft()
                pipe.leftover = data
                continue
            if pipe.closed:
                await trio.lowlevel.checkpoint()
                return b""
            pipe.wake = trio.Event()
            await pipe.wake.wait()

    async def aclose(self) -> None:
        for pipe in (self.out, self.inp):
            pipe.closed = True
            pipe.wake.set()
        await trio.lowlevel.checkpoint()


class _Trust:
    """The trust store's face the membership wiring uses; the net checks trust itself."""

    def reload(self, allowed: set[bytes] | None = None) -> None:
        return None


class SimNode(MemberLinks):
    """One node of the simulation: the daemon's membership and link logic, real stores."""

    def __init__(
        self,
        net: SimNet,
        index: int,
        node_id: bytes,
        config: Config,
        introduced: dict[bytes, IntroducedPeer],
    ) -> None:
        self.net = net
        self.index = index
        self.node_id = node_id
        self.config = config
        self.sessions: dict[bytes, Session] = {}
        self.peers: dict[bytes, PeerState] = {p.node_id: PeerState(p) for p in config.peers}
        self.trust = _Trust()  # type: ignore[assignment]
        self.refused_unknown = 0
        self.listen_port = config.listen_port
        self.relay = Relay()
        self.trees = Trees(clock=trio.current_time)
        self.membership = Membership(
            node_id,
            host=config.listen_host,
            port=config.listen_port,
            max_peers=config.max_peers,
            introduced=introduced,
            clock=trio.current_time,
            wall_ms=net.wall_ms,
            rng=random.Random(net.seed * 1_000_003 + index),
        )
        self.membership.set_config(config.peers)
        self.linkstate = link_state(self.membership, clock=trio.current_time, wall_ms=net.wall_ms)
        self.relay.skip = forward_filter(self.linkstate, self.trees)
        self.relay.sent = self.trees.sent
        self.extensions: dict[type[P.Frame], FrameHandler] = {
            P.Members: self._on_members,
            P.Prune: self._on_prune,
            P.Links: self._on_links,
        }
        self.capabilities = int(P.Capability.MEMBERSHIP)
        self._nursery: trio.Nursery | None = None
        self.scope = trio.CancelScope()
        self.running = False
        self.rng = random.Random(net.seed * 7_000_003 + index)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        store = Store.open(
            self.config.store_path,
            local_synchronous="OFF",
            replicated_synchronous="OFF",
            checkpointer=False,
        )
        self.engine = AsyncEngine(
            Engine(store, node_id=self.node_id, clock=HybridClock()), InlineWorker()
        )
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.running = True
                    for state in self.peers.values():
                        self._start_dialer(state)
                    nursery.start_soon(self.relay.run_linger, lambda: self.sessions)
                    nursery.start_soon(self.relay.run_announcer, self._announce)
                    nursery.start_soon(self._membership_loop)
                    task_status.started()
        finally:
            self.running = False
            self._nursery = None
            self.sessions.clear()
            store.close()

    # -- links ------------------------------------------------------------------------------

    def _start_dialer(self, state: PeerState) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._sim_dialer, state)

    async def _sim_dialer(self, state: PeerState) -> None:
        """``Links._dialer`` with the network's connect in place of TLS."""
        peer = state.config
        with trio.CancelScope() as scope:
            state.scope = scope
            while True:
                if peer.node_id in self.sessions:
                    state.ended = trio.Event()
                    await state.ended.wait()
                    continue
                try:
                    stream = self.net.connect(self, peer.node_id)
                except OSError as exc:
                    state.state, state.last_error = "backoff", str(exc)
                    delay = state.backoff * self.rng.uniform(0.5, 1.5)
                    state.backoff = min(state.backoff * 2, BACKOFF_MAX)
                    await trio.sleep(delay)
                    continue
                state.backoff = BACKOFF_MIN
                await self._run_session(stream, peer, initiator=True)
                await trio.sleep(self.rng.uniform(0.05, 0.25))

    async def accept(self, stream: SimStream, peer: PeerConfig) -> None:
        await self._run_session(stream, peer, initiator=False)

    async def _announce(self, peer: bytes, tier: Tier) -> bool:
        session = self.sessions.get(peer)
        return session is not None and await session.announce_tier(tier)

    # -- data flow (the daemon's, plus the simulation's observers) -------------------------

    def _on_remote(self, batch: P.Batch, peer: PeerConfig) -> None:
        return None

    def _on_applied(
        self, session: Session, batch: P.Batch, changed: list[P.Item] | None, hops: int | None
    ) -> None:
        if session.peer_hello is None:
            return
        source = session.peer_hello.node_id
        if changed is None or changed:
            self.relay.applied(self.sessions, batch.tier, source, changed, hops or 0)
        if changed is not None:
            self.relay.settled(batch.items)
        self._tree_applied(session, batch, changed, hops)
        self.net.observe_applied(self, source, batch, changed, hops)

    def _on_received(self, session: Session, batch: P.Batch, hops: int) -> None:
        if session.peer_hello is not None:
            source = session.peer_hello.node_id
            self.relay.received(self.sessions, batch.tier, source, batch.items, hops)
            self.net.observe_received(self, batch)

    def _send_prunes(self, frames: Iterable[tuple[bytes, P.Prune]]) -> None:
        frames = list(frames)
        self.net.tree_frames += len(frames)  # a write's prunes and grafts count as its messages
        super()._send_prunes(frames)

    async def write(self, key: bytes, priority: P.Priority) -> P.Item:
        """A local write, fanned out like the daemon's ``on_local_write``."""
        item: P.Item = await self.engine.write(
            Tier.WORKING, key, P.Op.INSERT, b'{"sim": true}', priority=priority
        )
        self.net.observe_local(self, item)
        self.relay.local_write(self.sessions, item)
        return item


class SimNet:
    """The nodes, their positions, the cuts, and what the observers saw of tracked items."""

    def __init__(self, seed: int, wall_ms: Callable[[], int]) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.wall_ms = wall_ms
        self.nodes: dict[bytes, SimNode] = {}
        self.pos: dict[bytes, tuple[float, float]] = {}
        self.side: dict[bytes, int] = {}  # partition side; empty when healed
        self.bytes = 0
        # tracked versions: (item_id, ts, origin) -> node index -> (first time, hops)
        self.first: dict[tuple[bytes, int, int], dict[int, tuple[float, int]]] = {}
        self.copies: dict[tuple[bytes, int, int], collections.Counter[int]] = {}
        self.tree_frames = 0  # PRUNE and GRAFT frames sent, all nodes
        self.links: list[tuple[bytes, bytes, _Pipe, _Pipe]] = []  # dialer, target, pipes

    def latency(self, a: bytes, b: bytes) -> float:
        """2 ms plus up to ~80 ms across the plane (a continent of data centres)."""
        (x1, y1), (x2, y2) = self.pos[a], self.pos[b]
        return 0.002 + 0.08 * math.hypot(x1 - x2, y1 - y2) / math.sqrt(2)

    def connect(self, dialer: SimNode, target: bytes) -> SimStream:
        """Open a link from ``dialer`` to ``target``, or raise OSError like a failed dial."""
        node = self.nodes.get(target)
        if node is None or not node.running or node._nursery is None:
            raise OSError("connection refused (node down)")
        if self.side and self.side[dialer.node_id] != self.side[target]:
            raise OSError("no route to host (partition)")
        peer = node._peer_config(dialer.node_id)
        if peer is None:
            raise OSError("handshake refused (not trusted there)")
        lat = self.latency(dialer.node_id, target)
        ab, ba = _Pipe(), _Pipe()
        self.links = [link for link in self.links if not link[2].closed]
        self.links.append((dialer.node_id, target, ab, ba))
        node._nursery.start_soon(node.accept, SimStream(ba, ab, lat, self), peer)
        return SimStream(ab, ba, lat, self)

    def cut(self, sides: dict[bytes, int]) -> None:
        """Partition: links across the cut close now, dials across it fail."""
        self.side = dict(sides)
        for a, b, ab, ba in self.links:  # sessions still in their handshake too
            if sides[a] != sides[b]:
                for pipe in (ab, ba):
                    pipe.closed = True
                    pipe.wake.set()
        for node in self.nodes.values():
            for pid, session in list(node.sessions.items()):
                if sides[pid] != sides[node.node_id] and node._nursery is not None:
                    node._nursery.start_soon(session.stream.aclose)

    def heal(self) -> None:
        self.side = {}

    # -- observers --------------------------------------------------------------------------

    def track(self, item: P.Item) -> tuple[bytes, int, int]:
        key = (item.item_id, item.timestamp_ns, item.origin)
        self.first.setdefault(key, {})
        self.copies.setdefault(key, collections.Counter())
        return key

    def observe_local(self, node: SimNode, item: P.Item) -> None:
        key = self.track(item)
        self.first[key][node.index] = (trio.current_time(), 0)

    def observe_received(self, node: SimNode, batch: P.Batch) -> None:
        for item in batch.items:
            copies = self.copies.get((item.item_id, item.timestamp_ns, item.origin))
            if copies is not None:
                copies[node.index] += 1

    def observe_applied(
        self,
        node: SimNode,
        source: bytes,
        batch: P.Batch,
        changed: list[P.Item] | None,
        hops: int | None,
    ) -> None:
        """First arrivals: the hop count a push carried on the wire (plus ours), or for a
        pull (which carries none) one more than the puller's source had."""
        items = batch.items if changed is None else changed
        for item in items:
            key = (item.item_id, item.timestamp_ns, item.origin)
            first = self.first.get(key)
            if first is None or node.index in first:
                continue
            if changed is None:  # a pull: count the copy here (a push counted on receipt)
                self.copies[key][node.index] += 1
            if hops is None:
                here = first.get(self.nodes[source].index, (0.0, 0))[1] + 1
            else:
                here = hops + 1
            first[node.index] = (trio.current_time(), here)


def host_of(index: int) -> str:
    """Node ``index``'s address (only ever compared, never dialled)."""
    return f"10.{index >> 8 & 255}.{index & 255}.1"


def sim_config(root: Path, index: int, peers: tuple[PeerConfig, ...], max_peers: int) -> Config:
    """A node's config as ``load_config`` would build it (no file: nothing reads one)."""
    import types

    node_dir = root / f"n{index}"
    return Config(
        path=node_dir / "meshsyncd.toml",
        node_dir=node_dir,
        listen_host=host_of(index),
        listen_port=7700,
        store_path=root / f"n{index}.db",
        control_socket=node_dir / "control.sock",
        sync_interval=30.0,
        verify_interval=3600.0,
        max_clock_skew_ns=500_000_000,
        durability="normal",
        log_format="json",
        log_level="warning",
        retention_ns=types.MappingProxyType(dict.fromkeys(Tier)),
        tombstone_grace_ns=7 * 86400 * 10**9,
        metrics_listen="",
        peers=peers,
        max_peers=max_peers,
    )
