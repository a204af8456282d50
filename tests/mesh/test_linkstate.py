"""Link-state broadcast trees (``meshsyncd/mesh/linkstate.py``, SPEC.md 4.5): records, the
BFS children, and what a push does when views agree or do not."""

from __future__ import annotations

import collections
import hashlib
import random

import protocol as P
from meshsyncd.mesh.linkstate import AHEAD_MS, ASK_EVERY, SETTLE, LinkState, forward_filter
from meshsyncd.mesh.tree import Trees
from protocol import Priority, Tier, short_id


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


WALL = 1_790_000_000_000


def _ids(n: int) -> list[bytes]:
    return [hashlib.sha256(b"ls-%d" % i).digest() for i in range(n)]


def _graph(n: int, seed: int) -> dict[int, set[int]]:
    """A ring with random chords: connected, with cycles and several equal-length paths."""
    rng = random.Random(seed)
    edges: dict[int, set[int]] = {i: set() for i in range(n)}
    for i in range(n):
        for j in ((i + 1) % n, rng.randrange(n)):
            if j != i:
                edges[i].add(j)
                edges[j].add(i)
    return edges


class Mesh:
    """N link states that exchanged their records (or not), and a push that follows them."""

    def __init__(self, edges: dict[int, set[int]]) -> None:
        self.edges = edges
        self.ids = _ids(len(edges))
        self.clock = Clock()
        self.nodes = [
            LinkState(node_id, clock=self.clock, wall_ms=lambda: WALL) for node_id in self.ids
        ]
        self.trees = [Trees(clock=self.clock) for _ in self.ids]
        for i, node in enumerate(self.nodes):
            node.set_live(self.ids[j] for j in edges[i])
            for j in edges[i]:
                self.trees[i].opened(self.ids[j])

    def spread_records(self) -> None:
        """Every node's record reaches every other (as the gossip would, eventually)."""
        mine = [n.view() for n in self.nodes]
        for i, node in enumerate(self.nodes):
            for j, frames in enumerate(mine):
                if i != j:
                    for frame in frames:
                        node.on_links(self.ids[j], frame)

    def push(self, origin: int) -> collections.Counter[int]:
        """Copies each node receives of a fresh URGENT write of ``origin``, following each
        node's own decision (``forward_filter``) as the relay does."""
        item = P.Item(
            item_id=b"i" * 16, timestamp_ns=1, origin=short_id(self.ids[origin]),
            tier=Tier.WORKING, op=P.Op.INSERT, priority=Priority.URGENT, payload=b"{}",
        )  # fmt: skip
        copies: collections.Counter[int] = collections.Counter()
        queue = collections.deque([(origin, None)])
        seen = {origin}
        while queue:
            at, source = queue.popleft()
            skip = forward_filter(self.nodes[at], self.trees[at])
            for peer in sorted(self.edges[at]):
                if peer == source or skip(self.ids[peer], item):
                    continue
                copies[peer] += 1
                if peer not in seen:  # a version goes on only where it changed the state
                    seen.add(peer)
                    queue.append((peer, at))
        return copies


def test_views_agree_every_node_gets_exactly_one_copy() -> None:
    """With one view everywhere, a write from any origin reaches every node once: N - 1
    pushes, and the tree follows shortest paths (the parent is one level up)."""
    for seed in range(3):
        mesh = Mesh(_graph(40, seed))
        mesh.spread_records()
        for origin in (0, 7, 39):
            copies = mesh.push(origin)
            assert set(copies) == set(range(40)) - {origin}
            assert all(n == 1 for n in copies.values()), copies


def test_the_parent_is_the_lowest_id_neighbour_one_level_up() -> None:
    # a square 0-1-3-2-0: from 0, node 3 is two hops away through 1 or 2
    edges = {0: {1, 2}, 1: {0, 3}, 2: {0, 3}, 3: {1, 2}}
    mesh = Mesh(edges)
    mesh.spread_records()
    s = [short_id(i) for i in mesh.ids]
    parent = min((1, 2), key=lambda k: s[k])
    other = 3 - parent
    origin = s[0]
    assert mesh.nodes[0].children(origin) == frozenset({s[1], s[2]})
    assert mesh.nodes[parent].children(origin) == frozenset({s[3]})
    assert mesh.nodes[other].children(origin) == frozenset()
    assert mesh.nodes[3].children(origin) == frozenset()


def test_no_view_floods_as_before() -> None:
    """No records at all: no verdict, so the relay floods (tree.py): every link carries it."""
    edges = _graph(20, 1)
    mesh = Mesh(edges)
    copies = mesh.push(0)
    assert set(copies) == set(range(1, 20))
    assert sum(copies.values()) > 19  # the flood's duplicates


