"""Membership decisions without a network (``meshsyncd/mesh/membership.py``, SPEC.md 4.3)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import protocol as P
from meshsyncd.config import PeerConfig
from meshsyncd.config.introduced import load_introduced
from meshsyncd.mesh.membership import Membership, tier_mask
from meshsyncd.mesh.tree import Trees
from protocol import Member, MemberKind, MemberState, Priority, Tier

ME, HUB, B, C, X = (bytes([n]) * 32 for n in (1, 2, 3, 4, 9))
ALL = frozenset(Tier)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _node(tmp_path: Path | None = None, **kw: object) -> tuple[Membership, Clock]:
    clock = Clock()
    m = Membership(ME, node_dir=tmp_path, clock=clock, wall_ms=lambda: 1000, rng=random.Random(1))
    peers = [
        PeerConfig(
            HUB, "10.0.0.1", 7700, frozenset({Tier.WORKING, Tier.SEMANTIC}), ALL, introducer=True
        ),
        PeerConfig(X, "10.0.0.9", 7700),  # configured by hand, not an introducer
    ]
    m.set_config(peers)
    return m, clock


def _vouch(*members: Member) -> P.Members:
    return P.Members(kind=MemberKind.VOUCH, members=tuple(sorted(members, key=lambda m: m.node_id)))


def test_introducer_vouches_after_ask_with_capped_grants(tmp_path: Path) -> None:
    m, _ = _node(tmp_path)
    assert isinstance(m.session_opened(HUB)[0], P.Members)  # ASK first
    added, removed = m.on_vouch(
        HUB,
        _vouch(
            Member(
                B, tiers=tier_mask(ALL), write_tiers=tier_mask({Tier.EPISODIC}), host="h", port=1
            ),
            Member(C, host="c.lan", port=2),
        ),
    )
    assert (sorted(added), removed) == ([B, C], [])
    grant = m.peer_config(B)
    assert grant is not None
    # never wider than what we grant the introducer itself
    assert grant.tiers == {Tier.WORKING, Tier.SEMANTIC}
    assert grant.write_tiers == {Tier.EPISODIC}
    assert m.introduced_by(B) == [HUB]
    assert set(load_introduced(tmp_path)) == {B, C}
    # a fresh VOUCH without C drops it (no introducer vouches any more)
    assert m.on_vouch(HUB, _vouch(Member(B))) == ([], [C])
    assert set(load_introduced(tmp_path)) == {B}


def test_refusals_change_nothing_and_are_counted() -> None:
    m, _ = _node()
    # a configured peer that is not an introducer, and an introducer we did not ask
    assert m.on_vouch(X, _vouch(Member(B))) == ([], [])
    assert m.on_vouch(HUB, _vouch(Member(B))) == ([], [])
    assert m.introduced == {}
    assert m.stats.refused == {X: 1, HUB: 1}
    m.session_opened(HUB)
    # the node itself and a hand-configured id are never taken from an introducer
    assert m.on_vouch(HUB, _vouch(Member(ME), Member(X), Member(B))) == ([B], [])
    assert m.stats.refused[HUB] == 3
    assert m.peer_config(X) == PeerConfig(X, "10.0.0.9", 7700)
    # an ASK from a stranger gets nothing
    assert m.on_ask(C) is None


def test_messages_contradicting_the_sender_are_protocol_errors() -> None:
    m, _ = _node()
    m.session_opened(HUB)
    with pytest.raises(P.BadFieldError):
        m.on_vouch(HUB, _vouch(Member(HUB), Member(B)))
    dead_self = P.Members(
        kind=MemberKind.GOSSIP, members=(Member(HUB, MemberState.DEAD, heartbeat=5),)
    )
    with pytest.raises(P.BadFieldError):
        m.on_gossip(HUB, dead_self)
    assert m.introduced == {} and HUB not in m.records


def test_gossip_never_adds_trust_and_death_spreads_then_rejoin() -> None:
    m, clock = _node()
    m.session_opened(HUB)
    m.on_vouch(HUB, _vouch(Member(B, host="b", port=1)))
    gossip = P.Members(
        kind=MemberKind.GOSSIP,
        members=(Member(B, heartbeat=10, host="moved", port=9), Member(C, heartbeat=10)),
    )
    assert m.on_gossip(HUB, gossip) == 1
    assert C not in m.records  # not trusted: skipped
    assert m.address(B) == ("moved", 9)
    out = m.tick([HUB, X])
    assert list(out) == [X]  # never back to where it came from
    # B had a session with us and lost it: DEAD after the timeout, spread to everyone
    m.session_opened(B)
    m.session_closed(B)
    clock.now += 10
    out = m.tick([HUB, X])
    assert m.records[B].state == MemberState.DEAD and m.stats.deaths == 1
    assert {r.node_id: r.state for r in out[HUB].members} == {B: MemberState.DEAD}
    assert m.wanted([HUB]) == [B]  # dead: dialled only as the occasional retry
    assert m.retry is not None and m.retry[0] == B
    # a higher heartbeat brings it back
    back = P.Members(kind=MemberKind.GOSSIP, members=(Member(B, heartbeat=11),))
    assert m.on_gossip(X, back) == 1 and m.alive(B)


def test_told_it_is_dead_a_node_refutes() -> None:
    m, _ = _node()
    me = m.records[ME].heartbeat
    m.on_gossip(
        X, P.Members(kind=MemberKind.GOSSIP, members=(Member(ME, MemberState.DEAD, heartbeat=me),))
    )
    assert m.records[ME].heartbeat > me and m.stats.refutations == 1
    assert ME in {r.node_id for r in m.tick([X])[X].members}


def test_a_heartbeat_far_ahead_of_our_clock_is_refused() -> None:
    """A record stamped past our clock's horizon would pin its member (or, about us, push
    our own heartbeat past u64 when we refute it): refused, counted, nothing changes."""
    m, _ = _node()
    m.session_opened(HUB)
    m.on_vouch(HUB, _vouch(Member(B, host="b", port=1)))
    m.on_gossip(HUB, P.Members(kind=MemberKind.GOSSIP, members=(Member(B, heartbeat=10),)))
    me, b = m.records[ME].heartbeat, m.records[B].heartbeat
    top = (1 << 64) - 1
    far = P.Members(
        kind=MemberKind.GOSSIP,
        members=(Member(ME, MemberState.DEAD, heartbeat=top), Member(B, heartbeat=top)),
    )
    assert m.on_gossip(X, far) == 0
    assert (m.records[ME].heartbeat, m.records[B].heartbeat) == (me, b)
    assert m.stats.refutations == 0 and m.stats.refused[X] == 2
    assert ME not in {
        r.node_id for r in m.tick([X]).get(X, P.Members(kind=MemberKind.GOSSIP, members=())).members
    }


def test_fan_out_is_bounded_and_configured_peers_count_first() -> None:
    m, _ = _node()
    m.max_peers = 3
    m.session_opened(HUB)
    members = [bytes([n]) * 32 for n in range(20, 60)]
    m.on_vouch(HUB, _vouch(*(Member(n) for n in members)))
    wanted = m.wanted([HUB])
    assert len(wanted) == 2  # 3 slots, one taken by the configured introducer
    assert len(m.wanted([HUB, X])) == 1
    assert m.wanted([HUB]) == wanted  # stable: the random long link is kept
    assert m.accepts(X, members) and not m.accepts(members[10], members[11:])


def test_accepted_sessions_count_towards_max_peers_and_ring_links_come_first() -> None:
    """max_peers bounds every live session; a full node refuses far links, never the ring."""
    m, _ = _node()
    m.max_peers = 6
    m.session_opened(HUB)
    members = [bytes([n]) * 32 for n in range(20, 60)]
    m.on_vouch(HUB, _vouch(*(Member(n) for n in members)))
    after, before = m.ring()  # ME is 0x01..: successors 20, 21; predecessors 59, 58
    assert after == members[:2] and before == members[:-3:-1]
    connected = [HUB, members[5], members[6], members[7]]
    # 4 sessions and 4 ring slots kept for the neighbours: no room for a far link
    assert not m.accepts(members[10], connected)
    assert m.accepts(members[10], [HUB])  # 1 session + 4 ring slots: room for one
    assert m.accepts(members[0], connected)  # a ring neighbour always gets in
    # one over the cap: a far link goes, the one we did not dial first; never the ring
    over = [*connected, members[0], members[1], members[-1]]
    assert m.shed(over, dialled={members[5], members[6]}) == [members[7]]
    assert m.shed(connected, dialled=set()) == []


def test_trees_prune_duplicates_and_regraft_on_loss() -> None:
    trees = Trees(clock=Clock())
    item = P.Item(
        item_id=b"i" * 16, timestamp_ns=1, origin=7, tier=Tier.WORKING, op=P.Op.INSERT,
        priority=Priority.URGENT, payload=b"{}",
    )  # fmt: skip
    [(to, prune)] = trees.pushed(B, [item], changed=[], hops=0)
    assert (to, prune) == (B, P.Prune(graft=False, origins=(7,)))
    assert trees.pushed(B, [item], changed=[], hops=0) == []  # asked once
    trees.on_prune(C, prune)
    assert trees.skip(C, item)  # C asked us
    assert trees.skip(B, item)  # B pushed it to us: it has 7's versions before us
    # our session with another peer ends: what we pruned at B is grafted back
    assert trees.closed(X) == {B: P.Prune(graft=True, origins=(7,))}


def test_trees_prune_again_once_a_prune_expired() -> None:
    """A prune lasts ``prune_for`` on the pruned side (``skip``); after it the peer pushes
    that origin again, and its next duplicate must be pruned again (it was ignored forever:
    we still believed the peer held back)."""
    clock = Clock()
    trees = Trees(clock=clock)
    trees.opened(B)
    item = P.Item(
        item_id=b"i" * 16, timestamp_ns=1, origin=7, tier=Tier.WORKING, op=P.Op.INSERT,
        priority=Priority.URGENT, payload=b"{}",
    )  # fmt: skip
    prune = P.Prune(graft=False, origins=(7,))
    assert trees.pushed(B, [item], changed=[], hops=1) == [(B, prune)]
    clock.now = trees.prune_for - 1
    assert trees.pushed(B, [item], changed=[], hops=1) == []  # B's copy crossed our PRUNE
    clock.now = trees.prune_for + 1  # B's prune expired: it pushes 7 again
    assert trees.pushed(B, [item], changed=[], hops=1) == [(B, prune)]
    assert trees.prunes_sent == 2
    # an expired ask is not grafted back either (B pushes already)
    clock.now = 3 * trees.prune_for
    assert trees.closed(X) == {}


def test_trees_prefer_a_parent_on_a_shorter_path() -> None:
    """Plumtree's optimisation: a duplicate with fewer hops than the parent's takes its place."""
    trees = Trees(clock=Clock())
    for peer in (B, C, X):
        trees.opened(peer)

    def urgent(ts: int) -> P.Item:
        return P.Item(
            item_id=b"i" * 16, timestamp_ns=ts, origin=7, tier=Tier.WORKING, op=P.Op.INSERT,
            priority=Priority.URGENT, payload=b"{}",
        )  # fmt: skip

    item = urgent(1)
    assert trees.pushed(B, [item], changed=[item], hops=5) == []  # first: B is the parent
    assert trees.parent[7] == (B, 5)
    # a duplicate as long as the parent's path: its sender is pruned, as before
    assert trees.pushed(X, [item], changed=[], hops=5) == [(X, P.Prune(graft=False, origins=(7,)))]
    # a duplicate on a shorter path: C becomes the parent, the old parent B is pruned
    assert trees.pushed(C, [item], changed=[], hops=2) == [(B, P.Prune(graft=False, origins=(7,)))]
    assert trees.parent[7] == (C, 2) and trees.shortcuts == 1
    # we never push 7's versions to a peer that pushed them to us (it has them first)
    assert all(trees.skip(p, item) for p in (B, C, X))
    # the next version comes from C only; a late copy from B changes nothing more
    later = urgent(2)
    assert trees.pushed(C, [later], changed=[later], hops=2) == []
    assert trees.pushed(B, [later], changed=[], hops=4) == []
    # a peer we had pruned that turns out to be shorter is grafted back
    assert trees.pushed(X, [later], changed=[], hops=0) == [
        (C, P.Prune(graft=False, origins=(7,))),
        (X, P.Prune(graft=True, origins=(7,))),
    ]


def test_trees_need_no_prune_where_both_ends_pushed() -> None:
    """A duplicate from a peer we pushed the same version to: each end sees the other's
    copy and stops pushing that origin to it; no PRUNE frame either way."""
    trees = Trees(clock=Clock())
    item = P.Item(
        item_id=b"i" * 16, timestamp_ns=1, origin=7, tier=Tier.WORKING, op=P.Op.INSERT,
        priority=Priority.URGENT, payload=b"{}",
    )  # fmt: skip
    trees.opened(B)
    trees.opened(C)
    assert trees.pushed(B, [item], changed=[item], hops=1) == []  # B is the parent
    trees.sent(C, [item])  # the relay sent it on to C ...
    assert trees.pushed(C, [item], changed=[], hops=1) == []  # ... which had it already
    assert trees.skip(C, item) and trees.prunes_sent == 0
