"""SQLite schema and its migrations, versioned with ``PRAGMA user_version``.

Theory of operation: ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``; a
new store runs them all, an existing one runs those it has not seen, each in its own
transaction together with the ``user_version`` bump, so a crash mid-migration leaves the
previous version intact. A store written by a newer meshsyncd (higher version than we know)
is refused rather than guessed at.

Layout (version 10; older versions differed only where noted):

``items``
    One row per (tier, item_id). The ``rowid`` *is* the local sequence number:
    ``rowid = tier << 56 | seq`` with ``seq`` strictly increasing per tier, so "changes of
    tier T after seq N" is a range scan of the table's own b-tree, with no extra index, and
    a row that changes is moved to the end (new rowid = new seq). New rows therefore land on
    the last pages of the table whatever their ids. ``ts``/``origin`` are the base
    version's key, biased by 2**63 to fit signed integers; ``op`` 0 means "no base, MERGE
    fields only". ``fields`` is the canonical JSON of the MERGE field versions; ``bhash``
    the base hash. Version 1 also had a unique index ``items_by_id (tier, item_id)``.
``ids``
    (version 2) The id -> rowid map of every row whose sequence is at most its bucket's
    mark (``tiers.marks``), clustered on (tier, item_id). Rows above the mark (the *tail*)
    are mapped by an in-memory dict the store rebuilds from the tail on open; it is written
    into ``ids`` in sorted steps, a run of buckets at a time (see ``fold.py``). Why: a
    b-tree keyed by random 128-bit ids dirties one random page per inserted id, so a
    synchronously maintained index on ``items`` cost one WAL frame per new item on a large
    store; folding the ids in bulk touches each leaf page once per pass instead. An
    ``ids`` entry whose row moved into the tail is stale and shadowed by the tail map.
``filters``
    (version 3) Per tier, a Bloom filter of the ids in ``ids`` (``idfilter.py``) and the
    number of ids added to it, saved once per round of fold steps; (version 4) ``upto``, the
    lowest bucket mark when it was saved: on open, the ids of rows between ``upto`` and
    their bucket's mark are added to it. A store without a saved filter builds it from
    ``ids`` when it opens.
``tiers``
    Per tier: the last sequence number handed out (never reused, even when the row holding
    it is purged); (version 2) ``merged``, the sequence up to which ``ids`` is complete for
    every bucket; (version 4) ``marks``, 256 big-endian u64 marks, one per first byte of
    ``item_id`` (bucket): ``ids`` holds every row of the bucket at or below its mark. NULL
    means every bucket is at ``merged``; (version 8) ``purged``, the highest sequence of a
    row a purge removed: a change feed resumed from below it would miss a deletion.
``digests``
    (version 3) Per tier, the 256 bucket digests (sum of row hashes mod 2**256, bucket =
    item_id[0]) as one 8 KiB blob of 32-byte big-endian values: a batch of random ids
    changes nearly every bucket, and one row write costs far less than 256. Versions 1
    and 2 had a ``buckets`` table with one row per (tier, bucket).
``meta``
    ``incarnation`` (16 random bytes made at creation) and ``clock_hwm``; (version 5)
    ``clock_lease``: every timestamp this node may have pushed before committing it is
    below the lease, so a restart waits for (or starts its clock at) the lease.
``cursors``
    The sync vectors: for (peer, tier), the highest sequence *of that peer* applied here
    (``applied``) and the highest sequence *of ours* the peer acknowledged (``acked``, for
    tombstone purging).
``peers``
    The last incarnation seen for each peer, to detect a recreated store.
``names``
    (version 8) The names index of NAMED items (SPEC.md section 2.1): (tier, namespace as
    ``agents/alden/``, key) -> item id, clustered on the name for prefix listing
    (``names.py``). One entry per named item; (version 11) written with the row that
    creates it into ``names_tail`` (a rowid table appended at its end) and folded into
    ``names`` in name order by maintenance steps (``nametail.py``), the fold cycle's
    progress in ``meta`` (``names_fold_rid``, ``names_fold_at``); (version 13) the tail is
    ``names_log``, one row per apply holding all its new names packed (item id, then the
    name block, back to back), ``names_fold_rid`` a rowid of the log.
``conflicts``
    The bounded conflict log; (version 6) unique per (tier, item, winner key, loser key),
    so the same loss seen twice (a resent batch) is logged once; (version 7) that index
    leads with the two timestamps, so it grows at its end like the table; (version 9)
    true conflicts only (SPEC.md section 2.2), each with the item's name, both versions'
    ops and values, its size in bytes, and the key of the write that resolved it
    (``conflicts.py``). An entry dropped for the byte bound keeps its keys (``dropped`` 1,
    values cleared) so that it is never logged again; keys rows beyond ``conflict_limit``
    go for good.
``history``
    (version 10) The last versions seen of each item (``history.py``): wire payloads keyed
    by (tier, item, version key), at most N per item and tier, bounded in bytes; (version
    12) written on apply into ``history_tail`` (a rowid table appended at its end) and
    folded into ``history`` in key order by maintenance steps (``histtail.py``), the fold
    cycle's progress in ``meta`` (``history_fold_rid``, ``history_fold_at``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaError", "migrate"]


class SchemaError(Exception):
    """The database file has a schema this version of meshsyncd cannot use."""


def _v1(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would COMMIT the migration's transaction.
    script = """
        CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE items (
            tier INTEGER NOT NULL,
            item_id BLOB NOT NULL,
            ts INTEGER NOT NULL,
            origin INTEGER NOT NULL,
            op INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            flags INTEGER NOT NULL,
            payload BLOB NOT NULL,
            fields TEXT,
            bhash BLOB NOT NULL
        );
        CREATE UNIQUE INDEX items_by_id ON items (tier, item_id);
        CREATE TABLE tiers (tier INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
        INSERT INTO tiers VALUES (0, 0), (1, 0), (2, 0);
        CREATE TABLE buckets (
            tier INTEGER NOT NULL, bucket INTEGER NOT NULL, digest BLOB NOT NULL,
            PRIMARY KEY (tier, bucket)
        ) WITHOUT ROWID;
        CREATE TABLE cursors (
            peer INTEGER NOT NULL, tier INTEGER NOT NULL,
            applied INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (peer, tier)
        ) WITHOUT ROWID;
        CREATE TABLE peers (peer INTEGER PRIMARY KEY, incarnation BLOB NOT NULL);
        CREATE TABLE conflicts (
            id INTEGER PRIMARY KEY,
            at_ns INTEGER NOT NULL,
            tier INTEGER NOT NULL,
            item_id BLOB NOT NULL,
            winner_ts INTEGER NOT NULL, winner_origin INTEGER NOT NULL,
            loser_ts INTEGER NOT NULL, loser_origin INTEGER NOT NULL
        );
        """
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('incarnation', ?)", (os.urandom(16),))
    conn.execute("INSERT INTO meta VALUES ('clock_hwm', ?)", (-(1 << 63),))  # biased 0


def _v2(conn: sqlite3.Connection) -> None:
    # Every existing row is below the new mark, so ``ids`` starts complete and the tail empty.
    conn.execute(
        "CREATE TABLE ids (tier INTEGER NOT NULL, item_id BLOB NOT NULL, rid INTEGER NOT NULL,"
        " PRIMARY KEY (tier, item_id)) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO ids (tier, item_id, rid) SELECT tier, item_id, rowid FROM items"
        " ORDER BY tier, item_id"
    )
    conn.execute("DROP INDEX items_by_id")
    conn.execute("ALTER TABLE tiers ADD COLUMN merged INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE tiers SET merged = seq")


def _v3(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE digests (tier INTEGER PRIMARY KEY, buckets BLOB NOT NULL)")
    for tier in range(3):
        values = [bytes(32)] * 256
        for bucket, digest in conn.execute(
            "SELECT bucket, digest FROM buckets WHERE tier = ?", (tier,)
        ):
            values[bucket] = bytes(digest)
        conn.execute("INSERT INTO digests VALUES (?, ?)", (tier, b"".join(values)))
    conn.execute("DROP TABLE buckets")
    conn.execute(
        "CREATE TABLE filters (tier INTEGER PRIMARY KEY, count INTEGER NOT NULL,"
        " bits BLOB NOT NULL)"
    )


def _v4(conn: sqlite3.Connection) -> None:
    # NULL marks: every bucket at ``merged``, which is what a version 3 store had. A filter
    # saved by version 3 covered ``ids`` up to the tier's mark at the time.
    conn.execute("ALTER TABLE tiers ADD COLUMN marks BLOB")
    conn.execute("ALTER TABLE filters ADD COLUMN upto INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        "UPDATE filters SET upto = (SELECT merged FROM tiers WHERE tiers.tier = filters.tier)"
    )


def _v5(conn: sqlite3.Connection) -> None:
    # No timestamp has ever left a version 4 node before its commit: the lease starts at 0.
    conn.execute("INSERT INTO meta VALUES ('clock_lease', ?)", (-(1 << 63),))  # biased 0


def _v6(conn: sqlite3.Connection) -> None:
    # One entry per conflict: a batch applied in parts and then resent whole (or a push and
    # a pull carrying the same versions) used to log the same loss again.
    conn.execute(
        "DELETE FROM conflicts WHERE id NOT IN (SELECT min(id) FROM conflicts"
        " GROUP BY tier, item_id, winner_ts, winner_origin, loser_ts, loser_origin)"
    )
    conn.execute(
        "CREATE UNIQUE INDEX conflicts_once ON conflicts"
        " (tier, item_id, winner_ts, winner_origin, loser_ts, loser_origin)"
    )


def _v7(conn: sqlite3.Connection) -> None:
    # The same uniqueness, keyed by time first: conflicts arrive near "now", so new entries
    # (and the oldest ones the bound trims) land on a few pages at the ends of the index
    # instead of one random page each, as an index led by item_id had them.
    conn.execute("DROP INDEX conflicts_once")
    conn.execute(
        "CREATE UNIQUE INDEX conflicts_once ON conflicts"
        " (loser_ts, winner_ts, tier, item_id, winner_origin, loser_origin)"
    )


def _v8(conn: sqlite3.Connection) -> None:
    # Empty at creation: no store before version 8 can hold a NAMED item (a protocol-2
    # decoder refused flag bit 1), so there is nothing to backfill. ``purged`` starts at
    # the tier's sequence: what an older version purged is unknown, so a change feed may
    # resume only from here on.
    conn.execute("ALTER TABLE tiers ADD COLUMN purged INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE tiers SET purged = seq")
    conn.execute(
        "CREATE TABLE names (tier INTEGER NOT NULL, ns TEXT NOT NULL, key TEXT NOT NULL,"
        " item_id BLOB NOT NULL, PRIMARY KEY (tier, ns, key)) WITHOUT ROWID"
    )


def _v9(conn: sqlite3.Connection) -> None:
    # The old log recorded every loss between two origins, mostly sequential overwrites,
    # with neither ops nor values: nothing in it can be reviewed, so it is not converted.
    conn.execute("DROP TABLE conflicts")
    conn.execute(
        "CREATE TABLE conflicts (id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL,"
        " tier INTEGER NOT NULL, item_id BLOB NOT NULL, ns TEXT, key TEXT,"
        " winner_ts INTEGER NOT NULL, winner_origin INTEGER NOT NULL, winner_op INTEGER NOT NULL,"
        " loser_ts INTEGER NOT NULL, loser_origin INTEGER NOT NULL, loser_op INTEGER NOT NULL,"
        " winner_value BLOB, loser_value BLOB, size INTEGER NOT NULL,"
        " dropped INTEGER NOT NULL DEFAULT 0, resolved_ts INTEGER, resolved_origin INTEGER)"
    )
    conn.execute(
        "CREATE UNIQUE INDEX conflicts_once ON conflicts"
        " (winner_ts, loser_ts, tier, item_id, winner_origin, loser_origin)"
    )
    conn.execute("CREATE INDEX conflicts_by_item ON conflicts (tier, item_id)")
    conn.execute("INSERT INTO meta VALUES ('conflict_drops', 0)")


def _v10(conn: sqlite3.Connection) -> None:
    # Empty at creation: the versions an older node saw are gone.
    # Clustered on the key: one b-tree insert per version (no separate index).
    conn.execute(
        "CREATE TABLE history (tier INTEGER NOT NULL, item_id BLOB NOT NULL,"
        " ts INTEGER NOT NULL, origin INTEGER NOT NULL, op INTEGER NOT NULL,"
        " flags INTEGER NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL,"
        " PRIMARY KEY (tier, item_id, ts, origin)) WITHOUT ROWID"
    )


def _v11(conn: sqlite3.Connection) -> None:
    # The names tail (nametail.py): new names appended on apply, folded into ``names`` in
    # name order. Empty at creation: every existing name is already in ``names``.
    conn.execute(
        "CREATE TABLE names_tail (tier INTEGER NOT NULL, ns TEXT NOT NULL, key TEXT NOT NULL,"
        " item_id BLOB NOT NULL)"
    )
    conn.execute("INSERT INTO meta VALUES ('names_fold_rid', 0)")
    conn.execute("INSERT INTO meta VALUES ('names_fold_at', '[]')")


def _v12(conn: sqlite3.Connection) -> None:
    # The history tail (histtail.py): versions appended on apply, folded into ``history`` in
    # key order. Empty at creation: every recorded version is already in ``history``.
    conn.execute(
        "CREATE TABLE history_tail (tier INTEGER NOT NULL, item_id BLOB NOT NULL,"
        " ts INTEGER NOT NULL, origin INTEGER NOT NULL, op INTEGER NOT NULL,"
        " flags INTEGER NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL)"
    )
    conn.execute("INSERT INTO meta VALUES ('history_fold_rid', 0)")
    conn.execute("INSERT INTO meta VALUES ('history_fold_at', '[]')")


def _v13(conn: sqlite3.Connection) -> None:
    # The names tail becomes a log of packed entries, one row per apply (nametail.py: a
    # row per name cost as much as the name's fold into the index). Whatever the old tail
    # holds, a fold cycle under way included, goes into ``names`` now: the index then
    # holds every name, and the new log starts empty with no cycle.
    conn.execute(
        "INSERT OR IGNORE INTO names (tier, ns, key, item_id)"
        " SELECT tier, ns, key, item_id FROM names_tail"
    )
    conn.execute("DROP TABLE names_tail")
    conn.execute("CREATE TABLE names_log (tier INTEGER NOT NULL, entries BLOB NOT NULL)")
    conn.execute("UPDATE meta SET value = 0 WHERE name = 'names_fold_rid'")
    conn.execute("UPDATE meta SET value = '[]' WHERE name = 'names_fold_at'")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    *(_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10, _v11, _v12, _v13),
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; return the version it started at.

    The connection must be in autocommit mode (``isolation_level=None``).

    Raises:
        SchemaError: the file was written by a newer meshsyncd.
        sqlite3.Error: the file is not a database, or the disk failed.
    """
    start: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if start > SCHEMA_VERSION:
        raise SchemaError(
            f"store schema version {start} is newer than this meshsyncd ({SCHEMA_VERSION})"
        )
    for version in range(start, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return start
