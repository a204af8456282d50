"""Store: the history tail (histtail.py). A recorded version is listed as soon as its apply
returns, whether it waits in the tail, is in a fold cycle under way, or is folded; a fold is
idempotent; a crash or a rollback at any point of a cycle loses no version and lists none
twice; the per-item and byte bounds hold."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from meshsyncd.store import Store
from meshsyncd.store.history import HistoryEntry
from meshsyncd.store.rows import to_db
from meshsyncd.store.schema import MIGRATIONS, SCHEMA_VERSION
from protocol import Item, Op, Tier

T = Tier.SEMANTIC
N = 4


def iid(n: int) -> bytes:
    return bytes([n]) * 16


def v(n: int, ts: int, origin: int = 1, op: Op = Op.UPDATE) -> Item:
    return Item(
        item_id=iid(n),
        timestamp_ns=ts,
        origin=origin,
        tier=T,
        op=op,
        payload=b"" if op == Op.DELETE else b'{"n":%d,"ts":%d}' % (n, ts),
    )


def open_store(path: Path, **kw: int) -> Store:
    # A tiny history limit and fold runs, so that cycles start and span many steps.
    opts = {"history_versions": {T: N}, "history_limit": 12, "fold_entries": 5, **kw}
    return Store.open(path, **opts)  # type: ignore[arg-type]


def history(store: Store, n: int) -> list[HistoryEntry]:
    found = store.get_row(T, iid(n))
    current = None
    if found is not None and found[1].op:
        row = found[1]
        assert row.payload is not None
        current = (row.key, row.op, row.flags, row.payload)
    return store.history(T, iid(n), current)


def keys(store: Store, n: int) -> list[tuple[int, int]]:
    return [e.key for e in history(store, n)]


def table(store: Store, name: str) -> list[tuple[bytes, int]]:
    return store._conn.execute(f"SELECT item_id, size FROM {name}").fetchall()


def churn(store: Store, items: int = 6, rounds: int = 3) -> dict[int, list[tuple[int, int]]]:
    """Each item gets ``rounds`` newer versions and a loser per round; returns the expected
    newest-first keys (current row first), at most N."""
    for r in range(rounds):
        store.apply(T, [v(n, 100 * (r + 1) + n) for n in range(items)])
        store.apply(T, [v(n, 100 * (r + 1) + n - 50, origin=2) for n in range(items)])  # losers
    out = {}
    for n in range(items):
        every = [(100 * (r + 1) + n, 1) for r in range(rounds)]
        every += [(100 * (r + 1) + n - 50, 2) for r in range(rounds)]
        out[n] = sorted(every, reverse=True)[:N]
    return out


def test_versions_are_read_from_the_tail_during_a_cycle_and_after_it(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db", history_limit=1000) as store:
        want = churn(store)
        assert table(store, "history") == []  # nothing folded yet: all in the tail
        assert len(table(store, "history_tail")) == 6 * 5  # 2 replaced + 3 losers per item
        assert {n: keys(store, n) for n in want} == want
        store.history_limit = 12
        assert store.maintenance_step()  # a cycle starts and moves its first run
        assert store.history_tail_stats() == {"pending": 25, "cycle": True}
        store.apply(T, [v(0, 1000), v(0, 990, origin=3)])  # wait for the next cycle
        want[0] = [(1000, 1), (990, 3), *want[0]][:N]
        while store.maintenance_step():
            assert {n: keys(store, n) for n in want} == want
        # The three appended during the cycle (two versions, one replaced base) wait.
        assert store.history_tail_stats() == {"pending": 3, "cycle": False}
        assert store.fold_history()
        assert table(store, "history_tail") == []
        assert {n: keys(store, n) for n in want} == want
        per_item = store._conn.execute(
            "SELECT max(c) FROM (SELECT count(*) AS c FROM history GROUP BY item_id)"
        ).fetchone()[0]
        assert per_item == N  # trimmed to N in the table by the fold
        assert store.history_stats()["bytes"] == sum(s for _i, s in table(store, "history"))


def test_redelivery_and_refolding_record_nothing_twice(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        store.apply(T, [v(1, 10), v(1, 20), v(1, 15, origin=2)])
        store.apply(T, [v(1, 10), v(1, 20), v(1, 15, origin=2)])  # resent: tail skips them
        assert len(table(store, "history_tail")) == 3  # a repeated id: all three
        assert store.fold_history()
        before = (table(store, "history"), store.history_stats())
        assert keys(store, 1) == [(20, 1), (15, 2), (10, 1)]
        store.apply(T, [v(1, 10), v(1, 15, origin=2)])  # after the fold: tail, then ignored
        assert keys(store, 1) == [(20, 1), (15, 2), (10, 1)]
        assert store.fold_history()
        assert (table(store, "history"), store.history_stats()) == before
        assert not store.fold_history()  # nothing left


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_a_crash_mid_cycle_loses_no_version_and_lists_none_twice(
    tmp_path: Path, steps: int
) -> None:
    """A real process killed after ``steps`` fold steps; the reopened store finishes."""
    path = tmp_path / "s.db"
    script = f"""
import os
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_history_tail import churn, open_store
store = open_store(__import__("pathlib").Path({str(path)!r}))
churn(store)
for _ in range({steps}):
    store.maintenance_step()
