"""Repair (anti-entropy): the node's self-check, digest announcements and ``check``.

Theory of operation (DESIGN.md "The mesh": cursors are the fast path, digests are the proof;
SPEC.md 4.2). :class:`Repair` is the daemon's part; the per-session part is
:class:`~meshsyncd.mesh.repairlink.RepairLink` (detection and the exchange) and the pure
rules are in ``reconcile.py``. The daemon registers :meth:`Repair.handlers` as the sessions'
handlers of RANGES, RANGE_IDS and (first look at) DIGEST, adds the REPAIR capability to its
HELLO, and runs :meth:`Repair.run`, which does two things:

* The self-check. A digest compared with a peer's proves nothing if it does not match the
  rows, so right after start, and every ``verify_interval``, every bucket digest of every
  tier is recomputed from the rows (``store/verify.py``, one bucket per worker call, which
  gives way between chunks of ~1 ms to queued calls, urgent ones always). A bucket that
  does not match is rewritten to match the rows, logged and counted, and every peer is told
  our new digests: that is what makes a row deleted behind the daemon's back visible to the
  peers' comparison, and so repaired.
* Announcements. A session that opens is told our digest of every tier it receives; after
  that, each ``announce_every`` seconds, what changed (and every ``FORCE_EVERY`` rounds
  everything). The peer answers with its own
  when that changed (``RepairLink.on_digest``), which is how detection sees both sides.

``meshsyncd check`` (:meth:`Repair.check`) tells every connected peer our digests (forced),
waits about two round trips for the answers of those whose state changed since they last
told us, and then compares, per tier, our digest with the last one each peer announced.
Only direct peers are asked: a node further away is compared by running ``check`` on its
neighbours.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
import trio

import protocol as P
from protocol import Tier

from ..aengine import AsyncEngine
from ..identity import node_id_text
from ..store.verify import verify_bucket
from .repairlink import RepairLink, RepairStats, SessionLike
from .share import narrowed

__all__ = ["Repair", "RepairStats"]

NEW_SESSION_POLL = 0.25  # how soon a new session is told our digests
CHECK_SETTLE = 0.2  # extra wait for answers, beyond two round trips
POLITE_TRIES = 3  # a bucket check gives way to any queued call this many times
FORCE_EVERY = 10  # every this many announcement rounds, unchanged digests are told too

log: Any = structlog.get_logger("meshsyncd.repair")

Handler = Callable[[Any, P.Frame], Any]


class Repair:
    """The node's repair service (module docstring)."""

    def __init__(self, *, verify_interval: float, announce_every: float) -> None:
        self.verify_interval = verify_interval
        self.announce_every = announce_every
        self.stats = RepairStats()
        self.last_verify: float | None = None
        # By session; a link refers to its session, so ended ones are pruned by the loop.
        self._links: dict[Any, RepairLink] = {}

    def link(self, session: SessionLike) -> RepairLink:
        """The session's repair link, made on first use."""
        found = self._links.get(session)
        if found is None:
            found = self._links[session] = RepairLink(session, self.stats)
        return found

    # -- session handlers -------------------------------------------------------------------

    def handlers(self) -> dict[type[P.Frame], Handler]:
        """The frame handlers to register with the sessions (``Daemon.extensions``)."""
        return {P.Ranges: self._on_frame, P.RangeIds: self._on_frame, P.Digest: self._on_digest}

    async def _on_frame(self, session: SessionLike, frame: P.Frame) -> None:
        await self.link(session).receive(frame)

    async def _on_digest(self, session: SessionLike, frame: P.Frame) -> None:
        assert isinstance(frame, P.Digest)
        await self.link(session).on_digest(frame)

    # -- the service --------------------------------------------------------------------

    async def run(self, engine: AsyncEngine, sessions: Callable[[], Iterable[SessionLike]]) -> None:
        """Self-check and announce until cancelled (module docstring)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._verify_loop, engine, sessions)
            nursery.start_soon(self._announce_loop, sessions)

    async def _announce_loop(self, sessions: Callable[[], Iterable[SessionLike]]) -> None:
        last = time.monotonic()
        rounds = 0
        while True:
            await trio.sleep(NEW_SESSION_POLL)
            due = time.monotonic() - last >= self.announce_every
            if due:
                last = time.monotonic()
                rounds += 1
            # Now and then unchanged digests are told again: a divergence that appeared
            # while neither side changed (a rewound cursor caught up) is judged anew.
            again = due and rounds % FORCE_EVERY == 0
            current = list(sessions())
            for gone in [s for s in self._links if s not in current]:
                del self._links[gone]
            for session in current:
                if not session.peer_speaks(P.Capability.REPAIR):
                    continue
                link = self.link(session)
                if not link.told or due:
                    await link.announce(force=not link.told or again)

    async def _verify_loop(
        self, engine: AsyncEngine, sessions: Callable[[], Iterable[SessionLike]]
    ) -> None:
        while True:
            fixed = await self.verify(engine)
            if fixed:
                for session in list(sessions()):
                    if session.peer_speaks(P.Capability.REPAIR):
                        await self.link(session).announce()
            await trio.sleep(self.verify_interval)

    async def verify(self, engine: AsyncEngine) -> int:
        """Check every bucket digest of every tier against the rows; return buckets fixed."""
        store, worker = engine.engine.store, engine.worker

        def waiting() -> bool:  # read from the worker thread: two deque lengths
            return worker.statistics().tasks_waiting > 0

        fixed_total = 0
        for tier in Tier:
            fixed: list[int] = []
            rows = 0
            for bucket in range(256):
                # A bucket gives way to any queued call the first times, then only to
                # urgent ones, so that a busy writer cannot starve the check.
                for attempt in itertools.count():
                    give_way = waiting if attempt < POLITE_TRIES else worker.urgent_waiting
                    done = await engine.run(verify_bucket, store, tier, bucket, give_way)
                    if done is not None:
                        break
                rows += done.rows
                if done.fixed:
                    fixed.append(bucket)
            if fixed:
                log.warning(
                    "repair: stored digest did not match the rows; fixed to match them",
                    tier=tier.name,
                    buckets=len(fixed),
                    rows=rows,
                )
            fixed_total += len(fixed)
        self.stats.digest_fixes += fixed_total
        self.stats.verify_rounds += 1
        self.last_verify = time.time()
        return fixed_total

    # -- the operator's views -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counters for ``status`` and the metrics."""
        out: dict[str, Any] = dataclasses.asdict(self.stats)
        out["last_verify"] = self.last_verify
        links = list(self._links.values())
        out["running"] = sum(len(link.recs) + link.fetching for link in links)
        return out

    async def check(
        self,
        engine: AsyncEngine,
        sessions: Iterable[SessionLike],
        peers: Iterable[bytes],
        node_id: bytes,
    ) -> dict[str, Any]:
        """Per tier: our digest, each connected peer's, and who differs (module docstring)."""
        live = [s for s in sessions if s.peer_hello is not None]
        rtt = 0.0
        for s in live:
            if s.peer_speaks(P.Capability.REPAIR):
                await self.link(s).announce(force=True)
            rtt = max(rtt, (s.stats.rtt_ms or 0.0) / 1000)
        await trio.sleep(2 * rtt + CHECK_SETTLE)
        store = engine.engine.store
        ours = await engine.run(lambda: {t: (store.tier_seq(t), store.digest(t)) for t in Tier})
        connected = {s.peer_hello.node_id: s for s in live if s.peer_hello is not None}
        tiers: dict[str, Any] = {}
        for tier in Tier:
            nodes = {node_id_text(node_id): {"digest": ours[tier][1].hex(), "seq": ours[tier][0]}}
            differ: list[str] = []
            for pid, s in connected.items():
                if tier not in s.accept_tiers or narrowed(s, tier):
                    continue  # not held whole by both: the digests cannot agree
                heard = self.link(s).heard.get(tier)
                name = node_id_text(pid)
                if heard is None:
                    nodes[name] = {"digest": None, "seq": None}
                    differ.append(name)
                    continue
                nodes[name] = {"digest": heard[1].hex(), "seq": heard[0]}
                if heard[1] != ours[tier][1]:
                    differ.append(name)
            tiers[tier.name.lower()] = {
                "agree": not differ,
                "nodes": nodes,
                "differ": sorted(differ),
            }
        missing = sorted(node_id_text(p) for p in peers if p not in connected)
        return {
            "node_id": node_id_text(node_id),
            "tiers": tiers,
            "unreachable": missing,
            "agree": all(t["agree"] for t in tiers.values()),
        }
