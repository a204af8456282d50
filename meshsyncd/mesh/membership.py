"""Membership: who we trust beyond the config, who is alive, and whom to keep a session with.

Theory of operation (DESIGN.md "The mesh", Membership; SPEC.md section 4.3).

* **Trust** comes from the config or from an introducer's VOUCH: ``trust.py`` (``Trust``,
  mixed in), its own module because it is saved to disk and changes only on a config load
  or a VOUCH, where liveness and fan-out below change every tick.
* **Liveness** spreads as *changes* over the sessions we have (SWIM's dissemination, but
  along the session graph like relay): each member has a heartbeat it raises itself; a
  record with a higher heartbeat (or the same one, now DEAD) replaces ours; if it is news (a
  death, a return, a new address) it goes on to our other peers in the next tick, never
  back to where it came from, so news crosses the mesh in about one tick per hop and a flood
  stops by itself. A new session gets the notable part of our view once (us, the dead, the
  moved): a member nobody has news of is presumed alive at the address it was vouched with.
  Death is detected by the nodes that had a session with the member: no session back
  within ``dead_after`` makes it DEAD; a node told that it is dead raises its
  heartbeat (SWIM's refutation), and a restarted node's heartbeat is higher anyway, so it
  rejoins. DEAD records are forgotten after ``forget_after``. Gossip never adds trust, and
  a record whose heartbeat is more than ``AHEAD_MS`` past our wall clock is refused.
* **Fan-out** is bounded: configured peers always have their sessions and count first;
  introduced ones fill up to ``max_peers``, dialled and accepted alike: ``NEAR`` successors
  and predecessors on the ring of node ids (so the graph stays connected) and random far
  links (so it stays shallow), chosen from a seeded ``random.Random``. A far link is
  refused by a node that is full and replaced by another pick; a node above ``max_peers``
  (a ring neighbour arrived) sheds far links, never ring ones. Relay, pull and repair carry
  data the rest of the way.

``Membership`` holds this state and makes these decisions; it never touches a socket. Its
callers (the daemon, the simulation) hand it frames and session events and send what it
returns.
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

import protocol as P
from protocol import Member, MemberKind, MemberState

from ..config import PeerConfig
from ..config.introduced import IntroducedPeer
from ..identity import short_text_of
from .trust import Trust, _hostable, mask_tiers, tier_mask

__all__ = [
    "AHEAD_MS",
    "DEAD_AFTER",
    "FORGET_AFTER",
    "LONG",
    "NEAR",
    "Membership",
    "MembershipStats",
    "mask_tiers",  # trust.py's, named here too (tests import them from this module)
    "tier_mask",
]

DEAD_AFTER = 3.0  # no session back with a member for this long: DEAD
AHEAD_MS = 600_000  # a heartbeat this far ahead of our wall clock is refused
FORGET_AFTER = 60.0  # a DEAD record is kept (so it cannot flap back) this long, then dropped
NEAR = 2  # ring successors dialled
LONG = 2  # random far members dialled
LONG_PATIENCE = 5.0  # a long link with no session this long after it was picked is replaced
RETRY_DEAD_EVERY = 5.0  # how often one DEAD member is dialled anyway (a healed partition)

log: Any = structlog.get_logger("meshsyncd.membership")


@dataclass(slots=True)
class Record:
    """One member's liveness as this node knows it."""

    heartbeat: int
    state: MemberState
    host: str
    port: int
    since: float  # local time of the last change


@dataclass(slots=True)
class MembershipStats:
    """Counters for the operator (``peers``, metrics) and the simulation."""

    refused: dict[bytes, int] = field(default_factory=dict)  # by peer
    gossip_in: int = 0
    changes: int = 0  # records that changed our view
    deaths: int = 0  # members this node declared DEAD
    refutations: int = 0
    gossip_dropped: int = 0  # GOSSIP frames not sent to a peer whose urgent lane was full