def test_a_stale_view_still_delivers() -> None:
    """A session nobody has a record of yet is pushed over (flood fallback); a node whose
    record lags still gets every write, at worst twice."""
    edges = _graph(30, 2)
    mesh = Mesh(edges)
    mesh.spread_records()
    # a new session 3-17 (both ends know it; nobody has their new records yet)
    a, b = 3, 17 if 17 not in edges[3] else 18
    edges[a].add(b)
    edges[b].add(a)
    for k in (a, b):
        mesh.nodes[k].set_live(mesh.ids[j] for j in edges[k])
        mesh.trees[k].opened(mesh.ids[b if k == a else a])
    for origin in (0, a, b):
        copies = mesh.push(origin)
        assert set(copies) == set(range(30)) - {origin}
        assert max(copies.values()) <= 2
    # node 5 misses one record entirely (its view lacks node 9): trees still reach all
    del mesh.nodes[5].records[short_id(mesh.ids[9])]
    mesh.nodes[5].generation += 1
    copies = mesh.push(0)
    assert set(copies) == set(range(1, 30))


def test_records_from_the_future_are_refused_and_counted() -> None:
    clock = Clock()
    me, peer, other = _ids(3)
    ls = LinkState(me, clock=clock, wall_ms=lambda: WALL)
    good = P.LinkRecord(other, WALL, (short_id(peer),))
    future = P.LinkRecord(peer, WALL + AHEAD_MS + 1, ())
    records = tuple(sorted((good, future), key=lambda r: r.node_id))
    assert ls.on_links(peer, P.Links(records=records)) == (0, [])
    assert ls.stats.refused == {peer: 1}
    assert ls.records == {}  # nothing changed, not even the good record
    assert ls.on_links(peer, P.Links(records=(good,)))[0] == 1


def test_asks_are_answered_once_per_interval() -> None:
    clock = Clock()
    me, peer, other = _ids(3)
    ls = LinkState(me, clock=clock, wall_ms=lambda: WALL)
    ls.set_live([peer, other])
    _, answer = ls.on_links(peer, P.Links(records=()))
    assert [r.node_id for f in answer for r in f.records] == [me]
    assert ls.on_links(peer, P.Links(records=()))[1] == []  # too soon: refused
    assert ls.stats.refused == {peer: 1}
    clock.now += ASK_EVERY
    assert ls.on_links(peer, P.Links(records=()))[1] != []


def test_untrusted_records_are_skipped_and_ours_outranked() -> None:
    clock = Clock()
    me, peer, stranger = _ids(3)
    ls = LinkState(me, clock=clock, wall_ms=lambda: WALL, trusted=lambda pid: pid == peer)
    stale_self = P.LinkRecord(me, WALL + 50, ())
    strange = P.LinkRecord(stranger, WALL, ())
    frame = P.Links(records=tuple(sorted((stale_self, strange), key=lambda r: r.node_id)))
    assert ls.on_links(peer, frame)[0] == 0
    assert ls.stats.untrusted == 1 and short_id(stranger) not in ls.records
    ls.set_live([peer])
    ls.tick([peer])  # a previous run's record of ours: the new one outranks it
    assert ls.records[short_id(me)].version > WALL + 50
    assert ls.stats.refutations == 1


def test_lost_sessions_go_out_at_once_new_ones_once_settled() -> None:
    clock = Clock()
    me, a, b = _ids(3)
    ls = LinkState(me, clock=clock, wall_ms=lambda: WALL)
    ls.set_live([a])
    first = ls.tick([a])  # the first record goes out at once
    assert first[a][0].records[0].peers == (short_id(a),)
    ls.set_live([a, b])
    assert ls.tick([a, b]) == {}  # an added session waits for the sessions to settle
    clock.now += SETTLE
    out = ls.tick([a, b])
    assert set(out[a][0].records[0].peers) == {short_id(a), short_id(b)}
    ls.set_live([b])
    out = ls.tick([b])  # a lost one does not wait
    assert out[b][0].records[0].peers == (short_id(b),)


def test_news_goes_on_to_other_peers_never_back() -> None:
    clock = Clock()
    me, a, b, other = _ids(4)
    ls = LinkState(me, clock=clock, wall_ms=lambda: WALL)
    ls.set_live([a, b])
    ls.tick([a, b])
    record = P.LinkRecord(other, WALL, (short_id(a),))
    assert ls.on_links(a, P.Links(records=(record,)))[0] == 1
    out = ls.tick([a, b])
    assert a not in out and out[b] == [P.Links(records=(record,))]
    assert ls.on_links(b, P.Links(records=(record,)))[0] == 0  # not newer: not news
    assert ls.tick([a, b]) == {}
