"""Broadcast trees for URGENT/HIGH pushes: flood once, then follow the shortest paths seen.

Theory of operation (SPEC.md 4.3, PRUNE; Plumtree's eager/lazy idea, simplified). Relay
floods a fresh URGENT/HIGH version to every other peer, so every link carries it once in
some direction: about N x (degree - 1) pushes per write. Most are duplicates. A node that
receives a push of origin O that changed nothing (it had the version from another peer
first) sends that peer ``PRUNE(O)``; the peer stops pushing O's versions to it eagerly
(``skip``). What remains of the flood is the tree of first arrivals from O: N - 1 pushes
per write and the fastest paths. Most prunes need no frame: a node that received a
version from a peer never pushes that origin to it again (the peer has it first), so on
a link both ends pushed over, both ends learn it from each other's copy; PRUNE goes only
where that does not happen (a peer we did not push to, an old parent).

Fastest is not shortest: a path of many short links beats one long link, so first-arrival
trees grow deep. Every push carries its hop count (HOP_PUSH, SPEC.md 4.4), and a duplicate
whose count is below the current parent's (by more than ``SHORTER_BY``) makes its sender
the parent and prunes the old one instead (Plumtree's optimisation): the tree moves
towards each node's BFS depth from O.

The tree heals itself: a node that gets one of O's urgent versions only by pull asks the
peer it pulled from for ``GRAFT(O)``; a node whose session ends re-grafts everything it
pruned with its other peers (its parent may have been the one that left), and prunes
expire after ``PRUNE_FOR`` on both ends at once (the next duplicate over that link is
pruned again), so a stale tree costs one flood, never a lost write: pulls and DIGEST
announcements still reach every node.

``Trees`` is the state and the decisions; the daemon (or the simulation) sends the frames
it returns and gives ``skip`` and ``sent`` to the relay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import protocol as P
from protocol import Item, Priority

__all__ = ["PRUNE_FOR", "SHORTER_BY", "Trees"]

PRUNE_FOR = 60.0
SHORTER_BY = 0  # a duplicate this many hops (or more) shorter than the parent's + 1 wins


@dataclass
class Trees:
    """Who asked us not to push which origins, and what we asked of whom."""

    clock: Callable[[], float] = time.monotonic
    prune_for: float = PRUNE_FOR
    # peer -> origin -> since when we do not push that origin's versions to it (it asked us
    # to stop, or it has them before us: it pushed them to us)
    pruned: dict[bytes, dict[int, float]] = field(default_factory=dict)
    # peer -> origin -> since when it does not push that origin to us (we asked, or we
    # pushed the origin's versions to it). Its side forgets after ``prune_for`` (``skip``),
    # so ours does too (``_asked``): a duplicate after that is pruned again, not ignored
    # forever.
    asked: dict[bytes, dict[int, float]] = field(default_factory=dict)
    # origin -> (the peer its urgent versions last came from first, their hop count then)
    parent: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    live: set[bytes] = field(default_factory=set)  # peers with an open session
    threshold: int = SHORTER_BY
    prunes_sent: int = 0
    grafts_sent: int = 0
    shortcuts: int = 0  # parents replaced by a peer on a shorter path

    def skip(self, peer: bytes, item: Item) -> bool:
        """The relay's filter: is ``item`` not to be pushed to ``peer`` eagerly?"""
        if item.priority < Priority.HIGH:
            return False
        origins = self.pruned.get(peer)
        if not origins:
            return False
        at = origins.get(item.origin)
        if at is None:
            return False
        if self.clock() - at >= self.prune_for:
            del origins[item.origin]
            return False
        return True

    def sent(self, peer: bytes, items: Iterable[Item]) -> None:
        """We pushed ``items`` to ``peer``: it will not push their origins back to us (it
        sees our copy), so a duplicate from it needs no PRUNE (see ``pushed``)."""
        origins = {i.origin for i in items if i.priority >= Priority.HIGH}
        if origins:
            now = self.clock()
            self.asked.setdefault(peer, {}).update(dict.fromkeys(origins, now))

    def _asked(self, peer: bytes, origin: int) -> bool:
        """Does ``peer`` still hold back ``origin``'s versions from us? (An entry older than
        ``prune_for`` has expired on its side: it pushes them again.)"""
        asked = self.asked.get(peer, {})
        at = asked.get(origin)
        if at is None:
            return False
        if self.clock() - at >= self.prune_for:
            del asked[origin]
            return False
        return True

    def on_prune(self, peer: bytes, frame: P.Prune) -> None:
        origins = self.pruned.setdefault(peer, {})
        if frame.graft:
            for origin in frame.origins:
                origins.pop(origin, None)
        else:
            now = self.clock()
            for origin in frame.origins:
                origins[origin] = now

    def pushed(
        self, peer: bytes, pushed: Iterable[Item], changed: Iterable[Item], hops: int
    ) -> list[tuple[bytes, P.Prune]]:
        """A push from ``peer`` that crossed ``hops`` sessions before ours was applied.

        Fresh urgent versions make ``peer`` their origin's parent (at ``hops``). A duplicate
        normally prunes ``peer``; but one that came by a path shorter than the parent's by
        more than ``threshold`` hops makes ``peer`` the parent instead, and the old parent
        is pruned (Plumtree's optimisation), so trees move towards BFS depth. Returns the
        PRUNE/GRAFT frames to send, with their peers.
        """
        fresh = {(i.item_id, i.timestamp_ns, i.origin) for i in changed}
        prune: dict[bytes, set[int]] = {}
        graft: set[int] = set()
        now = self.clock()
        for item in pushed:
            if item.priority < Priority.HIGH:
                continue
            origin = item.origin
            # ``peer`` has this origin's versions before us: never push them to it
            self.pruned.setdefault(peer, {})[origin] = now
            if (item.item_id, item.timestamp_ns, origin) in fresh:
                self.parent[origin] = (peer, hops)
                continue
            old = self.parent.get(origin)
            if old is not None and old[0] != peer and hops + self.threshold < old[1]:
                self.parent[origin] = (peer, hops)  # a shorter path: it becomes the parent
                self.shortcuts += 1
                if self._asked(peer, origin):
                    del self.asked[peer][origin]
                    graft.add(origin)
                if old[0] in self.live and not self._asked(old[0], origin):
                    prune.setdefault(old[0], set()).add(origin)
                continue
            if not self._asked(peer, origin):
                prune.setdefault(peer, set()).add(origin)
        out = []
        for target, origins in prune.items():
            self.asked.setdefault(target, {}).update(dict.fromkeys(origins, now))
            out.append(
                (target, P.Prune(graft=False, origins=tuple(sorted(origins))[: P.MAX_PRUNE]))
            )
            self.prunes_sent += 1
        if graft:
            out.append((peer, P.Prune(graft=True, origins=tuple(sorted(graft))[: P.MAX_PRUNE])))
            self.grafts_sent += 1
        return out

    def pulled(self, peer: bytes, items: Iterable[Item]) -> dict[bytes, P.Prune]:
        """Urgent versions reached us by pull: GRAFT their origins from everyone we pruned."""
        origins = {i.origin for i in items if i.priority >= Priority.HIGH}
        return self._graft(origins)

    def _graft(self, origins: set[int]) -> dict[bytes, P.Prune]:
        out = {}
        for peer, asked in self.asked.items():
            back = {o for o in asked.keys() & origins if self._asked(peer, o)}
            for origin in asked.keys() & origins:
                del asked[origin]  # grafted now, or expired: the peer pushes it again
            if back:
                out[peer] = P.Prune(graft=True, origins=tuple(sorted(back))[: P.MAX_PRUNE])
                self.grafts_sent += 1
        return out

    def opened(self, peer: bytes) -> None:
        """A new session starts with eager pushes both ways."""
        self.pruned.pop(peer, None)
        self.asked.pop(peer, None)
        self.live.add(peer)

    def closed(self, peer: bytes) -> dict[bytes, P.Prune]:
        """A session ended: it may have been our tree parent; re-graft what we pruned."""
        self.pruned.pop(peer, None)
        self.asked.pop(peer, None)
        self.live.discard(peer)
        for origin in [o for o, (p, _) in self.parent.items() if p == peer]:
            del self.parent[origin]
        everything: set[int] = set()
        for asked in self.asked.values():
            everything |= asked.keys()
        return self._graft(everything)