os._exit(0)  # no close: whatever is not committed is lost
"""
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root)
    with open_store(tmp_path / "ref.db", history_limit=10_000) as ref:
        want = churn(ref)
    with open_store(path) as store:
        if steps == 1:
            assert store.history_tail_stats()["cycle"]  # killed mid-cycle
        assert {n: keys(store, n) for n in want} == want
        while store.maintenance_step():
            pass
        assert {n: keys(store, n) for n in want} == want
        assert table(store, "history_tail") == []
        rows = store._conn.execute("SELECT item_id, ts, origin FROM history").fetchall()
        assert len(rows) == len(set(rows)) == 6 * N
        assert store.history_stats()["bytes"] == sum(s for _i, s in table(store, "history"))


def test_a_failed_fold_step_or_apply_rolls_back_the_tail_too(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db", history_limit=1000) as store:
        want = churn(store)
        store.history_limit = 12
        assert store.maintenance_step()
        stats = store.history_stats()

        def boom(point: str) -> None:
            raise RuntimeError(point)

        store.fault = boom
        with pytest.raises(RuntimeError):
            store.maintenance_step()
        with pytest.raises(RuntimeError):
            store.apply(T, [v(2, 5000), v(2, 4000, origin=9)])
        store.fault = None
        assert store.history_stats() == stats
        assert {n: keys(store, n) for n in want} == want
        while store.maintenance_step():
            pass
        assert {n: keys(store, n) for n in want} == want


def test_without_maintenance_the_tail_and_the_bytes_stay_bounded(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db", history_limit=8) as store:
        for r in range(30):
            store.apply(T, [v(1, 100 + r), v(1, 50 + r, origin=2)])
            assert store.history_tail_stats()["pending"] <= 8 + 8 // 4
        assert len(keys(store, 1)) == N
    with open_store(tmp_path / "b.db", history_limit=10_000, history_bytes=3000) as store:
        for r in range(40):
            store.apply(T, [v(r, 10), v(r, 20)])  # every version still in the tail
            assert store.history_stats()["bytes"] <= 3000
        both = table(store, "history") + table(store, "history_tail")
        assert store.history_stats()["bytes"] == sum(s for _i, s in both)


def test_a_purge_drops_tail_versions_of_the_purged_item(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db", history_limit=1000) as store:
        store.apply(T, [v(1, 10), v(1, 20), v(2, 10), v(2, 20)])
        store.apply(T, [v(1, 30, op=Op.DELETE)])
        store.record_ack(7, T, store.tier_seq(T))
        assert store.purge_tombstones([7], grace_ns=0, now_ns=31 + 86_400 * 10**9) == 1
        assert {i for i, _s in table(store, "history") + table(store, "history_tail")} == {iid(2)}
        assert keys(store, 1) == []
        assert keys(store, 2) == [(20, 1), (10, 1)]


def test_a_version_11_store_migrates_with_its_history(tmp_path: Path) -> None:
    path = tmp_path / "v11.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for migration in MIGRATIONS[:11]:
            migration(conn)
        conn.execute("PRAGMA user_version = 11")
        conn.execute(
            "INSERT INTO history VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (int(T), iid(1), to_db(5), to_db(1), int(Op.UPDATE), b"{}", 66),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    with open_store(path) as store:  # opens the v11 file as this version: adds the tail
        assert keys(store, 1) == [(5, 1)]
        assert store.history_stats() == {"entries": 1, "bytes": 66, "max_bytes": 64 << 20}
        store.apply(T, [v(1, 10), v(1, 20)])
        assert store.fold_history()
        store.apply(T, [v(1, 30), v(1, 25, origin=2)])
        assert keys(store, 1) == [(30, 1), (25, 2), (20, 1), (10, 1)]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        assert {"history", "history_tail", "names_log"} <= names
    finally:
        conn.close()


def test_a_replaced_base_is_recorded_once_from_its_stored_row(tmp_path: Path) -> None:
    """A replaced base goes to the tail as read with its row (value, size), once: not again
    when the tail holds it already (its id was repeated in an earlier apply), and not at
    all for a row that holds only MERGE fields (no whole value to keep)."""
    merge = Item(item_id=iid(3), timestamp_ns=5, origin=1, tier=T, op=Op.MERGE, payload=b'{"a":1}')
    with open_store(tmp_path / "s.db", history_limit=1000) as store:
        store.apply(T, [v(1, 10), merge])
        store.apply(T, [v(2, 10), v(2, 20)])  # a repeated id: both recorded now
        store.apply(T, [v(1, 20), v(2, 30), v(3, 40)])  # replace (1, 10), (2, 20), fields
        got = store._conn.execute(
            "SELECT item_id, ts, op, payload, size FROM history_tail ORDER BY item_id, ts"
        ).fetchall()
        want = [v(1, 10), v(2, 10), v(2, 20), merge]
        assert got == [
            (i.item_id, to_db(i.timestamp_ns), int(i.op), i.payload, len(i.payload) + 64)
            for i in want
        ]
        assert store.history_stats()["bytes"] == sum(r[4] for r in got)
        assert [e.value for e in history(store, 2)] == [v(2, ts).payload for ts in (30, 20, 10)]
