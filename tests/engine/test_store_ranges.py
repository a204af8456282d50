"""Range reads and the digest self-check over a real store whose rows span both id levels.

``read_range`` must see exactly the rows the digests add up, whichever level maps them (the
``ids`` table or the in-memory tail), skipping stale ``ids`` entries and rows deleted behind
the store's back; ``verify_bucket`` must find such a deletion and make the digest match.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from meshsyncd.engine import Engine
from meshsyncd.store import Store, ranges
from meshsyncd.store.ranges import (
    ID_MAX,
    ID_MIN,
    bucket_ranges,
    digest16,
    read_range,
    split_range,
    summarize,
)
from meshsyncd.store.rows import MOD
from meshsyncd.store.verify import verify_bucket
from protocol import Op, Tier

TIER = Tier.SEMANTIC


def _filled(path: Path) -> Engine:
    """~1,400 rows, some MERGE-only, some rewritten after a fold (stale ``ids`` entries)."""
    store = Store.open(path, tail_limit=300, local_synchronous="OFF")
    engine = Engine(store, node_id=5)
    ids = [os.urandom(16) for _ in range(1200)]
    for n, iid in enumerate(ids):
        engine.write(TIER, iid, Op.INSERT, json.dumps({"n": n}).encode())
    for n in range(200):
        engine.merge(TIER, os.urandom(16), {"m": n})
    while engine.store.needs_maintenance:
        engine.store.maintenance_step()
    for iid in ids[:100]:  # moved into the tail after being folded into ``ids``
        engine.write(TIER, iid, Op.UPDATE, b'"again"')
    return engine


def _all(store: Store, lo: bytes = ID_MIN, hi: bytes = ID_MAX) -> list[tuple[bytes, int]]:
    rows, after = [], None
    while True:
        chunk, after = read_range(store, TIER, lo, hi, after)
        rows.extend(chunk)
        if after is None:
            return rows


def test_range_reads_add_up_to_the_stored_digests(tmp_path: Path) -> None:
    engine = _filled(tmp_path / "s.db")
    store = engine.store
    try:
        assert 0 < store.tail_size() <= 375  # both levels are in use
        rows = _all(store)
        assert len(rows) == len({iid for iid, _ in rows}) == store.count(TIER) == 1400
        assert rows == sorted(rows)
        assert digest16(sum(h for _, h in rows)) == store.digest(TIER)[:16]
        top = bucket_ranges(store, TIER)
        assert summarize(rows, [(lo, hi) for lo, hi, _ in top]) == [
            (len(_all(store, lo, hi)), d) for lo, hi, d in top
        ]
        parts = split_range(top[5][0], top[5][1])
        assert len(parts) == 64 and parts[0][0] == top[5][0] and parts[-1][1] == top[5][1]
        assert sum(n for n, _ in summarize(rows, parts)) == len(_all(store, *top[5][:2]))
    finally:
        store.close()


def test_self_check_finds_a_row_deleted_behind_the_stores_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _filled(tmp_path / "s.db")
    rows = _all(engine.store)
    # From the fullest bucket: random ids can leave a bucket too small to be read in
    # several chunks, and then the check has no point at which to give way.
    fullest = max(range(256), key=lambda b: sum(1 for iid, _ in rows if iid[0] == b))
    victim = next(iid for iid, _ in rows if iid[0] == fullest)
    before = engine.store.digest(TIER)
    engine.store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    with conn:
        conn.execute("DELETE FROM items WHERE item_id = ?", (victim,))
    conn.close()
    store = Store.open(tmp_path / "s.db")
    try:
        assert store.digest(TIER) == before  # the stored digest still claims the row
        with monkeypatch.context() as m:  # a bucket of several chunks gives way between them
            m.setattr(ranges, "READ_CHUNK", 2)
            assert verify_bucket(store, TIER, victim[0], yield_to=lambda: True) is None
        assert store.digest(TIER) == before
        checks = [verify_bucket(store, TIER, b) for b in range(256)]
        fixed = [c for c in checks if c is not None and c.fixed]
        assert [c.bucket for c in fixed] == [victim[0]]
        rows = _all(store)
        assert victim not in {iid for iid, _ in rows}
        assert store.digest(TIER) == (sum(h for _, h in rows) % MOD).to_bytes(32, "big")
        assert not any(c is not None and c.fixed for c in (verify_bucket(store, TIER, victim[0]),))
    finally:
        store.close()
