"""Store layout: the two-level id map (tail map + ``ids`` table), migrations from version 1.

A tiny ``tail_limit`` forces the tail to be folded into ``ids`` every few changes, so every
read path meets rows on both levels, rows that moved from one level to the other (stale
``ids`` entries), and a store reopened with a non-empty tail.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest

from meshsyncd.store import SCHEMA_VERSION, Store, idfilter
from meshsyncd.store.idfilter import IdFilter
from meshsyncd.store.rows import base_hash, to_db
from meshsyncd.store.schema import MIGRATIONS
from protocol import Item, Op, Tier

T = Tier.EPISODIC
NOW = 1_700_000_000_000_000_000


def iid(n: int) -> bytes:
    # Ids in an order unrelated to their arrival, like random ones.
    return bytes([(n * 97) % 256]) + n.to_bytes(15, "big")


def item(n: int, ts: int, op: Op = Op.UPDATE, payload: bytes = b'{"v":1}') -> Item:
    if op == Op.DELETE:
        payload = b""
    return Item(item_id=iid(n), timestamp_ns=ts, origin=7, tier=T, op=op, payload=payload)


def snapshot(store: Store) -> dict[bytes, tuple[int, bytes | None]]:
    out = {}
    for n in range(40):
        found = store.get_row(T, iid(n))
        if found is not None:
            out[iid(n)] = (found[0], found[1].value())
    return out


def test_rows_are_found_on_both_levels_before_and_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store.open(path, tail_limit=4) as store:
        for n in range(30):
            store.apply(T, [item(n, NOW + n)], now_ns=NOW)
        # Rows that live in ``ids`` move into the tail: newer base, MERGE field, delete.
        store.apply(T, [item(2, NOW + 100, payload=b'{"v":2}')], now_ns=NOW)
        store.apply(T, [item(3, NOW + 101, Op.MERGE, b'{"m":1}')], now_ns=NOW)
        store.apply(T, [item(4, NOW + 102, Op.DELETE)], now_ns=NOW)
        store.apply(T, [item(30, NOW + 103), item(2, NOW + 104, Op.MERGE, b'{"m":2}')])
        before = snapshot(store)
        assert before[iid(2)][1] == b'{"m":2,"v":2}'
        assert before[iid(3)][1] == b'{"m":1,"v":1}'
        assert before[iid(4)][1] is None
        assert store.count(T) == 31
        ids = sorted(iid(n) for n in range(31))
        assert [r.item_id for _s, r in store.scan(T, limit=100, include_deleted=True)] == ids
        page = store.scan(T, limit=5, after_id=ids[9])
        assert [r.item_id for _s, r in page] == [i for i in ids[10:] if i != iid(4)][:5]
        digest = store.digest(T)
        tail = dict(store._tail[int(T)])
        assert 0 < len(tail) <= 5  # inline folds keep it under 1.25 x the limit
    with Store.open(path, tail_limit=4) as store:
        assert store._tail[int(T)] == tail
        assert snapshot(store) == before
        assert store.digest(T) == digest
        # Every version again: all duplicates, nothing moves.
        seq = store.tier_seq(T)
        assert store.apply(T, [item(n, NOW + n) for n in range(5, 30)]).applied == 0
        assert store.tier_seq(T) == seq


def test_purged_rows_leave_both_levels(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db", tail_limit=3) as store:
        old = NOW - 30 * 86_400 * 10**9
        store.apply(T, [item(n, old + n) for n in range(6)], now_ns=NOW)
        store.apply(T, [item(1, old + 50, Op.DELETE)], now_ns=NOW)  # moves 1 into the tail
        store.apply(T, [item(5, old + 51, Op.DELETE)], now_ns=NOW)
        store.record_ack(9, T, store.tier_seq(T))
        assert store.purge_tombstones([9], now_ns=NOW) == 2
        assert store.get_row(T, iid(1)) is None and store.get_row(T, iid(5)) is None
        assert store.count(T) == 4
        store.apply(T, [item(1, old + 60, payload=b'{"back":1}')], now_ns=NOW)
        assert store.get_row(T, iid(1)) is not None
    with Store.open(tmp_path / "s.db", tail_limit=3) as store:
        assert store.get_row(T, iid(5)) is None
        assert [r.item_id for _s, r in store.scan(T)] == sorted(iid(n) for n in range(5))


def test_a_rolled_back_apply_restores_the_tail(tmp_path: Path) -> None:
    def fault(point: str) -> None:
        raise RuntimeError(point)

    with Store.open(tmp_path / "s.db", tail_limit=2) as store:
        store.apply(T, [item(n, NOW + n) for n in range(2)], now_ns=NOW)
        tail = dict(store._tail[int(T)])
        store.fault = fault
        with pytest.raises(RuntimeError):
            store.apply(T, [item(n, NOW + 10 + n) for n in range(5)], now_ns=NOW)
        store.fault = None
        assert store._tail[int(T)] == tail
        assert store.get_row(T, iid(3)) is None
        assert snapshot(store)[iid(0)][1] == b'{"v":1}'


def test_a_version_1_store_migrates_to_the_id_map(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        MIGRATIONS[0](conn)
        conn.execute("PRAGMA user_version = 1")
        for n in range(3):
            payload = b'{"n":%d}' % n
            bh = base_hash(iid(n), NOW + n, 7, int(Op.INSERT), 0, payload).to_bytes(32, "big")
            rid = int(T) << 56 | (n + 1)
            conn.execute(
                "INSERT INTO items (rowid, tier, item_id, ts, origin, op, priority, flags,"
                " payload, fields, bhash) VALUES (?, ?, ?, ?, ?, ?, 2, 0, ?, NULL, ?)",
                (rid, int(T), iid(n), to_db(NOW + n), to_db(7), 1, payload, bh),
            )
        conn.execute("UPDATE tiers SET seq = 3 WHERE tier = ?", (int(T),))
        conn.execute("COMMIT")
    finally:
        conn.close()
    with Store.open(path) as store:
        assert store._tail[int(T)] == {}
        assert [v for _s, v in snapshot(store).values()] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
        assert store.apply(T, [item(1, NOW + 50, payload=b"{}")], now_ns=NOW).applied == 1
        assert snapshot(store)[iid(1)] == (4, b"{}")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        assert {"ids", "digests", "filters"} <= names
        assert not {"items_by_id", "buckets"} & names
    finally:
        conn.close()


def test_id_filter_has_no_false_negatives_and_few_false_positives() -> None:
    rnd = random.Random(4)
    members = [rnd.randbytes(16) for _ in range(5000)]
    idf = IdFilter.for_capacity(5000)
    idf.add_all(members)
    assert all(m in idf for m in members)
    # Structured ids (a counter in the last bytes) spread too.
    counted = [n.to_bytes(16, "big") for n in range(5000)]
    idf2 = IdFilter.for_capacity(5000)
    idf2.add_all(counted)
    assert all(m in idf2 for m in counted)
    for f in (idf, idf2):
        strangers = sum(rnd.randbytes(16) in f for _ in range(20_000))
        assert strangers < 20_000 * 0.02


_NO_C = pytest.mark.skipif(
    idfilter._c_maybe is None, reason="the C id filter is disabled or not built"
)


@_NO_C
def test_c_filter_sets_and_tests_the_same_bits_as_the_python_loops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A filter saved by one path is read by the other: same bits, same answers.
    rnd = random.Random(9)
    members = [rnd.randbytes(16) for _ in range(3000)] + [bytes(16), b"\xff" * 16]
    strangers = [rnd.randbytes(16) for _ in range(20_000)]
    monkeypatch.setattr(idfilter, "_SLICE", 7)  # a generator goes in slices: many here
    fast = IdFilter(bytearray(4096))  # small: many collisions, many "maybe"s
    fast.add_all(iter(members))
    fast_maybe = fast.maybe(strangers)
    monkeypatch.setattr(idfilter, "_c_add_all", None)
    monkeypatch.setattr(idfilter, "_c_maybe", None)
    slow = IdFilter(bytearray(4096))
    slow.add_all(members)
    assert fast.bits == slow.bits and fast.count == slow.count == len(members)
    assert fast_maybe == slow.maybe(strangers) == [s for s in strangers if s in slow]
    assert 0 < len(fast_maybe) < len(strangers)
    assert slow.maybe(members) == members


@_NO_C
def test_c_filter_passes_a_malformed_id_on_and_refuses_to_add_one() -> None:
    # A caller's bad id is "maybe" (its own check reports it, as without C); only ids
    # read from the store are ever added, so a bad one there is a bug, raised.
    idf = IdFilter.for_capacity(1000)
    odd: list[bytes] = [bytes(15), "text", bytes(16)]  # type: ignore[list-item]
    assert idf.maybe(odd) == odd[:2]
    with pytest.raises(TypeError, match=r"ids\[1\] is not 16 bytes"):
        idf.add_all([bytes(16), bytes(17)])


def test_apply_mixin_stubs_never_shadow_the_real_methods() -> None:
    # ApplyMixin declares what it borrows as stubs and must stay last in Store's bases.
    from meshsyncd.store.applying import ApplyMixin

    borrowed = [
        name
        for name, value in vars(ApplyMixin).items()
        if callable(value) or isinstance(value, property)
        if name not in {"apply", "apply_until", "_apply_locked"} and not name.startswith("__")
    ]
    assert len(borrowed) >= 10
    for name in borrowed:
        assert getattr(Store, name) is not getattr(ApplyMixin, name), name


def test_filter_is_rebuilt_larger_and_survives_reopening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idfilter, "MIN_CAPACITY", 1)
    with Store.open(tmp_path / "s.db", tail_limit=3) as store:
        for n in range(40):
            store.apply(T, [item(n, NOW + n)], now_ns=NOW)
        idf = store._filters[int(T)]
        folded = [iid(n) for n in range(40) if iid(n) not in store._tail[int(T)]]
        assert idf.capacity >= 30 and len(folded) >= 34 and all(i in idf for i in folded)
        before = snapshot(store)
    with Store.open(tmp_path / "s.db", tail_limit=3) as store:
        # Saved once per round, topped up on open from the rows folded since.
        assert store._filters[int(T)].bits == idf.bits
        assert snapshot(store) == before


def test_fold_steps_keep_every_row_findable_and_survive_a_crash_mid_step(
    tmp_path: Path,
) -> None:
    """Maintenance folds a run of buckets per step; reads are right between any two steps."""
    path = tmp_path / "s.db"
    rnd = random.Random(7)
    ids = [rnd.randbytes(16) for _ in range(600)]

    def rnd_item(i: bytes, ts: int) -> Item:
        return Item(item_id=i, timestamp_ns=ts, origin=7, tier=T, op=Op.UPDATE, payload=b"{}")

    def check(store: Store, upto: int) -> None:
        for k, i in enumerate(ids[:upto]):
            found = store.get_row(T, i)
            assert found is not None and found[1].item_id == i, k
        assert sorted(r.item_id for _s, r in store.scan(T, limit=1000)) == sorted(ids[:upto])

    with Store.open(path, tail_limit=100, fold_entries=30) as store:
        for k in range(0, 600, 50):
            store.apply(T, [rnd_item(i, NOW + k + n) for n, i in enumerate(ids[k : k + 50])])
            steps = 0
            while store.maintenance_step():
                steps += 1
                check(store, k + 50)
            assert len(store._tail[int(T)]) <= 100
        assert not store.needs_maintenance
        digest = store.digest(T)

        def boom(point: str) -> None:
            raise RuntimeError(point)

        # A step that fails before its commit leaves tail, marks and filter as they were.
        store.apply(T, [rnd_item(i, NOW + 10_000 + n) for n, i in enumerate(ids[:150])])
        tail = dict(store._tail[int(T)])
        store.fault = boom
        with pytest.raises(RuntimeError):
            store.maintenance_step()
        store.fault = None
        assert store._tail[int(T)] == tail
        check(store, 600)
        digest = store.digest(T)
        while store.maintenance_step():
            pass
        tail = dict(store._tail[int(T)])
    with Store.open(path, tail_limit=100, fold_entries=30) as store:
        assert store._tail[int(T)] == tail
        assert store.digest(T) == digest
        check(store, 600)
        assert all(i in store._filters[int(T)] for i in ids if i not in tail)


def test_one_tail_budget_for_all_tiers(tmp_path: Path) -> None:
    """Memory is bounded by one limit however many tiers take writes; the fullest folds."""

    now = time.time_ns()  # the working tier keeps a day

    def batch(tier: Tier, first: int, n: int) -> list[Item]:
        return [
            Item(
                item_id=iid(k),
                timestamp_ns=now + k,
                origin=7,
                tier=tier,
                op=Op.UPDATE,
                payload=b"{}",
            )
            for k in range(first, first + n)
        ]

    with Store.open(tmp_path / "s.db", tail_limit=100, fold_entries=10) as store:
        store.apply(Tier.EPISODIC, batch(Tier.EPISODIC, 0, 60))
        store.apply(Tier.SEMANTIC, batch(Tier.SEMANTIC, 1000, 30))
        assert not store.needs_maintenance  # 90 entries in all
        store.apply(Tier.SEMANTIC, batch(Tier.SEMANTIC, 2000, 30))
        assert store.needs_maintenance  # 120: neither tier alone is above 100
        assert store.maintenance_step()
        assert len(store._tail[int(Tier.EPISODIC)]) < 60  # the fullest tier folded first
        while store.maintenance_step():
            pass
        assert store.tail_size() <= 100
        # An apply that would pass 1.25 x the limit folds inline, in any tier.
        store.apply(Tier.WORKING, batch(Tier.WORKING, 3000, 80))
        assert store.tail_size() <= 125
        for tier, first, n in (
            (Tier.EPISODIC, 0, 60),
            (Tier.SEMANTIC, 2000, 30),
            (Tier.WORKING, 3000, 80),
        ):
            for k in range(first, first + n):
                found = store.get_row(tier, iid(k))
                assert found is not None and found[1].item_id == iid(k)