class Membership(Trust):
    """Trust beyond the config, member liveness, and the links to keep (see module doc)."""

    def __init__(
        self,
        node_id: bytes,
        *,
        host: str = "",
        port: int = 0,
        max_peers: int = 8,
        node_dir: Path | None = None,
        introduced: dict[bytes, IntroducedPeer] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        rng: random.Random | None = None,
        dead_after: float = DEAD_AFTER,
        forget_after: float = FORGET_AFTER,
    ) -> None:
        self.node_id = node_id
        self.max_peers = max_peers
        self.node_dir = node_dir
        self.clock = clock
        self.wall_ms = wall_ms
        self.rng = rng or random.Random()
        self.dead_after = dead_after
        self.forget_after = forget_after
        self.configured: dict[bytes, PeerConfig] = {}
        self.introduced: dict[bytes, IntroducedPeer] = dict(introduced or {})
        self.records: dict[bytes, Record] = {
            node_id: Record(wall_ms(), MemberState.ALIVE, host, port, clock())
        }
        self.asked: set[bytes] = set()  # introducers we sent ASK on their current session
        self.askers: set[bytes] = set()  # peers that asked us (they get our VOUCH updates)
        self.pending: dict[bytes, bytes | None] = {}  # changed member -> peer it came from
        self.suspects: dict[bytes, float] = {}  # member -> when its session ended
        self.long_links: list[bytes] = []
        self.long_since: dict[bytes, float] = {}  # long link -> when picked or last connected
        self.parted: set[bytes] = set()  # sessions we shed: their end is no sign of death
        self.retry: tuple[bytes, float] | None = None  # a DEAD member being tried, since
        self.dead: dict[bytes, float] = {}  # DEAD members -> since (to forget them in time)
        self._live: list[bytes] | None = None  # sorted live introduced ids (cache)
        self.stats = MembershipStats()

    def _where(self, node_id: bytes) -> tuple[str, int]:
        """The address we know for a member: its latest record, else the config or voucher."""
        record = self.records.get(node_id)
        if record is not None and record.host:
            return record.host, record.port
        peer = self.configured.get(node_id) or self.introduced.get(node_id)
        return (peer.host, peer.port) if peer is not None else ("", 0)

    def _notable(self, node_id: bytes, record: Record) -> bool:
        """Worth telling a new session: ourselves, the dead, and members that moved."""
        if node_id == self.node_id or record.state != MemberState.ALIVE:
            return True
        peer = self.configured.get(node_id) or self.introduced.get(node_id)
        return (
            peer is not None
            and bool(record.host)
            and (record.host, record.port)
            != (
                peer.host,
                peer.port,
            )
        )

    # -- liveness ---------------------------------------------------------------------------

    def on_gossip(self, peer: bytes, frame: P.Members) -> int:
        """Fold a GOSSIP into our view; return how many records changed it.

        Raises:
            BadFieldError: a record says its own sender is DEAD (checked before any change).
        """
        for m in frame.members:
            if m.node_id == peer and m.state != MemberState.ALIVE:
                raise P.BadFieldError("a GOSSIP declares its own sender dead", field="members")
        self.stats.gossip_in += 1
        changed = 0
        now = self.clock()
        horizon = self.wall_ms() + AHEAD_MS
        for m in frame.members:
            if m.heartbeat > horizon:
                # Heartbeats are wall-clock milliseconds: one from far in the future would
                # pin its member (or push our own past u64 when we refute it).
                self._refuse(peer, "heartbeat ahead of our clock", member=short_text_of(m.node_id))
                continue
            if m.node_id == self.node_id:
                self._maybe_refute(m)
                continue
            if m.node_id not in self.introduced and m.node_id not in self.configured:
                continue  # gossip never adds trust
            known = self.records.get(m.node_id)
            newer = known is None or m.heartbeat > known.heartbeat
            dies = (
                known is not None
                and m.heartbeat == known.heartbeat
                and m.state == MemberState.DEAD
                and known.state == MemberState.ALIVE
            )
            if not (newer or dies):
                continue
            before = known.state if known is not None else MemberState.ALIVE
            where = self._where(m.node_id)
            host, port = (m.host, m.port) if m.host else where
            self.records[m.node_id] = Record(m.heartbeat, m.state, host, port, now)
            self._state_changed(m.node_id, m.state, now)
            if m.state != before or (m.host and (m.host, m.port) != where):
                # news (a death, a return, a move): it goes on to our other peers. A
                # heartbeat alone is kept but not spread, so a quiet mesh stays quiet.
                self.pending[m.node_id] = peer
                changed += 1
        self.stats.changes += changed
        return changed

    def _state_changed(self, node_id: bytes, state: MemberState, now: float) -> None:
        if state == MemberState.ALIVE:
            if self.dead.pop(node_id, None) is not None:
                self._live = None
        elif node_id not in self.dead:
            self.dead[node_id] = now
            self._live = None

    def _maybe_refute(self, m: Member) -> None:
        me = self.records[self.node_id]
        if m.state == MemberState.DEAD and m.heartbeat >= me.heartbeat:
            me.heartbeat = max(self.wall_ms(), m.heartbeat + 1)
            me.since = self.clock()
            self.pending[self.node_id] = None
            self.stats.refutations += 1

    def move(self, host: str, port: int) -> None:
        """Our own address changed: a higher heartbeat carries the new one everywhere."""
        me = self.records[self.node_id]
        me.host, me.port = (host if _hostable(host) else ""), port
        me.heartbeat = max(self.wall_ms(), me.heartbeat + 1)
        self.pending[self.node_id] = None

    def alive(self, node_id: bytes) -> bool:
        return node_id not in self.dead

    def session_opened(self, peer: bytes) -> list[P.Frame]:
        """Frames for a new session: ASK if it is our introducer, then our whole view."""
        self.suspects.pop(peer, None)
        out: list[P.Frame] = []
        intro = self.configured.get(peer)
        if intro is not None and intro.introducer:
            self.asked.add(peer)
            out.append(P.Members(kind=MemberKind.ASK))
        notable = [pid for pid, r in sorted(self.records.items()) if self._notable(pid, r)]
        out.append(self._gossip(notable[: P.MAX_MEMBERS]))
        return out

    def session_closed(self, peer: bytes, *, parted: bool = False) -> None:
        """A session ended: suspect the peer, unless either side ended it on purpose
        (``parted``: it said BYE NORMAL; or we shed it), which says nothing of its health."""
        self.asked.discard(peer)
        self.askers.discard(peer)
        if parted or peer in self.parted:
            self.parted.discard(peer)
            return
        self.suspects[peer] = self.clock()

    def tick(self, connected: Collection[bytes]) -> dict[bytes, P.Members]:
        """Declare the dead, forget the long dead, and return this tick's GOSSIP per peer."""
        now = self.clock()
        for pid, at in list(self.suspects.items()):
            if pid in connected:
                del self.suspects[pid]
            elif now - at >= self.dead_after:
                del self.suspects[pid]
                record = self.records.get(pid)
                if record is not None and record.state == MemberState.ALIVE:
                    record.state, record.since = MemberState.DEAD, now
                    self._state_changed(pid, MemberState.DEAD, now)
                    self.pending[pid] = None
                    self.stats.deaths += 1
                    log.info("member dead", member=short_text_of(pid))
        for pid, since in list(self.dead.items()):
            if now - since >= self.forget_after:
                del self.dead[pid]
                self.records.pop(pid, None)
                self._live = None
        if not self.pending:
            return {}
        pending, self.pending = self.pending, {}
        out = {}
        news = [(pid, pending[pid]) for pid in sorted(pending) if pid in self.records]
        members = {pid: self._member(pid) for pid, _ in news}
        for peer in connected:
            mine = tuple(members[pid] for pid, source in news if source != peer)
            if mine:
                frame = P.Members(kind=MemberKind.GOSSIP, members=mine[: P.MAX_MEMBERS])
                out[peer] = frame
        return out

    def _member(self, pid: bytes) -> Member:
        r = self.records[pid]
        return Member(pid, r.state, heartbeat=r.heartbeat, host=r.host, port=r.port)

    def _gossip(self, ids: list[bytes]) -> P.Members:
        members = tuple(self._member(pid) for pid in ids)
        return P.Members(kind=MemberKind.GOSSIP, members=members)

    # -- fan-out ----------------------------------------------------------------------------

    def _live_ids(self) -> list[bytes]:
        if self._live is None:
            self._live = sorted(p for p in self.introduced if p not in self.dead)
        return self._live

    def ring(self) -> tuple[list[bytes], list[bytes]]:
        """Our ``NEAR`` successors and ``NEAR`` predecessors on the ring of live member ids.

        Every node dials its successors, so the ring's links (each node's successors and
        predecessors) keep the graph connected whatever the long links do.
        """
        live = self._live_ids()
        if not live:
            return [], []
        at = bisect.bisect_right(live, self.node_id)
        k = min(NEAR, len(live))
        after = [live[(at + i) % len(live)] for i in range(k)]
        before = [live[(at - 1 - i) % len(live)] for i in range(k)]
        return after, before

    def _ring_set(self) -> set[bytes]:
        after, before = self.ring()
        return set(after) | set(before)

    def wanted(self, connected: Collection[bytes]) -> list[bytes]:
        """Introduced members to keep a session with: ring neighbours, then random far ones.

        Configured peers are dialled anyway and take their slots first; the ring links come
        next (slots are kept for the predecessors that dial us); long links take what is
        left of ``max_peers``. A long link that got no session within ``LONG_PATIENCE``
        (refused there: that node is full) is replaced by another random member.
        """
        slots = max(0, self.max_peers - sum(1 for p in connected if p in self.configured))
        live = self._live_ids()
        if not live or not slots:
            return self._retry_dead() if slots else []
        near, before = self.ring()
        now = self.clock()
        for p in self.long_links:
            if p in connected:
                self.long_since[p] = now
        self.long_links = [
            p
            for p in self.long_links
            if p in self.introduced
            and p not in self.dead
            and now - self.long_since.get(p, now) < LONG_PATIENCE
        ]
        self.long_since = {p: self.long_since[p] for p in self.long_links}
        ring = set(near) | set(before)
        used = len(set(connected) | ring | set(self.long_links))
        if len(self.long_links) < LONG and used < self.max_peers:
            taken = ring | set(self.long_links) | set(connected)
            free = [p for p in live if p not in taken]
            while free and len(self.long_links) < LONG and used < self.max_peers:
                pick = free.pop(self.rng.randrange(len(free)))
                self.long_links.append(pick)
                self.long_since[pick] = now
                used += 1
        out = list(dict.fromkeys(near + self.long_links))[: min(slots, NEAR + LONG)]
        return out + self._retry_dead()

    def _retry_dead(self) -> list[bytes]:
        """One DEAD member now and then: after a partition heals, someone must knock first;
        if it answers, it learns it was thought dead and refutes, and the news spreads."""
        now = self.clock()
        if self.retry is not None and now - self.retry[1] < RETRY_DEAD_EVERY:
            return [self.retry[0]] if self.retry[0] in self.introduced else []
        dead = sorted(p for p in self.dead if p in self.introduced)
        self.retry = (dead[self.rng.randrange(len(dead))], now) if dead else None
        return [self.retry[0]] if self.retry else []

    def accepts(self, peer: bytes, connected: Collection[bytes]) -> bool:
        """May an introduced peer have a session now? ``max_peers`` bounds them all.

        Configured peers always may (they count first). A ring neighbour, or a member we
        think dead, may while the configured ones leave room (a far link is shed to make
        it: ``shed``); anyone else
        only while our sessions and the ring slots not yet filled stay below ``max_peers``.
        """
        if peer in self.configured:
            return True
        others = [p for p in connected if p != peer]
        ring = self._ring_set()
        if peer in ring or peer in self.dead:
            # a member we think dead knocking (``_retry_dead``): a healed partition comes
            # back through such links, so it gets in like a ring neighbour
            return sum(1 for p in others if p in self.configured) < self.max_peers
        free_ring = len(ring - set(others))
        return len(others) + free_ring < self.max_peers

    def shed(self, connected: Collection[bytes], dialled: Collection[bytes]) -> list[bytes]:
        """Sessions to close to get back to ``max_peers``: long links, those we did not
        dial first (never a configured peer or a ring neighbour), in a stable order."""
        excess = len(connected) - self.max_peers
        if excess <= 0:
            return []
        keep = set(self.configured) | self._ring_set()
        spare = sorted((p in dialled, p) for p in connected if p not in keep)
        out = [p for _, p in spare[:excess]]
        self.long_links = [p for p in self.long_links if p not in out]
        self.parted.update(out)
        return out
