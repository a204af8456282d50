"""Store: the conflict order on single items, schema versioning, logs, retention, purging."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from enginekit import BASE_NS

from meshsyncd.store import SCHEMA_VERSION, SchemaError, Store
from meshsyncd.store.maintenance import DAY_NS
from protocol import Item, Op, Tier

IID = bytes(range(16))
T = Tier.SEMANTIC
HIGH_ORIGIN = 0xFFFF_0000_0000_0001  # above 2**63: must still compare as unsigned


def v(ts: int, origin: int, op: Op, payload: bytes = b"", iid: bytes = IID, tier: Tier = T) -> Item:
    return Item(item_id=iid, timestamp_ns=ts, origin=origin, tier=tier, op=op, payload=payload)


def value(store: Store, iid: bytes = IID, tier: Tier = T) -> bytes | None:
    found = store.get_row(tier, iid)
    assert found is not None
    return found[1].value()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "s.db")
    yield s  # type: ignore[misc]
    s.close()


def test_greater_key_wins_and_equal_key_is_a_duplicate(store: Store) -> None:
    assert store.apply(T, [v(10, 1, Op.INSERT, b"a")]).applied == 1
    assert store.apply(T, [v(9, 2, Op.UPDATE, b"old")]) == (0, 0)  # no base: not reported
    assert value(store) == b"a"
    seq = store.tier_seq(T)
    assert store.apply(T, [v(10, 1, Op.INSERT, b"a")]) == (0, 0)
    assert store.tier_seq(T) == seq  # a duplicate changes nothing, not even the sequence
    assert store.apply(T, [v(10, HIGH_ORIGIN, Op.UPDATE, b"tie")]).applied == 1
    assert value(store) == b"tie"
    assert store.apply(T, [v(10, 5, Op.UPDATE, b"low")]).applied == 0


def test_delete_is_a_tombstone_ordered_like_any_write(store: Store) -> None:
    store.apply(T, [v(10, 1, Op.INSERT, b"a"), v(20, 2, Op.DELETE)])
    found = store.get_row(T, IID)
    assert found is not None and found[1].deleted
    store.apply(T, [v(15, 3, Op.UPDATE, b"late")])
    assert value(store) is None
    store.apply(T, [v(25, 3, Op.UPDATE, b"after")])
    assert value(store) == b"after"


def test_merge_is_per_field_lww_on_top_of_the_base(store: Store) -> None:
    store.apply(T, [v(10, 1, Op.INSERT, b'{"a":1,"b":1}')])
    store.apply(T, [v(30, 2, Op.MERGE, b'{"b":3,"c":3}'), v(20, 3, Op.MERGE, b'{"c":2,"d":2}')])
    assert json.loads(value(store) or b"") == {"a": 1, "b": 3, "c": 3, "d": 2}
    # A whole write above the "d" MERGE but below the others discards only "d".
    store.apply(T, [v(25, 4, Op.UPDATE, b'{"z":0}')])
    assert json.loads(value(store) or b"") == {"z": 0, "b": 3, "c": 3}
    # A MERGE below the base changes nothing; a DELETE above everything clears all.
    assert store.apply(T, [v(24, 5, Op.MERGE, b'{"q":1}')]).applied == 0
    store.apply(T, [v(40, 1, Op.DELETE)])
    assert value(store) is None
    # A MERGE after the DELETE starts from an empty object.
    store.apply(T, [v(50, 2, Op.MERGE, b'{"n":1}')])
    assert value(store) == b'{"n":1}'


def test_merge_over_non_object_base_and_merge_only_rows(store: Store) -> None:
    other = bytes(16)
    store.apply(T, [v(5, 1, Op.MERGE, b'{"x":1}', iid=other)])
    assert value(store, other) == b'{"x":1}'
    store.apply(T, [v(10, 1, Op.INSERT, b"plain text"), v(11, 2, Op.MERGE, b'{"k":"v"}')])
    assert value(store) == b'{"k":"v"}'


def test_versions_reproduce_the_row_exactly(tmp_path: Path, store: Store) -> None:
    store.apply(T, [v(10, 1, Op.INSERT, b'{"a":1}'), v(12, 2, Op.MERGE, b'{"b":2,"c":2}')])
    store.apply(T, [v(13, 3, Op.MERGE, b'{"c":3}')])
    found = store.get_row(T, IID)
    assert found is not None
    versions = found[1].versions(T)
    assert [x.op for x in versions] == [Op.INSERT, Op.MERGE, Op.MERGE]
    with Store.open(tmp_path / "copy.db") as copy:
        copy.apply(T, list(reversed(versions)))
        assert value(copy) == value(store)
        assert copy.digest(T) == store.digest(T)
        assert copy.bucket_digests(T) == store.bucket_digests(T)


def test_digest_is_order_independent_and_survives_reopen(tmp_path: Path) -> None:
    items = [v(10 + i, 1 + i % 3, Op.INSERT, b"%d" % i, iid=bytes([i]) * 16) for i in range(20)]
    items += [v(40, 2, Op.DELETE, iid=bytes([3]) * 16), v(41, 3, Op.MERGE, b'{"m":1}')]
    with Store.open(tmp_path / "a.db") as a, Store.open(tmp_path / "b.db") as b:
        a.apply(T, items)
        for item in reversed(items):
            b.apply(T, [item, item])
        assert a.digest(T) == b.digest(T) != bytes(32)
        assert a.digest(Tier.WORKING) == bytes(32)
        want = a.digest(T)
    with Store.open(tmp_path / "a.db") as again:
        assert again.digest(T) == want


def test_schema_is_versioned_and_newer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(SchemaError):
        Store.open(path)


def test_incarnation_is_random_and_stable(tmp_path: Path) -> None:
    with Store.open(tmp_path / "1.db") as a, Store.open(tmp_path / "2.db") as b:
        inc = a.incarnation
        assert len(inc) == 16 and inc != b.incarnation
    with Store.open(tmp_path / "1.db") as a:
        assert a.incarnation == inc


def test_working_tier_retention_ignores_and_purges_expired(store: Store) -> None:
    w = Tier.WORKING
    now = BASE_NS
    old, fresh = bytes([1]) * 16, bytes([2]) * 16
    store.apply(w, [v(now - 2 * DAY_NS, 1, Op.INSERT, b"x", iid=old, tier=w)], now_ns=now)
    assert store.get_row(w, old) is None  # expired on receipt
    store.apply(w, [v(now - DAY_NS // 2, 1, Op.INSERT, b"y", iid=fresh, tier=w)], now_ns=now)
    store.apply(w, [v(now - 1, 2, Op.MERGE, b'{"k":1}', iid=fresh, tier=w)], now_ns=now)
    assert store.purge_expired(now) == 0
    # Twelve hours later the base has expired, the MERGE field has not.
    assert store.purge_expired(now + DAY_NS // 2 + 10) == 1
    assert value(store, fresh, w) == b'{"k":1}'
    assert store.purge_expired(now + 2 * DAY_NS) == 1
    assert store.get_row(w, fresh) is None
    assert store.digest(w) == bytes(32)
    # Other tiers keep everything forever.
    store.apply(T, [v(1, 1, Op.INSERT, b"ancient")], now_ns=now)
    assert value(store) == b"ancient"


def test_tombstones_purged_only_after_every_peer_acked_and_grace(store: Store) -> None:
    now = BASE_NS
    store.apply(T, [v(now - 8 * DAY_NS, 1, Op.INSERT, b"a"), v(now - 8 * DAY_NS + 1, 1, Op.DELETE)])
    seq = store.tier_seq(T)
    assert store.purge_tombstones([7, 8], now_ns=now) == 0  # nobody acked
    store.record_ack(7, T, seq)
    assert store.purge_tombstones([7, 8], now_ns=now) == 0  # peer 8 has not
    store.record_ack(8, T, seq)
    assert store.purge_tombstones([7, 8], now_ns=now - 2 * DAY_NS) == 0  # grace not over
    assert store.purge_tombstones([7, 8], now_ns=now) == 1
    assert store.get_row(T, IID) is None
    assert store.digest(T) == bytes(32)


def test_version_5_conflict_logs_lose_their_duplicates(tmp_path: Path) -> None:
    from meshsyncd.store.schema import MIGRATIONS

    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for migration in MIGRATIONS[:5]:
        migration(conn)
    conn.execute("PRAGMA user_version = 5")
    from meshsyncd.store.rows import to_db

    row = (1, int(T), IID, to_db(10), to_db(1), to_db(9), to_db(2))
    sql = "INSERT INTO conflicts (at_ns, tier, item_id, winner_ts, winner_origin, loser_ts,"
    sql += " loser_origin) VALUES (?, ?, ?, ?, ?, ?, ?)"
    conn.executemany(sql, [row, row, (2, int(T), IID, to_db(10), to_db(1), to_db(8), to_db(3))])
    conn.execute("COMMIT")
    conn.close()
    with Store.open(path) as migrated:
        # Version 9: the old log (every loss, no values) is dropped, not converted; the
        # uniqueness stays, led by the timestamps (the index grows at its end).
        assert migrated.conflicts(limit=10) == []
        cols = [r[2] for r in migrated._conn.execute("PRAGMA index_info(conflicts_once)")]
        assert cols[:2] == ["winner_ts", "loser_ts"]
        assert sorted(cols) == sorted(
            ["tier", "item_id", "winner_ts", "winner_origin", "loser_ts", "loser_origin"]
        )


def test_one_slice_mixing_new_repeated_stored_and_merged_ids(tmp_path: Path) -> None:
    """The direct insert path and the fold path agree, whatever mix a slice carries."""
    new, twice, stored, merged = (bytes([k]) * 16 for k in (1, 2, 3, 4))
    first = [v(5, 1, Op.INSERT, b"s0", iid=stored)]
    batch = [
        v(10, 1, Op.INSERT, b"n", iid=new),
        v(12, 2, Op.UPDATE, b"t-new", iid=twice),
        v(11, 3, Op.UPDATE, b"t-old", iid=twice),  # loses to the version before it
        v(13, 2, Op.UPDATE, b"s1", iid=stored),
        v(14, 1, Op.INSERT, b'{"a":1}', iid=merged),
        v(15, 2, Op.MERGE, b'{"b":2}', iid=merged),
        v(16, 3, Op.MERGE, b'{"c":3}', iid=new),
    ]
    with Store.open(tmp_path / "a.db") as a, Store.open(tmp_path / "b.db") as b:
        a.apply(T, first)
        result = a.apply(T, batch)
        for item in reversed(first + batch):
            b.apply(T, [item])
        assert result.applied == 6
        assert a.digest(T) == b.digest(T) and a.bucket_digests(T) == b.bucket_digests(T)
        for iid in (new, twice, stored, merged):
            assert value(a, iid) == value(b, iid)
        assert value(a, twice) == b"t-new"
        assert value(a, stored) == b"s1"
        assert json.loads(value(a, merged) or b"") == {"a": 1, "b": 2}
        assert json.loads(value(a, new) or b"") == {"c": 3}
        assert a.conflicts(tier=T) == []  # no version carries a base: none is reported
