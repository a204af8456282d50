"""Relay: fresh versions travel on past the first hop (DESIGN.md "The mesh", Relay).

Theory of operation. Every version a node applies that *changed its state* goes on to its
other peers; one that changed nothing (a duplicate, a loser) stops here, so a flood ends by
itself in any graph, cycles included: a version changes a node's state at most once, so a
node sends it over each of its links at most once, and never back to the peer it came from.

* URGENT and HIGH versions, whether written here or received in a PUSH, are pushed at once to
  every connected peer that may receive their tier (the session checks the tier lists and the
  bounded urgent queue; a full queue drops the push, counted, and the next pull carries it).
  A received one goes on *before* our own apply when it is newer than every version of its
  item this node has seen lately (``recent``, an LRU of the highest key per item): such a
  version cannot lose here, so it changes our state, and the next hop need not wait for our
  commit. Anything else waits for the apply, which says exactly what changed. The rare
  exception: a late URGENT version of an item whose newer version left ``recent`` long ago
  goes on once, then loses everywhere it arrives (counted as ``early_stale``).
* NORMAL versions wait ``linger`` seconds so that a burst leaves as one PUSH per tier.
* Every push carries its hop count (HOP_PUSH, SPEC.md 4.4): 0 from the writer, one more
  at each relay, so the receiving broadcast tree can prefer shorter parents (``tree.py``).
  A linger burst from one source goes with the highest count among its versions.
* Everything else moves by pull. A pulled batch that changed our state, and a LOW or
  BACKGROUND local write, mark the tier *dirty* for the other peers; a dirty (peer, tier) gets a
  DIGEST announcement, which makes that peer pull at once (SPEC.md section 4, DIGEST). Marks
  are coalesced: at most one DIGEST per peer and tier every ``announce_every`` seconds.

``Relay`` holds the queues and makes the decisions without touching a socket or the store;
the daemon drives it (``run``) with the sessions it has, seen through :class:`Link`.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio

from protocol import Item, Priority, Tier

__all__ = ["ANNOUNCE_EVERY", "NORMAL_LINGER", "Link", "Relay", "RelayStats"]

NORMAL_LINGER = 0.02
ANNOUNCE_EVERY = 0.2
PUSH_CHUNK = 1000
RECENT_ITEMS = 65_536  # items whose highest version key the relay remembers


class Link(Protocol):
    """What the relay needs of a peer session."""

    send_tiers: frozenset[Tier]

    def push_items_nowait(self, tier: Tier, items: list[Item], hops: int = 0) -> bool: ...


@dataclass(slots=True)
class RelayStats:
    """Per-peer relay counters, shown in ``peers`` and exported as metrics."""

    relayed: int = 0  # versions received from another peer and pushed on to this one
    relay_dropped: int = 0  # relayed pushes dropped (this peer's queue was full)
    announced: int = 0  # DIGEST announcements sent to this peer


@dataclass(slots=True)
class _Pending:
    tier: Tier
    items: list[Item]
    source: bytes | None
    hops: int


@dataclass
class Relay:
    """The relay's state: the NORMAL linger queue and the dirty (peer, tier) marks."""

    linger: float = NORMAL_LINGER
    announce_every: float = ANNOUNCE_EVERY
    clock: Callable[[], float] = trio.current_time
    stats: dict[bytes, RelayStats] = field(default_factory=lambda: defaultdict(RelayStats))
    _lingering: list[_Pending] = field(default_factory=list)
    _linger_wake: trio.Event = field(default_factory=trio.Event)
    _dirty: dict[tuple[bytes, Tier], float] = field(default_factory=dict)  # -> marked at
    _last_sent: dict[tuple[bytes, Tier], float] = field(default_factory=dict)
    _dirty_wake: trio.Event = field(default_factory=trio.Event)
    # (tier, item id) -> highest (timestamp, origin) seen here lately; LRU order
    recent: OrderedDict[tuple[Tier, bytes], tuple[int, int]] = field(default_factory=OrderedDict)
    _early: OrderedDict[tuple[bytes, int, int], None] = field(default_factory=OrderedDict)
    early_stale: int = 0
    # (peer, item) -> True: not pushed to that peer (pruned broadcast trees, ``mesh/tree.py``)
    skip: Callable[[bytes, Item], bool] | None = None
    # (peer, items) pushed to that peer (the broadcast trees note who has what)
    sent: Callable[[bytes, list[Item]], None] | None = None

    # -- decisions ------------------------------------------------------------------------

    @staticmethod
    def targets(links: Mapping[bytes, Link], tier: Tier, source: bytes | None) -> list[bytes]:
        """The peers a version of ``tier`` from ``source`` goes to: all others that take it."""
        return [pid for pid, link in links.items() if pid != source and tier in link.send_tiers]

    def local_write(self, links: Mapping[bytes, Link], item: Item) -> None:
        """A fresh local write: pushed, lingered or announced according to its priority."""
        self._remember(item)
        self._route(links, item.tier, [item], None, 0)

    def received(
        self,
        links: Mapping[bytes, Link],
        tier: Tier,
        source: bytes,
        items: tuple[Item, ...],
        hops: int = 0,
    ) -> None:
        """A push that crossed ``hops`` sessions before ours arrived, not yet applied: send
        on at once (one hop further) what cannot lose here."""
        fresh = [i for i in items if i.priority >= Priority.HIGH and self._newer(i)]
        for item in fresh:
            self._remember(item)
            self._early[(item.item_id, item.timestamp_ns, item.origin)] = None
            if len(self._early) > RECENT_ITEMS:
                self._early.popitem(last=False)
        if fresh:
            self._push(links, tier, fresh, source, hops + 1)

    def applied(
        self,
        links: Mapping[bytes, Link],
        tier: Tier,
        source: bytes,
        changed: list[Item] | None,
        hops: int = 0,
    ) -> None:
        """A batch from ``source`` changed our state: ``changed`` for a push (that crossed
        ``hops`` sessions before ours), None for a pull."""
        if changed is None:
            self.mark_dirty(self.targets(links, tier, source), tier)
            return
        later = []
        for item in changed:
            self._remember(item)
            if self._early.pop((item.item_id, item.timestamp_ns, item.origin), 0) is None:
                continue  # went on before the apply
            later.append(item)
        if later:
            self._route(links, tier, later, source, hops + 1)

    def settled(self, items: tuple[Item, ...]) -> None:
        """A PUSH's apply finished: early sends that changed nothing here were stale."""
        for item in items:
            if self._early.pop((item.item_id, item.timestamp_ns, item.origin), 0) is None:
                self.early_stale += 1

    def _newer(self, item: Item) -> bool:
        seen = self.recent.get((item.tier, item.item_id))
        return seen is None or (item.timestamp_ns, item.origin) > seen

    def _remember(self, item: Item) -> None:
        key = (item.tier, item.item_id)
        version = (item.timestamp_ns, item.origin)
        seen = self.recent.pop(key, None)
        self.recent[key] = version if seen is None or version > seen else seen
        if len(self.recent) > RECENT_ITEMS:
            self.recent.popitem(last=False)

    def session_opened(self, links: Mapping[bytes, Link], peer: bytes) -> None:
        """A new session: tell the peer where we are on every tier it receives."""
        link = links.get(peer)
        if link is not None:
            for tier in link.send_tiers:
                self.mark_dirty([peer], tier)

    def mark_dirty(self, peers: Iterable[bytes], tier: Tier) -> None:
        now = self.clock()
        for peer in peers:
            self._dirty.setdefault((peer, tier), now)
        self._dirty_wake.set()

    def forget(self, peer: bytes) -> None:
        """A session ended: its marks go (a new session announces everything anyway)."""
        for key in [k for k in self._dirty if k[0] == peer]:
            del self._dirty[key]

    def _route(
        self,
        links: Mapping[bytes, Link],
        tier: Tier,
        items: list[Item],
        source: bytes | None,
        hops: int,
    ) -> None:
        now = [i for i in items if i.priority >= Priority.HIGH]
        later = [i for i in items if i.priority == Priority.NORMAL]
        if now:
            self._push(links, tier, now, source, hops)
        if later:
            self._lingering.append(_Pending(tier, later, source, hops))
            self._linger_wake.set()
        if len(now) + len(later) < len(items):  # LOW and BACKGROUND ride the pull
            self.mark_dirty(self.targets(links, tier, source), tier)

    def _push(
        self,
        links: Mapping[bytes, Link],
        tier: Tier,
        items: list[Item],
        source: bytes | None,
        hops: int,
    ) -> None:
        for pid in self.targets(links, tier, source):
            link = links[pid]
            mine = items if self.skip is None else [i for i in items if not self.skip(pid, i)]
            for start in range(0, len(mine), PUSH_CHUNK):
                chunk = mine[start : start + PUSH_CHUNK]
                sent = link.push_items_nowait(tier, chunk, hops)
                if sent and self.sent is not None:
                    self.sent(pid, chunk)
                if source is not None:
                    stats = self.stats[pid]
                    if sent:
                        stats.relayed += len(chunk)
                    else:
                        stats.relay_dropped += len(chunk)

    def due(self, now: float) -> tuple[list[tuple[bytes, Tier]], float]:
        """The marks whose announcement may go now, and when the next one falls due."""
        ready: list[tuple[bytes, Tier]] = []
        wake = math.inf
        for key in list(self._dirty):
            at = self._last_sent.get(key, -math.inf) + self.announce_every
            if at <= now:
                ready.append(key)
                del self._dirty[key]
                self._last_sent[key] = now
            else:
                wake = min(wake, at)
        return ready, wake

    # -- driving --------------------------------------------------------------------------

    async def run_linger(self, links: Callable[[], Mapping[bytes, Link]]) -> None:
        """Push the NORMAL versions in bursts, ``linger`` after the first of a burst."""
        while True:
            await self._linger_wake.wait()
            await trio.sleep(self.linger)
            self._linger_wake = trio.Event()
            pending, self._lingering = self._lingering, []
            current = links()
            by_key: dict[tuple[Tier, bytes | None], list[Item]] = defaultdict(list)
            hops: dict[tuple[Tier, bytes | None], int] = defaultdict(int)
            for p in pending:
                by_key[(p.tier, p.source)].extend(p.items)
                hops[(p.tier, p.source)] = max(hops[(p.tier, p.source)], p.hops)
            for (tier, source), items in by_key.items():
                self._push(current, tier, items, source, hops[(tier, source)])

    async def run_announcer(self, announce: Callable[[bytes, Tier], Awaitable[bool]]) -> None:
        """Send the DIGEST of each due (peer, tier), at most one per ``announce_every``."""
        while True:
            ready, wake = self.due(self.clock())
            for peer, tier in ready:
                if await announce(peer, tier):
                    self.stats[peer].announced += 1
            if self._dirty:
                with trio.move_on_after(max(0.0, wake - self.clock())):
                    await self._dirty_wake.wait()
            else:
                await self._dirty_wake.wait()
            self._dirty_wake = trio.Event()
