"""Read side of the store: items, changes since a sequence, digests, cursors, conflicts.

Theory of operation: reads never open a write transaction; in WAL mode they see the last
committed state and never block the writer's commits for long. A row is found by id through
the tail map first and the ``ids`` table second (``core.py`` explains the two levels); an
``ids`` entry for an id that is also in the tail map is stale and ignored. Everything here
is a mixin of :class:`meshsyncd.store.core.Store` and shares its single connection (and so
its single-thread rule).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator
from typing import Any

from protocol import Item, Op, Tier

from .idfilter import IdFilter
from .rows import BIAS, MOD, NO_BASE, SEQ_BITS, SEQ_MASK, Row, decode_fields, from_db, to_db

__all__ = ["ReadMixin"]

_ROW_SQL = "SELECT rowid, item_id, ts, origin, op, priority, flags, payload, fields FROM items"


def _row(rec: tuple[Any, ...]) -> tuple[int, Row]:
    rowid, iid, ts, origin, op, prio, flags, payload, ftext = rec
    row = Row(iid, from_db(ts), from_db(origin), op, prio, flags, payload)
    row.fields = decode_fields(ftext)
    return rowid & SEQ_MASK, row


class ReadMixin:
    """Queries over the store's connection (see the module docstring)."""

    _conn: sqlite3.Connection
    _buckets: dict[int, list[int]]
    _seq: dict[int, int]
    _tail: dict[int, dict[bytes, int]]
    _filters: dict[int, IdFilter]

    # -- items ------------------------------------------------------------------------------

    def _locate(self, t: int, item_id: bytes) -> int | None:
        """The rowid of the row of ``item_id`` in tier ``t``, ``None`` if there is none."""
        rid = self._tail[t].get(item_id)
        if rid is None and item_id in self._filters[t]:
            rec = self._conn.execute(
                "SELECT rid FROM ids WHERE tier = ? AND item_id = ?", (t, item_id)
            ).fetchone()
            rid = None if rec is None else int(rec[0])
        return rid

    def _ids_after(self, t: int, after: bytes, limit: int) -> list[tuple[bytes, int]]:
        """The first ``limit`` (item_id, rowid) of tier ``t`` with ids above ``after``."""
        tail = self._tail[t]
        found = heapq.nsmallest(limit, ((i, r) for i, r in tail.items() if i > after))
        last = after
        while True:
            recs = self._conn.execute(
                "SELECT item_id, rid FROM ids WHERE tier = ? AND item_id > ?"
                " ORDER BY item_id LIMIT ?",
                (t, last, limit),
            ).fetchall()
            found.extend((i, r) for i, r in recs if i not in tail)
            if len(recs) < limit or len(found) >= 2 * limit:
                break
            last = recs[-1][0]
        found.sort()
        return found[:limit]

    def get_row(self, tier: Tier, item_id: bytes) -> tuple[int, Row] | None:
        """``(seq, row)`` for one item, tombstones included; ``None`` if never seen."""
        rid = self._locate(int(tier), item_id)
        if rid is None:
            return None
        rec = self._conn.execute(f"{_ROW_SQL} WHERE rowid = ?", (rid,)).fetchone()
        return None if rec is None else _row(rec)

    def _scan(self, tier: Tier, after_seq: int, limit: int) -> sqlite3.Cursor:
        """Rows of ``tier`` above ``after_seq`` in sequence order: a rowid range scan."""
        if not 0 <= after_seq <= SEQ_MASK:
            raise ValueError(f"sequence {after_seq} out of range")
        t = int(tier)
        return self._conn.execute(
            f"{_ROW_SQL} WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
            ((t << SEQ_BITS) | after_seq, (t << SEQ_BITS) | SEQ_MASK, limit),
        )

    def rows_since(self, tier: Tier, after_seq: int, limit: int) -> list[tuple[int, Row]]:
        """Up to ``limit`` rows of ``tier`` whose sequence is above ``after_seq``, in order.

        A range scan of the rowid b-tree (``rowid = tier << 56 | seq``).

        Raises:
            ValueError: ``after_seq`` is negative or does not fit in 56 bits.
        """
        return [_row(rec) for rec in self._scan(tier, after_seq, limit)]

    def changes_since(self, tier: Tier, after_seq: int, limit: int) -> list[tuple[int, Item | Row]]:
        """:meth:`rows_since` for a pull answer: a row that is exactly one whole-value
        version (no MERGE fields; most rows) comes back as that :class:`Item`.

        Why: building a ``Row`` and then its versions, with the item constructor's checks,
        was most of the cost of a 1000-item chunk (~9 ms, on the writer thread and holding
        the GIL). These versions were validated when they entered the store.

        Raises:
            ValueError: ``after_seq`` is negative or does not fit in 56 bits.
        """
        t = int(tier)
        cur = self._scan(tier, after_seq, limit)
        trusted = Item.trusted
        out: list[tuple[int, Item | Row]] = []
        append = out.append
        for rec in cur:
            rowid, iid, ts, origin, op, prio, flags, payload, ftext = rec
            if ftext is None and op != NO_BASE:
                item = trusted(iid, ts + BIAS, origin + BIAS, t, op, prio, flags, payload)
                append((rowid & SEQ_MASK, item))
            else:
                append(_row(rec))
        return out

    def iter_rows(self, tier: Tier, chunk: int = 1000) -> Iterator[tuple[int, Row]]:
        """Every row of ``tier`` in sequence order, read in chunks (bounded memory)."""
        after = 0
        while True:
            rows = self.rows_since(tier, after, chunk)
            yield from rows
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    def scan(
        self,
        tier: Tier,
        *,
        limit: int = 100,
        after_id: bytes = b"",
        include_deleted: bool = False,
    ) -> list[tuple[int, Row]]:
        """Rows of ``tier`` in item-id order after ``after_id`` (paging for the CLI)."""
        out: list[tuple[int, Row]] = []
        last = after_id
        while len(out) < limit:
            entries = self._ids_after(int(tier), last, limit)
            for _iid, rid in entries:
                seq, row = _row(
                    self._conn.execute(f"{_ROW_SQL} WHERE rowid = ?", (rid,)).fetchone()
                )
                if include_deleted or not row.deleted:
                    out.append((seq, row))
                    if len(out) == limit:
                        break
            if len(entries) < limit:
                break
            last = entries[-1][0]
        return out

    def count(self, tier: Tier) -> int:
        """Rows in ``tier``, tombstones included."""
        t = int(tier)
        n: int = self._conn.execute(
            "SELECT count(*) FROM items WHERE rowid > ? AND rowid <= ?",
            (t << SEQ_BITS, (t << SEQ_BITS) | SEQ_MASK),
        ).fetchone()[0]
        return n

    def tally(self, tier: Tier, after_seq: int, limit: int) -> tuple[int, int, int]:
        """Count up to ``limit`` rows of ``tier`` above ``after_seq``: (rows, tombstones, last).

        ``last`` is the sequence of the last row counted (``after_seq`` if none). Why in
        pieces: a whole-tier count reads every row (~0.27 s on a million), and on the
        writer thread that is how long an urgent write would wait behind ``status``; the
        caller sums pieces, each its own worker call.
        """
        t = int(tier)
        rows, dead, last = self._conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE op IN (?, ?) AND fields IS NULL),"
            " max(rowid) FROM (SELECT rowid, op, fields FROM items"
            " WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?)",
            (
                NO_BASE,
                int(Op.DELETE),
                (t << SEQ_BITS) | after_seq,
                (t << SEQ_BITS) | SEQ_MASK,
                limit,
            ),
        ).fetchone()
        return rows, dead, after_seq if last is None else last & SEQ_MASK

    def tier_seq(self, tier: Tier) -> int:
        """The last local sequence number handed out in ``tier``."""
        return self._seq[int(tier)]

    # -- digests ----------------------------------------------------------------------------

    def digest(self, tier: Tier) -> bytes:
        """Order-independent digest of the tier's state (sum of row hashes mod 2**256)."""
        return (sum(self._buckets[int(tier)]) % MOD).to_bytes(32, "big")

    def bucket_digests(self, tier: Tier) -> list[bytes]:
        """256 digests, one per first byte of item_id, for narrowing down a difference."""
        return [b.to_bytes(32, "big") for b in self._buckets[int(tier)]]

    # -- sync vectors and peers -------------------------------------------------------------

    def cursor(self, peer: int, tier: Tier) -> int:
        """Highest sequence of ``peer`` in ``tier`` applied here (0: from the start)."""
        rec = self._conn.execute(
            "SELECT applied FROM cursors WHERE peer = ? AND tier = ?", (to_db(peer), int(tier))
        ).fetchone()
        return 0 if rec is None else int(rec[0])

    def acked(self, peer: int, tier: Tier) -> int:
        """Highest sequence of ours in ``tier`` that ``peer`` acknowledged."""
        rec = self._conn.execute(
            "SELECT acked FROM cursors WHERE peer = ? AND tier = ?", (to_db(peer), int(tier))
        ).fetchone()
        return 0 if rec is None else int(rec[0])

    def sync_vector(self, peer: int) -> dict[Tier, int]:
        """All cursors for ``peer``, by tier."""
        return {tier: self.cursor(peer, tier) for tier in Tier}

    def peer_incarnation(self, peer: int) -> bytes | None:
        rec = self._conn.execute(
            "SELECT incarnation FROM peers WHERE peer = ?", (to_db(peer),)
        ).fetchone()
        return None if rec is None else bytes(rec[0])

    def clock_hwm(self) -> int:
        """The persisted clock high-water mark (0 for a new store)."""
        value: int = self._conn.execute(
            "SELECT value FROM meta WHERE name = 'clock_hwm'"
        ).fetchone()[0]
        return from_db(value)

    def clock_lease(self) -> int:
        """The persisted clock lease (0 for a new store); see ``engine.py``."""
        value: int = self._conn.execute(
            "SELECT value FROM meta WHERE name = 'clock_lease'"
        ).fetchone()[0]
        return from_db(value)
