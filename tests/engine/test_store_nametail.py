"""Store: the names tail (nametail.py). A new name is listed as soon as its apply returns,
whether it still waits in the tail, is in a fold cycle under way, or is folded; a crash or a
rollback at any point of a cycle leaves every name listed exactly once."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsyncd.store import Store
from meshsyncd.store.maintenance import DAY_NS
from meshsyncd.store.nametail import unpack_log
from meshsyncd.store.snapshots import Snapshots
from protocol import NAMED, Item, Op, Tier, name_block, name_id

T = Tier.EPISODIC


def nv(ns: tuple[str, ...], key: str, ts: int, op: Op = Op.INSERT) -> Item:
    block = name_block(ns, key)
    return Item(
        item_id=name_id(block),
        timestamp_ns=ts,
        origin=1,
        tier=T,
        op=op,
        flags=NAMED,
        payload=block + (b"" if op == Op.DELETE else b"{}"),
    )


def open_store(path: Path) -> Store:
    # A tiny names limit and fold runs, so that cycles start and span many steps.
    return Store.open(path, tail_limit=64, fold_entries=8, names_limit=24)


def listed(store: Store, prefix: tuple[str, ...] = (), limit: int = 5) -> list[str]:
    """Every key under ``prefix``, page by page."""
    keys: list[str] = []
    after = None
    while True:
        found, after = store.list_names(T, prefix, after=after, limit=limit)
        keys.extend(name.key for _s, _r, name in found)
        if after is None:
            return keys


def index_rows(store: Store) -> tuple[list[str], list[str]]:
    """Keys in ``names``, and keys logged in ``names_log`` (each once)."""
    names = [r[0] for r in store._conn.execute("SELECT key FROM names ORDER BY key")]
    rows = store._conn.execute("SELECT tier, entries FROM names_log").fetchall()
    tail = sorted({e[2] for t, blob in rows for e in unpack_log(t, blob)})
    return names, tail


def test_a_name_is_listed_in_the_tail_during_a_cycle_and_after_it(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        ts = itertools.count(1)
        keys = [f"k{i:03d}" for i in range(54)]
        store.apply(T, [nv(("p",), k, next(ts)) for k in keys[:24]])
        assert index_rows(store) == ([], keys[:24])  # pending only: nothing folded yet
        assert listed(store, ("p",)) == keys[:24]
        assert store.maintenance_step()  # a cycle starts and moves its first run
        assert store.name_tail_stats() == {"pending": 16, "cycle": True}
        store.apply(T, [nv(("p",), k, next(ts)) for k in keys[24:]])  # waits for the next one
        assert store.name_tail_stats() == {"pending": 46, "cycle": True}
        assert listed(store, ("p",)) == keys
        assert listed(store, ("p",), limit=7) == keys
        while store.maintenance_step():
            assert listed(store, ("p",), limit=3) == keys
        assert store.name_tail_stats() == {"pending": 0, "cycle": False}
        assert index_rows(store) == (keys, [])
        counts, more = store.count_names(T, ("p",), None, 1000)
        assert counts == {"p/": 54} and more is None
    finally:
        store.close()


def test_paging_across_a_cycle_lists_every_name_once(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        ts = itertools.count(1)
        keys = [f"k{i:03d}" for i in range(0, 200, 2)]
        store.apply(T, [nv(("p",), k, next(ts)) for k in keys])
        seen: list[str] = []
        after = None
        for page in itertools.count():
            found, after = store.list_names(T, ("p",), after=after, limit=6)
            seen.extend(name.key for _s, _r, name in found)
            store.apply(T, [nv(("p",), f"k{2 * page + 1:03d}", next(ts))])
            store.maintenance_step()
            if after is None:
                break
        assert seen == sorted(set(seen))
        assert set(keys) <= set(seen)
    finally:
        store.close()


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_a_crash_mid_cycle_loses_no_name_and_lists_none_twice(tmp_path: Path, steps: int) -> None:
    """A real process killed after ``steps`` fold steps; the reopened store finishes."""
    path = tmp_path / "s.db"
    script = f"""
import os
from meshsyncd.store import Store
from protocol import NAMED, Item, Op, Tier, name_block, name_id
store = Store.open({str(path)!r}, tail_limit=64, fold_entries=8, names_limit=24)
items = []
for i in range(40):
    block = name_block(("p",), f"k{{i:03d}}")
    items.append(Item(item_id=name_id(block), timestamp_ns=i + 1, origin=1,
                      tier=Tier.EPISODIC, op=Op.INSERT, flags=NAMED, payload=block + b"{{}}"))
store.apply(Tier.EPISODIC, items)
for _ in range({steps}):
    store.maintenance_step()
