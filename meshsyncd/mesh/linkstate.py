"""Link state: every node's session peers, and each origin's broadcast tree computed from them.

Theory of operation (SPEC.md 4.5, LINKS). Plumtree-like trees (``tree.py``) learn an
origin's tree from its first write, which floods every link (N x degree pushes) and again
after any change. Here each node knows the session graph beforehand, so even an origin's
first URGENT write goes down a tree: N - 1 pushes when the views agree.

* **Records.** A node's record is the set of its live sessions (short ids) that carry
  every tier both ways, under its own version (``max(wall ms, previous + 1)``), made anew
  at the next tick when a session was lost, and once its sessions settled when sessions
  were only added (``SETTLE``, at most ``SETTLE_MAX`` late), so a burst is one version.
  Only the node makes its record; the others keep the highest version per trusted id and
  pass a new one on at their next tick to their other peers, never back (membership's
  GOSSIP rules: ``membership.py``). A node whose view is incomplete (fewer records than
  members it believes alive) asks a peer for its whole view (an empty LINKS) when a
  session opens, and every ``ASK_EVERY`` while it stays incomplete; a settled mesh asks
  nothing. A record of ours from elsewhere with a version
  at or above our own (a previous run's) makes us republish above it. A frame holding a
  record from more than ``AHEAD_MS`` in the future, or an ask sooner than ``ASK_EVERY``
  after the last one answered, is refused, counted and logged naming the peer.
* **The graph** has an edge A-B only when A's record lists B and B's lists A (our own
  side: our live sessions now), so a stale or forged record cannot invent a link.
* **Trees.** For a fresh URGENT/HIGH version of origin O, the tree is the breadth-first
  tree of that graph rooted at O, deterministic: neighbours in id order, a node's parent
  its lowest-id neighbour one level up. Our children in it get the push; a session peer
  the tree does not cover (no symmetric edge yet) is left to ``tree.py`` (flood,
  prunes); so is every peer when we know no record of O or O's tree does not reach us.
  Trees are cached per (origin, graph generation). Views that disagree for a moment cost
  a duplicate (pruned as before) or a delivery by pull and DIGEST, never a lost write.

``LinkState`` is the state and the decisions; it never touches a socket. The daemon (or
the simulation) hands it session events and LINKS frames and sends what it returns;
``forward_filter`` gives the relay its ``skip``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

import protocol as P
from protocol import Item, LinkRecord, Priority, short_id

from ..identity import short_text_of
from .tree import Trees

__all__ = ["AHEAD_MS", "ASK_EVERY", "SETTLE", "LinkState", "LinkStats", "forward_filter"]

AHEAD_MS = 600_000  # a record this far ahead of our wall clock would pin its node's links
SETTLE = 1.0  # our record goes out once our sessions stayed the same this long...
SETTLE_MAX = 5.0  # ...or this long after the first change it would carry
RECENT = 5.0  # trees also cover the children we had in our view this long ago
ASK_EVERY = 10.0  # an incomplete view asks a peer for its whole view this often; a peer's
# asks are answered this often at most (an answer is the whole view: asks must not amplify)

log: Any = structlog.get_logger("meshsyncd.linkstate")


@dataclass(slots=True)
class LinkStats:
    """Counters for the operator and the simulation (link-state traffic is not free)."""

    refused: dict[bytes, int] = field(default_factory=dict)  # by peer
    frames_in: int = 0
    records_in: int = 0
    changes: int = 0  # records that replaced ours
    untrusted: int = 0  # records skipped: their node is not trusted here
    frames_out: int = 0
    records_out: int = 0
    bytes_out: int = 0  # LINKS frames as sent, headers included
    refutations: int = 0
    published: int = 0  # versions of our own record
    trees: int = 0  # trees computed (cache misses)


class LinkState:
    """Our view of the session graph and the trees it implies (see module doc)."""

    def __init__(
        self,
        node_id: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        trusted: Callable[[bytes], bool] = lambda _: True,
        expected: Callable[[], int] = lambda: 0,
    ) -> None:
        self.node_id = node_id
        self.me = short_id(node_id)
        self.clock = clock
        self.wall_ms = wall_ms
        self.trusted = trusted
        self.expected = expected  # how many records a complete view holds (ours included)
        self.records: dict[int, LinkRecord] = {}  # by short id; ours once published
        self.live: set[int] = set()  # our sessions that count (short ids), now
        self.live_since = clock()  # when ``live`` last changed
        self.unsent_since: float | None = None  # first change ``published`` lacks
        self.asked_at = -ASK_EVERY  # when we last asked a peer for its view
        self.answered: dict[bytes, float] = {}  # peer -> when we last sent it our view
        self.version = 0
        self.published: tuple[int, ...] | None = None
        # short id -> the peers it came from (they have it) since our last tick
        self.pending: dict[int, set[bytes]] = {}
        self.generation = 0
        self._adj: tuple[int, dict[int, list[int]]] | None = None
        self._base_adj: tuple[int, dict[int, list[int]]] | None = None
        # (since, generation, records, live): our views of the last ``RECENT`` seconds
        self._history: deque[tuple[float, int, dict[int, LinkRecord], frozenset[int]]]
        self._history = deque()
        self._trees: dict[int, tuple[int, int, frozenset[int] | None]] = {}
        self.stats = LinkStats()

    # -- our own record ---------------------------------------------------------------------

    def set_live(self, peers: Iterable[bytes]) -> None:
        """Our sessions that count for the graph changed (or may have): note them now; the
        record goes out at the next ``tick``."""
        live = {short_id(p) for p in peers}
        live.discard(self.me)
        if live != self.live:
            self.live = live
            self.live_since = self.clock()
            self.generation += 1

    def _publish(self, *, now: bool = False) -> None:
        """Make our record anew if our sessions changed. A lost session goes out at once
        (until it is known, trees may count on it: a gap until the next pull); new ones
        once our sessions settled (``SETTLE``; at most ``SETTLE_MAX`` late), so a joining
        node's burst of sessions is one version, not ten (every version costs a record on
        every link of the mesh), while an unknown session only costs a duplicate."""
        peers = tuple(sorted(self.live)[: P.MAX_LINK_PEERS])
        if peers == self.published:
            self.unsent_since = None
            return
        t = self.clock()
        if self.unsent_since is None:
            self.unsent_since = t
        settling = t - self.live_since < SETTLE and t - self.unsent_since < SETTLE_MAX
        added_only = self.published is not None and set(self.published) <= self.live
        if settling and added_only and not now:
            return  # a new session costs a duplicate until known; a lost one, a gap
        self.unsent_since = None
        self.version = max(self.wall_ms(), self.version + 1)
        self.published = peers
        self.records[self.me] = LinkRecord(self.node_id, self.version, peers)
        self.pending[self.me] = set()
        self.stats.published += 1

    # -- records from peers -----------------------------------------------------------------

    def _refuse(self, peer: bytes, reason: str, **kw: Any) -> None:
        self.stats.refused[peer] = self.stats.refused.get(peer, 0) + 1
        log.warning("link records refused", peer=short_text_of(peer), reason=reason, **kw)

    def on_links(self, peer: bytes, frame: P.Links) -> tuple[int, list[P.Links]]:
        """Fold a LINKS frame from ``peer`` into our view; return how many records changed
        it, and the frames to answer with (our whole view, if the frame asked for it).

        A frame with a record from the future is refused whole (counted, logged naming the
        peer); nothing changes and the session goes on. So is an ask sooner than
        ``ASK_EVERY`` after the last one we answered for that peer.
        """
        if not frame.records:
            last = self.answered.get(peer)
            if last is not None and self.clock() - last < ASK_EVERY:
                self._refuse(peer, "asked for our link view again too soon")
                return 0, []
            self.answered[peer] = self.clock()
            return 0, self.view()
        self.stats.frames_in += 1
        self.stats.records_in += len(frame.records)
        limit = self.wall_ms() + AHEAD_MS
        for r in frame.records:
            if r.version > limit:
                self._refuse(
                    peer,
                    "a link record from the future",
                    node=short_text_of(r.node_id),
                    ahead_ms=r.version - limit + AHEAD_MS,
                )
                return 0, []
        changed = 0
        for r in frame.records:
            sid = short_id(r.node_id)
            if r.node_id == self.node_id:
                if r.version >= self.version:  # a previous run's: outrank it
                    self.version = r.version
                    self.published = None
                    self.stats.refutations += 1
                continue
            if sid == self.me or not self.trusted(r.node_id):
                self.stats.untrusted += 1
                continue
            known = self.records.get(sid)
            if known is not None and (r.version <= known.version or known.node_id != r.node_id):
                if known.version == r.version and sid in self.pending:
                    self.pending[sid].add(peer)  # it has this news: no need to send it
                continue
            self.records[sid] = r
            self.pending[sid] = {peer}
            changed += 1
        if changed:
            self.generation += 1
            self.stats.changes += changed
        return changed, []

    def forget(self, keep: Callable[[bytes], bool]) -> None:
        """Drop the records of nodes ``keep`` says no (no longer trusted)."""
        gone = [s for s, r in self.records.items() if s != self.me and not keep(r.node_id)]
        for sid in gone:
            del self.records[sid]
            self.pending.pop(sid, None)
        if gone:
            self.generation += 1

    # -- what to send -----------------------------------------------------------------------

    def view(self) -> list[P.Links]:
        """Our whole view (for a peer that asked)."""
        self._publish(now=True)
        return self._frames(sorted(self.records.values(), key=lambda r: r.node_id))

    def complete(self) -> bool:
        """Do we hold a record of every member we believe alive (as many, at least)?"""
        return len(self.records) >= self.expected()

    def opened(self, peer: bytes) -> list[P.Links]:
        """A session opened: ask for the peer's whole view if ours is incomplete (an empty
        LINKS asks), so a joining node learns the graph, and a settled mesh pays nothing."""
        self.answered.pop(peer, None)
        if self.complete():
            return []
        self.asked_at = self.clock()
        return [P.Links(records=())]

    def closed(self, peer: bytes) -> None:
        self.answered.pop(peer, None)

    def tick(self, connected: Collection[bytes]) -> dict[bytes, list[P.Links]]:
        """Publish our record if it changed and settled; return this tick's news per peer
        (and an ask, now and then, while our view is incomplete)."""
        self._publish()
        self._remember()
        out: dict[bytes, list[P.Links]] = {}
        if connected and self.clock() - self.asked_at >= ASK_EVERY and not self.complete():
            self.asked_at = self.clock()
            out[min(connected)] = [P.Links(records=())]
        if not self.pending:
            return out
        pending, self.pending = self.pending, {}
        news = sorted(
            ((self.records[s], had) for s, had in pending.items() if s in self.records),
            key=lambda rs: rs[0].node_id,
        )
        for peer in connected:
            mine = [r for r, had in news if peer not in had]
            if mine:
                out.setdefault(peer, []).extend(self._frames(mine))
        return out

    def _frames(self, records: list[LinkRecord]) -> list[P.Links]:
        step = P.MAX_LINK_RECORDS
        frames = [
            P.Links(records=tuple(records[i : i + step])) for i in range(0, len(records), step)
        ]
        self.stats.frames_out += len(frames)
        self.stats.records_out += len(records)
        self.stats.bytes_out += 7 * len(frames) + sum(len(r.wire) for r in records)
        return frames

    # -- trees ------------------------------------------------------------------------------

    def graph(self) -> dict[int, list[int]]:
        """Symmetric edges only (our side: our live sessions), neighbours in id order."""
        if self._adj is None or self._adj[0] != self.generation:
            self._adj = (self.generation, _graph(self.records, self.live, self.me))
        return self._adj[1]

    def _remember(self) -> None:
        """Keep the view as it was ``RECENT`` ago (see ``children``)."""
        now, history = self.clock(), self._history
        if not history or history[-1][1] != self.generation:
            history.append((now, self.generation, dict(self.records), frozenset(self.live)))
        while len(history) >= 2 and history[1][0] <= now - RECENT:
            history.popleft()

    def children(self, origin: int) -> frozenset[int] | None:
        """Our children in ``origin``'s tree; None if we cannot tell (unknown origin, or
        its tree does not reach us).

        While the graph is changing, nodes hold different views for a moment, and a node
        whose parent moved could be skipped by the old parent (new view) and the new one
        (old view) alike. So the children are those of our view now *and* of our view as
        it was ``RECENT`` ago: one of the two parents always pushes. A settled mesh has
        one view and pays nothing for this; a changing one pays a duplicate per moved
        parent.
        """
        base = self._history[0] if self._history else None
        base_gen = base[1] if base is not None else self.generation
        cached = self._trees.get(origin)
        if cached is not None and cached[:2] == (self.generation, base_gen):
            return cached[2]
        self.stats.trees += 1
        kids = _children(self.graph(), origin, self.me)
        if kids is not None and base is not None and base_gen != self.generation:
            if self._base_adj is None or self._base_adj[0] != base_gen:
                self._base_adj = (base_gen, _graph(base[2], base[3], self.me))
            kids |= _children(self._base_adj[1], origin, self.me) or frozenset()
        if len(self._trees) > 4096:
            self._trees.clear()
        self._trees[origin] = (self.generation, base_gen, kids)
        return kids

    def skip(self, peer: bytes, item: Item) -> bool | None:
        """The tree's verdict on pushing ``item`` to ``peer`` eagerly: True skip, False push,
        None no verdict (``tree.py`` decides: the peer or the origin is outside our view)."""
        if item.priority < Priority.HIGH:
            return None
        kids = self.children(item.origin)
        if kids is None:
            return None
        sid = short_id(peer)
        if sid not in self.live or self.me not in self.records.get(sid, _NONE).peers:
            return None  # no symmetric edge: a session the tree does not know yet
        return sid not in kids


_NONE = LinkRecord(bytes(32), 0, ())


def _graph(records: dict[int, LinkRecord], live: Collection[int], me: int) -> dict[int, list[int]]:
    """The symmetric edges of a view, neighbours in id order."""
    sets: dict[int, Collection[int]] = {s: set(r.peers) for s, r in records.items() if s != me}
    sets[me] = live
    return {a: sorted(b for b in peers if a in sets.get(b, ())) for a, peers in sets.items()}


def _children(adj: dict[int, list[int]], origin: int, me: int) -> frozenset[int] | None:
    """``me``'s children in the BFS tree of ``adj`` rooted at ``origin`` (neighbours in id
    order, a node's parent its lowest-id neighbour one level up); None if it has no place
    in that tree. The search stops at our level: our children's other candidate parents
    are all on it."""
    if origin not in adj:
        return None
    level = {origin: 0}
    frontier = [origin]
    while frontier and me not in level:
        nxt = []
        for node in frontier:
            for nb in adj[node]:
                if nb not in level:
                    level[nb] = level[node] + 1
                    nxt.append(nb)
        frontier = nxt
    if me not in level:
        return None
    mine = level[me]
    below = [nb for nb in adj[me] if nb not in level]  # unlabelled: one level below us
    return frozenset(nb for nb in below if next(z for z in adj[nb] if level.get(z) == mine) == me)


def forward_filter(links: LinkState, trees: Trees) -> Callable[[bytes, Item], bool]:
    """The relay's ``skip``: the link-state tree where it covers the peer, else the
    Plumtree-like prunes of ``tree.py``."""

    def skip(peer: bytes, item: Item) -> bool:
        verdict = links.skip(peer, item)
        return trees.skip(peer, item) if verdict is None else verdict

    return skip
