"""Folding the in-memory tail map into the ``ids`` table, one key range at a time.

Theory of operation (``core.py`` explains the two levels, ``schema.py`` the tables): the
key space of a tier is cut into 256 *buckets* by the first byte of the item id, and each
bucket has its own *mark*: ``ids`` holds every row of the bucket whose sequence is at most
the mark. The tail map holds the rows above their bucket's mark. A *fold step* takes the
next run of buckets (round-robin), writes their tail entries into ``ids`` in id order, moves
their marks to the tier's current sequence and drops the entries from the tail, in one
transaction. The marks are persisted with the step (one 2 KiB blob per tier), so after a
crash at any instant the tail rebuilt on open (rows above their bucket's mark) and ``ids``
describe the same rows as before the crash.

Why in steps: folding the whole tail at once rewrites nearly every leaf page of ``ids``
(on a store of a million items, ~30 MB and ~0.5 s) inside one call on the single writer
thread, and an urgent write queued behind it waits that long (DESIGN.md "Priorities"). A
step covers about ``fold_entries`` tail entries, so it touches the same share of ``ids``
leaf pages as the fold used to spend per batch: the total work is unchanged, but it comes in
pieces about the size of one apply slice (a quarter of a 1000-item batch; traced, steps of
a whole batch's size were the longest waits of an urgent push during a bulk pull), and the
async engine runs each piece as its own worker call so an urgent call can go between.
:meth:`FoldMixin.maintenance_step` runs one step, on the fullest tier, when the tails of
all tiers together hold more than ``tail_limit`` entries; an apply that finds them above
1.25 times that folds inline (callers that never run maintenance still have a bounded map).
The limit is one budget for all tiers, so memory does not grow with the number of tiers in
use: ~130 bytes per entry, ~8 MiB at the default 50,000 (1.25 times that at most).

Why not more: a fold costs SQLite ~1.2-2.5 us per folded id (a sorted insert into ``ids``)
and Python ~1.5 us (sorting, the filter), whatever the limit. Measured with a 100,000 limit
on a store of a million items, the steady-state apply rate did not move (46k items/s both
ways in a slow hour; medians of 3 runs 59k and 74k against 58k and 74k, alternating, in a
quiet one), while the peak memory of ``bench apply`` grew from 84 to 100-104 MiB.
A bigger tail only postpones the fold: a fresh store of 100,000 items then never folds
inside the benchmark, which flatters it without saving any work.

The Bloom filter (``idfilter.py``) gains a bucket's ids when the bucket is folded, in
memory; it is saved when the round-robin wraps around, with ``upto``, the lowest mark at
that moment. Every id written into ``ids`` after the save belongs to a row above ``upto``,
so on open the store adds the ids of the rows between ``upto`` and their bucket's mark to
the saved filter; the filter never misses an id that is in ``ids``.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable
from itertools import repeat

from .bulk import insert_rows
from .idfilter import IdFilter
from .rows import SEQ_BITS, SEQ_MASK
from .txn import TxnHooks

__all__ = ["BUCKETS", "FoldMixin"]

BUCKETS = 256


_MARKS = struct.Struct(f">{BUCKETS}Q")


def _pack_marks(marks: list[int]) -> bytes:
    return _MARKS.pack(*marks)


def _unpack_marks(blob: bytes | None, merged: int) -> list[int]:
    if blob is None:
        return [merged] * BUCKETS
    return list(_MARKS.unpack(blob))


class FoldMixin(TxnHooks):
    """The tail map, the per-bucket marks and the id filters of a store (module docstring)."""

    _conn: sqlite3.Connection
    _seq: dict[int, int]
    tail_limit: int
    fold_entries: int

    replicated_synchronous: str

    # -- loading ----------------------------------------------------------------------------

    def _load_tail(self) -> None:
        """Rebuild the tail maps, marks and filters from the file (open, rollback).

        Built aside and published at the end: the trio thread reads ``_tail`` without the
        worker (``needs_maintenance``), and must never see a map being filled.
        """
        tails: dict[int, dict[bytes, int]] = {}
        pendings: dict[int, list[list[bytes]]] = {}
        all_marks: dict[int, list[int]] = {}
        filters: dict[int, IdFilter] = {}
        saved = {t: (n, b, u) for t, n, b, u in self._conn.execute("SELECT * FROM filters")}
        tiers = self._conn.execute("SELECT tier, merged, marks FROM tiers").fetchall()
        for t, merged, blob in tiers:
            marks = all_marks[t] = _unpack_marks(blob, merged)
            tail: dict[bytes, int] = {}
            pending: list[list[bytes]] = [[] for _ in range(BUCKETS)]
            if t in saved:
                count, bits, upto = saved[t]
                idf = IdFilter(bytearray(bits), count)
            else:
                idf, upto = self._build_filter(t), SEQ_MASK
            missed: list[bytes] = []
            low = (t << SEQ_BITS) | min(upto, *marks)
            for iid, rid in self._conn.execute(
                "SELECT item_id, rowid FROM items WHERE rowid > ? AND rowid <= ?",
                (low, (t << SEQ_BITS) | SEQ_MASK),
            ):
                if rid & SEQ_MASK > marks[iid[0]]:
                    tail[iid] = rid
                    pending[iid[0]].append(iid)
                elif rid & SEQ_MASK > upto:
                    missed.append(iid)  # folded after the filter was saved
            idf.add_all(missed)
            tails[t], pendings[t], filters[t] = tail, pending, idf
        self._marks, self._next_bucket = all_marks, dict.fromkeys(all_marks, 0)
        self._pending, self._filters = pendings, filters
        self._tail = tails  # last: needs_maintenance reads it from another thread

    def _build_filter(self, t: int) -> IdFilter:
        n = self._conn.execute("SELECT count(*) FROM ids WHERE tier = ?", (t,)).fetchone()[0]
        fresh = IdFilter.for_capacity(2 * n)
        fresh.add_all(
            r[0] for r in self._conn.execute("SELECT item_id FROM ids WHERE tier = ?", (t,))
        )
        return fresh

    # -- folding ----------------------------------------------------------------------------

    def _note_tail(self, t: int, iid: bytes, rid: int) -> None:
        """Record that ``iid`` now lives at ``rid`` in the tail (slow path, few callers)."""
        self._tail[t][iid] = rid
        self._pending[t][iid[0]].append(iid)

    def tail_size(self) -> int:
        """Tail entries of all tiers together (what ``tail_limit`` bounds)."""
        return sum(len(tail) for tail in self._tail.values())

    @property
    def needs_maintenance(self) -> bool:
        """True when the tails of all tiers hold more than ``tail_limit`` entries, or the
        names tail or the history tail is due for (or in) a fold cycle (``nametail.py``,
        ``histtail.py``)."""
        return self.tail_size() > self.tail_limit or self.names_due or self.history_due

    @property
    def names_due(self) -> bool:
        raise NotImplementedError  # nametail.NameTailMixin

    def _name_fold_step(self, force: bool = False) -> bool:
        raise NotImplementedError  # nametail.NameTailMixin

    # histtail.HistoryTailMixin (after this class in the store's bases: annotations only)
    history_due: bool
    _history_fold_step: Callable[..., bool]

    def maintenance_step(self) -> bool:
        """Fold one run of buckets of the fullest tier if the tails are above ``tail_limit``,
        else one run of the names tail's fold cycle if it is due, else one of the history
        tail's.

        Its own short transaction; returns whether it did anything. Cheap to call when
        nothing is due.

        Raises:
            sqlite3.Error: the disk failed; nothing was folded.
        """
        ids_due = self.tail_size() > self.tail_limit
        names_due = self.names_due
        if not ids_due and not names_due and not self.history_due:
            return False
        self._begin(self.replicated_synchronous)
        try:
            if ids_due:
                self._fold_step(max(self._tail, key=lambda tier: len(self._tail[tier])))
            elif names_due:
                self._name_fold_step()
            else:
                self._history_fold_step()
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return True

    @property
    def hard_limit(self) -> int:
        """Tail size above which an apply folds inline: 1.25 x ``tail_limit``."""
        return self.tail_limit + self.tail_limit // 4

    def _fold_inline(self) -> None:
        """Inside an apply: fold the fullest tier while the tails are above the hard limit."""
        while self.tail_size() > self.hard_limit:
            self._fold_step(max(self._tail, key=lambda tier: len(self._tail[tier])))

    def _fold_step(self, t: int) -> None:
        """Fold the next buckets holding about ``fold_entries`` tail entries (in a txn)."""
        tail, pending, marks = self._tail[t], self._pending[t], self._marks[t]
        start = b = self._next_bucket[t]
        want = max(1, self.fold_entries)
        ids: list[bytes] = []
        wrapped = False
        while True:
            ids.extend(pending[b])
            pending[b] = []
            marks[b] = self._seq[t]
            b = (b + 1) % BUCKETS
            wrapped = b == 0
            if len(ids) >= want or wrapped or b == start:
                break
        self._next_bucket[t] = b
        # An id moved twice is pending twice; a purged one may be pending but gone.
        order = sorted(set(filter(tail.__contains__, ids)))
        rids = list(map(tail.pop, order))
        insert_rows(
            self._conn,
            "INSERT OR REPLACE INTO ids (tier, item_id, rid)",
            3,
            list(zip(repeat(t), order, rids)),
        )
        self._conn.execute(
            "UPDATE tiers SET merged = ?, marks = ? WHERE tier = ?",
            (min(marks), _pack_marks(marks), t),
        )
        idf = self._filters[t]
        if idf.count + len(order) > idf.capacity:
            # ``ids`` already holds this step's ids: the rebuild covers them, at twice the size.
            idf = self._filters[t] = self._build_filter(t)
            wrapped = True
        else:
            idf.add_all(order)
        if wrapped:
            self._conn.execute(
                "INSERT OR REPLACE INTO filters (tier, count, bits, upto) VALUES (?, ?, ?, ?)",
                (t, idf.count, idf.bits, min(marks)),
            )