os._exit(0)  # no close: whatever is not committed is lost
"""
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root)
    store = open_store(path)
    try:
        keys = [f"k{i:03d}" for i in range(40)]
        assert listed(store, ("p",)) == keys
        while store.maintenance_step():
            pass
        assert listed(store, ("p",)) == keys
        assert index_rows(store) == (keys, [])
    finally:
        store.close()


def test_a_rolled_back_apply_leaves_no_pending_name(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        store.apply(T, [nv(("p",), "kept", 1)])

        def fault(point: str) -> None:
            raise OSError("disk gone")

        store.fault = fault
        with pytest.raises(OSError):
            store.apply(T, [nv(("p",), "lost", 2)])
        store.fault = None
        assert listed(store, ("p",)) == ["kept"]
        assert index_rows(store) == ([], ["kept"])
    finally:
        store.close()


@pytest.mark.parametrize("steps", [0, 1])
def test_a_purge_drops_pending_and_cycling_names(tmp_path: Path, steps: int) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        keys = [f"k{i:02d}" for i in range(24)]
        store.apply(T, [nv(("p",), k, 10 + i) for i, k in enumerate(keys)])
        for _ in range(steps):
            store.maintenance_step()
        store.apply(T, [nv(("p",), k, 100, Op.DELETE) for k in ("k00", "k20")])
        store.record_ack(7, T, store.tier_seq(T))
        assert store.purge_tombstones([7], grace_ns=0, now_ns=101 + DAY_NS) == 2
        kept = [k for k in keys if k not in ("k00", "k20")]
        while store.maintenance_step():
            pass
        assert listed(store, ("p",)) == kept
        folded, tail = index_rows(store)
        assert sorted(folded + tail) == kept
    finally:
        store.close()


def test_a_snapshot_by_namespace_holds_names_not_folded_yet(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    try:
        store.apply(T, [nv(("p",), f"k{i:02d}", i + 1) for i in range(30)])
        store.maintenance_step()  # some names folded, the rest in the cycle
        store.apply(T, [nv(("p",), "late", 99), nv(("q",), "other", 100)])
        snaps = Snapshots(tmp_path / "s.db")
        info = snaps.create("s1", namespace="p", ttl_s=60)
        assert info.items == 31
    finally:
        store.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.integers(0, 3)), max_size=30))
def test_listing_matches_the_model_whatever_the_interleaving(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[int, bool, int]]
) -> None:
    """Applies, fold steps and reopenings in any order: the listing is the set written."""
    path = tmp_path_factory.mktemp("nt") / "s.db"
    store = open_store(path)
    written: set[str] = set()
    ts = itertools.count(1)
    try:
        for n, reopen, steps in script:
            batch = [f"k{(n * 7 + j) % 97:02d}" for j in range(n % 9 + 1)]
            store.apply(T, [nv(("p", f"n{int(k[1:]) % 3}"), k, next(ts)) for k in batch])
            written.update(batch)
            for _ in range(steps):
                store.maintenance_step()
            if reopen:
                store.close()
                store = open_store(path)
            assert sorted(listed(store, ("p",), limit=4)) == sorted(written)
    finally:
        store.close()


def test_a_version_11_store_with_a_cycle_under_way_migrates(tmp_path: Path) -> None:
    """The old per-name tail (a fold cycle half done) goes into ``names``; nothing is lost."""
    path = tmp_path / "v11.db"
    store = open_store(path)
    items = [nv(("p",), f"k{i}", i + 1) for i in range(3)]
    store.apply(T, items)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:  # back to version 11: k0 folded by a cycle under way, k1 in it, k2 after it
        conn.execute("BEGIN")
        conn.execute("DROP TABLE names_log")
        conn.execute("DROP TABLE history_tail")  # version 12's
        conn.execute("DELETE FROM meta WHERE name IN ('history_fold_rid', 'history_fold_at')")
        conn.execute(
            "CREATE TABLE names_tail (tier INTEGER NOT NULL, ns TEXT NOT NULL,"
            " key TEXT NOT NULL, item_id BLOB NOT NULL)"
        )
        for i, item in enumerate(items):
            conn.execute(
                "INSERT INTO names_tail VALUES (?, 'p/', ?, ?)", (int(T), f"k{i}", item.item_id)
            )
        conn.execute("INSERT INTO names VALUES (?, 'p/', 'k0', ?)", (int(T), items[0].item_id))
        conn.execute("UPDATE meta SET value = 2 WHERE name = 'names_fold_rid'")
        conn.execute(
            "UPDATE meta SET value = ? WHERE name = 'names_fold_at'",
            (json.dumps([int(T), "p/", "k0"]),),
        )
        conn.execute("PRAGMA user_version = 11")
        conn.execute("COMMIT")
    finally:
        conn.close()
    store = open_store(path)
    try:
        assert listed(store, ("p",)) == ["k0", "k1", "k2"]
        assert index_rows(store) == (["k0", "k1", "k2"], [])
        assert store.name_tail_stats() == {"pending": 0, "cycle": False}
        store.apply(T, [nv(("p",), "k3", 9)])
        assert index_rows(store) == (["k0", "k1", "k2"], ["k3"])
    finally:
        store.close()


def test_a_purged_pending_name_stays_gone_after_reopening(tmp_path: Path) -> None:
    """The purge rewrites the log: a reopened store neither lists nor folds the name."""
    store = open_store(tmp_path / "s.db")
    try:
        keys = [f"k{i:02d}" for i in range(30)]
        store.apply(T, [nv(("p",), k, 10 + i) for i, k in enumerate(keys)])
        store.maintenance_step()  # a cycle under way: k00.. folded, the rest waiting
        store.apply(T, [nv(("p",), "late", 50)])
        store.apply(T, [nv(("p",), k, 100, Op.DELETE) for k in ("k01", "k29", "late")])
        store.record_ack(7, T, store.tier_seq(T))
        assert store.purge_tombstones([7], grace_ns=0, now_ns=101 + DAY_NS) == 3
        store.close()
        store = open_store(tmp_path / "s.db")
        kept = [k for k in keys if k not in ("k01", "k29")]
        assert listed(store, ("p",)) == kept
        while store.maintenance_step():
            pass
        assert index_rows(store) == (kept, [])
    finally:
        store.close()
