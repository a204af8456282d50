"""Read side of the store: items, changes since a sequence, digests, cursors, conflicts.

Theory of operation: reads never open a write transaction; in WAL mode they see the last
committed state and never block the writer's commits for long. Everything here is a mixin
of :class:`meshsyncd.store.core.Store` and shares its single connection (and so its
single-thread rule).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from protocol import Tier

from .rows import MOD, Row, decode_fields, from_db, to_db

__all__ = ["ReadMixin"]

SEQ_BITS = 56
SEQ_MASK = (1 << SEQ_BITS) - 1
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

    # -- items ------------------------------------------------------------------------------

    def get_row(self, tier: Tier, item_id: bytes) -> tuple[int, Row] | None:
        """``(seq, row)`` for one item, tombstones included; ``None`` if never seen."""
        rec = self._conn.execute(
            f"{_ROW_SQL} WHERE tier = ? AND item_id = ?", (int(tier), item_id)
        ).fetchone()
        return None if rec is None else _row(rec)

    def rows_since(self, tier: Tier, after_seq: int, limit: int) -> list[tuple[int, Row]]:
        """Up to ``limit`` rows of ``tier`` whose sequence is above ``after_seq``, in order.

        A range scan of the rowid b-tree (``rowid = tier << 56 | seq``).

        Raises:
            ValueError: ``after_seq`` is negative or does not fit in 56 bits.
        """
        if not 0 <= after_seq <= SEQ_MASK:
            raise ValueError(f"sequence {after_seq} out of range")
        t = int(tier)
        cur = self._conn.execute(
            f"{_ROW_SQL} WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
            ((t << SEQ_BITS) | after_seq, (t << SEQ_BITS) | SEQ_MASK, limit),
        )
        return [_row(rec) for rec in cur]

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
            recs = self._conn.execute(
                f"{_ROW_SQL} WHERE tier = ? AND item_id > ? ORDER BY tier, item_id LIMIT ?",
                (int(tier), last, limit),
            ).fetchall()
            for rec in recs:
                seq, row = _row(rec)
                if include_deleted or not row.deleted:
                    out.append((seq, row))
                    if len(out) == limit:
                        break
            if len(recs) < limit:
                break
            last = recs[-1][1]
        return out

    def count(self, tier: Tier) -> int:
        """Rows in ``tier``, tombstones included."""
        n: int = self._conn.execute(
            "SELECT count(*) FROM items WHERE tier = ?", (int(tier),)
        ).fetchone()[0]
        return n

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
