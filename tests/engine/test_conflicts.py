"""True conflicts (SPEC.md section 2.2): bases decide what is logged, never who wins.

Real stores and engines; "sync" is a pull both ways through the wire codec. A partition is
simply two nodes writing before they pull from each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from enginekit import Node, Wall, pull

import protocol as P
from meshsyncd.resolve import ResolveError, resolve_conflict
from meshsyncd.store import Store
from protocol import Item, Op, Tier

T = Tier.EPISODIC
MakeNode = Callable[..., Node]
NAME = P.name_block(("agents", "alden"), "units")
IID = P.name_id(NAME)


def sync(*nodes: Node) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b:
                pull(a, b, T)


def exchange(a: Node, b: Node) -> None:
    """Both sides see each other's write: b pulls before a's version can be overwritten."""
    pull(b, a, T)
    pull(a, b, T)


def put(node: Node, value: bytes, op: Op = Op.UPDATE) -> Item:
    node.wall.ns += 1_000_000
    return node.engine.write(T, IID, op, b"" if op == Op.DELETE else value, name=NAME)


def test_sequential_writes_across_nodes_log_no_conflict(make_node: MakeNode) -> None:
    wall = Wall()
    a, b, c = make_node(1, wall=wall), make_node(2, wall=wall), make_node(3, wall=wall)
    put(a, b'"metric"', Op.INSERT)
    sync(a, b)
    put(b, b'"imperial"')  # 12 s later in the issue: an overwrite, not a conflict
    sync(a, b)
    put(a, b"", Op.DELETE)  # and a later delete
    sync(a, b)
    pull(c, b, T)  # c gets the newest first, then every older version late, from a
    pull(c, a, T)
    for node in (a, b, c):
        assert node.store.conflicts() == []
    assert a.engine.get(T, IID).deleted  # type: ignore[union-attr]


def test_an_old_version_arriving_late_is_not_a_conflict(make_node: MakeNode) -> None:
    wall = Wall()
    a, b, c = make_node(1, wall=wall), make_node(2, wall=wall), make_node(3, wall=wall)
    first = put(a, b"1", Op.INSERT)
    pull(b, a, T)
    second = put(b, b"2")
    assert second.base == first.key
    pull(c, b, T)
    c.store.apply(T, [first])  # a repair or another path delivers the older one later
    c.store.apply(T, [second, first])
    assert c.store.conflicts() == []


def test_concurrent_writes_log_one_entry_with_the_losing_value_everywhere(
    make_node: MakeNode,
) -> None:
    wall = Wall()
    a, b, c = make_node(1, wall=wall), make_node(2, wall=wall), make_node(3, wall=wall)
    put(a, b'"metric"', Op.INSERT)
    sync(a, b, c)
    # Partition: a and b both write on top of the same version, unaware of each other.
    lost = put(a, b'"celsius"')
    won = put(b, b'"fahrenheit"')
    assert lost.base == won.base and won.key > lost.key
    pull(c, a, T)  # c sees the loser first, then the winner overwrites it
    pull(c, b, T)
    exchange(a, b)  # b sees the loser arrive after the winner
    sync(a, b, c)
    sync(a, b, c)  # resent batches, relays: still one entry
    for node in (a, b, c):
        node.restart()
        pull(node, b if node is not b else a, T)
    for node in (a, b, c):
        (entry,) = node.store.conflicts(values=True)
        assert (entry.winner, entry.loser) == (won.key, lost.key)
        assert (entry.winner_op, entry.loser_op) == (Op.UPDATE, Op.UPDATE)
        assert entry.loser_value == b'"celsius"' and entry.winner_value == b'"fahrenheit"'
        assert entry.name == P.Name(("agents", "alden"), "units") and entry.tier == T
        assert node.engine.get(T, IID).value == b'"fahrenheit"'  # type: ignore[union-attr]
    assert a.store.conflicts(namespace="agents")[0].id == a.store.conflicts()[0].id
    assert a.store.conflicts(namespace="agent") == a.store.conflicts(namespace="kb") == []


def test_a_concurrent_delete_loses_and_is_logged_with_its_op(make_node: MakeNode) -> None:
    wall = Wall()
    a, b = make_node(1, wall=wall), make_node(2, wall=wall)
    put(a, b'"x"', Op.INSERT)
    sync(a, b)
    put(b, b"", Op.DELETE)
    put(a, b'"kept"')
    exchange(b, a)
    for node in (a, b):
        (entry,) = node.store.conflicts(values=True)
        assert entry.loser_op == Op.DELETE and entry.loser_value is None
        assert entry.winner_value == b'"kept"'


def test_versions_without_a_base_are_never_reported(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        plain = [
            Item(
                item_id=IID,
                timestamp_ns=ts,
                origin=o,
                tier=T,
                op=Op.UPDATE,
                flags=P.NAMED,
                payload=NAME + b"v",
            )
            for ts, o in ((10, 1), (12, 2), (11, 3))
        ]
        assert store.apply(T, plain).conflicts == 0
        assert store.conflicts() == []


def test_the_log_is_bounded_in_bytes_and_drops_are_counted_not_relogged(
    tmp_path: Path,
) -> None:
    def based(ts: int, origin: int, value: bytes, iid: bytes) -> Item:
        flags, payload = P.with_base(0, value, (1, 1))
        return Item(
            item_id=iid,
            timestamp_ns=ts,
            origin=origin,
            tier=T,
            op=Op.UPDATE,
            flags=flags,
            payload=payload,
        )

    with Store.open(tmp_path / "s.db", conflict_bytes=3000) as store:
        batches = []
        for i in range(10):
            iid = bytes([i]) * 16
            batches.append([based(100, 1, b"w" * 10, iid), based(50, 2, b"l" * 500, iid)])
            store.apply(T, batches[-1])
        stats = store.conflict_stats()
        assert stats["bytes"] <= 3000 and stats["dropped"] == 10 - stats["entries"] > 0
        kept = store.conflicts(limit=100)
        assert [c.item_id[0] for c in kept] == list(range(9, 9 - len(kept), -1))  # newest
        for batch in batches:  # everything again (a full resync): nothing logged twice
            assert store.apply(T, batch).conflicts == 0
        assert store.conflict_stats() == stats
    with Store.open(tmp_path / "s.db", conflict_bytes=3000) as store:
        assert store.conflict_stats() == stats  # the total and the drops survive a restart


def test_a_resolution_converges_and_is_marked_everywhere(make_node: MakeNode) -> None:
    wall = Wall()
    a, b, c = make_node(1, wall=wall), make_node(2, wall=wall), make_node(3, wall=wall)
    put(a, b"0", Op.INSERT)
    sync(a, b, c)
    put(a, b'"loser"')
    put(b, b'"winner"')
    pull(c, a, T)
    exchange(a, b)
    sync(a, b, c)
    (entry,) = c.store.conflicts()
    wall.ns += 1_000_000
    fix = resolve_conflict(c.engine, entry.id, keep="loser")
    assert fix.flags & P.RESOLVES and fix.base is not None and fix.base >= entry.winner
    sync(a, b, c)
    for node in (a, b, c):
        (done,) = node.store.conflicts()
        assert done.resolved_by == fix.key
        assert node.store.conflicts(open_only=True) == []
        assert node.engine.get(T, IID).value == b'"loser"'  # type: ignore[union-attr]
    assert a.store.digest(T) == b.store.digest(T) == c.store.digest(T)
    with pytest.raises(ResolveError, match=f"conflict {entry.id} is already resolved"):
        resolve_conflict(a.engine, a.store.conflicts()[0].id, keep="winner")
    with pytest.raises(ResolveError, match="no conflict 999"):
        resolve_conflict(a.engine, 999, value=b"1")
    seq = a.store.tier_seq(T)
    with pytest.raises(ResolveError, match="keep must be winner or loser"):
        resolve_conflict(a.engine, 1, keep="both")
    assert a.store.tier_seq(T) == seq  # nothing changed


def test_resolving_with_a_new_value(make_node: MakeNode) -> None:
    wall = Wall()
    a, b = make_node(1, wall=wall), make_node(2, wall=wall)
    put(a, b"0", Op.INSERT)
    sync(a, b)
    put(a, b"1")
    put(b, b"2")
    exchange(a, b)
    (entry,) = a.store.conflicts()
    resolve_conflict(a.engine, entry.id, value=b'"both"')
    sync(a, b)
    assert b.engine.get(T, IID).value == b'"both"'  # type: ignore[union-attr]
    assert b.store.conflicts()[0].resolved_by is not None
