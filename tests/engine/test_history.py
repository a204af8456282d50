"""Per-item history (``store/history.py``): last N versions seen, winners and losers,
newest first, bounded per item and in bytes, recorded once, kept across restarts."""

from __future__ import annotations

from pathlib import Path

from enginekit import Node, Wall

import protocol as P
from meshsyncd.store import Store
from protocol import Item, Op, Tier

T = Tier.SEMANTIC
NAME = P.name_block(("kb",), "fact")
IID = P.name_id(NAME)


def version(ts: int, origin: int, value: bytes, op: Op = Op.UPDATE) -> Item:
    return Item(
        item_id=IID,
        timestamp_ns=ts,
        origin=origin,
        tier=T,
        op=op,
        flags=P.NAMED,
        payload=NAME + (b"" if op == Op.DELETE else value),
    )


def history(store: Store) -> list[tuple[tuple[int, int], Op, bytes | None]]:
    found = store.get_row(T, IID)
    row = None if found is None else found[1]
    current = None
    if row is not None and row.op:
        assert row.payload is not None
        current = (row.key, row.op, row.flags, row.payload)
    return [(e.key, e.op, e.value) for e in store.history(T, IID, current)]


def test_winners_and_losers_newest_first_bounded_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Store.open(path, history_versions={T: 4}) as store:
        store.apply(T, [version(10, 1, b"a")])
        store.apply(T, [version(30, 2, b"c")])
        store.apply(T, [version(20, 3, b"b-lost")])  # a loser is history too
        assert history(store) == [
            ((30, 2), Op.UPDATE, b"c"),
            ((20, 3), Op.UPDATE, b"b-lost"),
            ((10, 1), Op.UPDATE, b"a"),
        ]
        store.apply(T, [version(20, 3, b"b-lost"), version(30, 2, b"c")])  # resent
        assert len(history(store)) == 3
        for i in range(10):
            store.apply(T, [version(100 + i, 1, b"v%d" % i)])
        store.apply(T, [version(200, 4, b"", Op.DELETE)])
        got = history(store)
        assert [k for k, _op, _v in got] == [(200, 4), (109, 1), (108, 1), (107, 1)]
        assert got[0][1:] == (Op.DELETE, None)
        count = store._conn.execute("SELECT count(*) FROM history").fetchone()[0]
        assert count <= 4  # per item, in the table too
    with Store.open(path, history_versions={T: 4}) as store:
        assert history(store) == got  # a restart keeps it


def test_history_is_bounded_in_bytes_and_can_be_off(tmp_path: Path) -> None:
    with Store.open(tmp_path / "b.db", history_bytes=5000) as store:
        for i in range(42):  # 364 bytes each: the 14th, 28th and 42nd pass the bound
            iid = bytes([i]) * 16
            store.apply(
                T,
                [
                    Item(
                        item_id=iid,
                        timestamp_ns=1,
                        origin=1,
                        tier=T,
                        op=Op.INSERT,
                        payload=b"x" * 300,
                    )
                ],
            )
            store.apply(
                T,
                [
                    Item(
                        item_id=iid,
                        timestamp_ns=2,
                        origin=2,
                        tier=T,
                        op=Op.UPDATE,
                        payload=b"y" * 300,
                    )
                ],
            )
        stats = store.history_stats()
        # Down to 90% when past the bound, oldest first: the newest versions stay (all share
        # a timestamp here, which once made the trim drop every one of them).
        assert 4000 <= stats["bytes"] <= 5000 and stats["entries"] >= 10
        assert len(store.history(T, bytes([41]) * 16, None)) == 1
    with Store.open(tmp_path / "off.db", history_versions={T: 0}) as store:
        store.apply(T, [version(10, 1, b"a")])
        store.apply(T, [version(20, 1, b"b")])
        assert history(store) == [((20, 1), Op.UPDATE, b"b")]  # only the current version
        assert store.history_stats()["entries"] == 0


def test_local_writes_and_merges_are_history(tmp_path: Path) -> None:
    node = Node(tmp_path / "n.db", 1, Wall())
    try:
        node.wall.ns += 1
        node.engine.write(T, IID, Op.INSERT, b'{"a":1}', name=NAME)
        node.wall.ns += 1
        node.engine.merge(T, IID, {"b": 2}, name=NAME)
        node.wall.ns += 1
        node.engine.write(T, IID, Op.UPDATE, b'{"c":3}', name=NAME)
        ops = [op for _k, op, _v in history(node.store)]
        assert ops == [Op.UPDATE, Op.MERGE, Op.INSERT]
    finally:
        node.close()


def test_purging_a_tombstone_drops_its_history_and_keeps_the_others(tmp_path: Path) -> None:
    """The purge that removes a row removes its recorded versions (and their bytes), in
    the same step; other items' history stays, and so does it across a restart."""
    other_name = P.name_block(("kb",), "other")
    other = P.name_id(other_name)
    path = tmp_path / "p.db"
    day = 86_400 * 10**9
    with Store.open(path, history_versions={T: 4}) as store:
        store.apply(T, [version(10, 1, b"a"), version(20, 2, b"b")])
        store.apply(T, [version(30, 1, b"", Op.DELETE)])
        for ts in (10, 20):
            store.apply(
                T,
                [
                    Item(
                        item_id=other,
                        timestamp_ns=ts,
                        origin=1,
                        tier=T,
                        op=Op.UPDATE,
                        flags=P.NAMED,
                        payload=other_name + b"v%d" % ts,
                    )
                ],
            )
        before = store.history_stats()
        assert before["entries"] == 3  # two replaced bases of IID, one of the other item
        store.record_ack(7, T, store.tier_seq(T))
        assert store.purge_tombstones([7], grace_ns=0, now_ns=31 + day) == 1
        ids = store._conn.execute("SELECT DISTINCT item_id FROM history").fetchall()
        assert ids == [(other,)]
        after = store.history_stats()
        assert after["entries"] == 1 and 0 < after["bytes"] < before["bytes"]
        assert history(store) == []
    with Store.open(path, history_versions={T: 4}) as store:
        assert store.history_stats() == after  # the counted bytes match the table
