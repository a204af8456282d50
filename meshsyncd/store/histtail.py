"""The history tail: versions appended on apply, folded into ``history`` in key order.

Theory of operation (``history.py`` says what is recorded, ``nametail.py`` the same idea for
names): ``history`` is clustered on (tier, item, version key), and the items an apply
touches are random within it, so each recorded version used to dirty about one random leaf
page of the table; on the 1,000,000-item apply benchmark that was ~100 extra pages written
to the WAL per 1,000-item batch (each ~8 KiB, again at the checkpoint): 249 frames per batch
against 160 with history off. Now the apply appends the versions
to ``history_tail``, a rowid table written at its end (a few pages per batch), in the same
transaction, so they are exactly as crash-safe as before. The store keeps each tail row's
item, key, rowid and size in memory, so :meth:`HistoryMixin.history` reads an item's tail
rows by rowid at once, and a version already in the tail is not appended again.

Folding: once the tail holds ``history_limit`` rows, a *fold cycle* starts: the rows present
at that moment (``rowid <= cycle_rid``) are sorted by key and copied into ``history`` with
``INSERT OR IGNORE`` (a version recorded before the tail existed, or folded by an earlier
cycle, is not recorded twice) in runs of ``fold_entries`` per maintenance step, each step
trimming the items it touched to their newest N and recording the last key it moved
(``history_fold_at`` in ``meta``). Sorted runs touch each leaf page of ``history`` once per
cycle instead of once per version. The last step deletes the cycle's rows from the tail (a
prefix of its rowids). Rows appended during a cycle wait for the next one.

Crash safety: the tail, ``history_fold_rid`` and ``history_fold_at`` change only inside
transactions, together with ``history``. On open (and after a rollback) the memory is
rebuilt from them: a tail row of the current cycle whose key is at or before
``history_fold_at`` is already in ``history``; every other tail row is pending.

Bounds: an item may hold more than N versions between two folds (reads still list at most
N); the byte bound counts the pending tail rows too, and when it is passed the whole tail
is folded first, then the oldest versions go (``history.py``). Memory: ~250 bytes per tail
row, at most 1.25 times ``history_limit`` (an apply past that folds inline, for callers that
never run maintenance). A purge that removes an item with rows in the tail folds the tail
first, so that its versions go from one place.

Cost, same benchmark: 171 WAL frames per batch, the fold of the run's versions included.
The append takes its values from memory (a replaced row is read with its payload by the
slice's one read of its rows), so the apply thread's CPU with history on is within the
noise of history off; what remains is the extra WAL (tail and history pages, the fold
steps' commits) and its checkpoints.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from protocol import Tier

from .existing import padded
from .txn import TxnHooks

__all__ = ["HistoryTailMixin", "TailRow"]

# (tier, item id, ts, origin, rowid, size): ts and origin as stored (biased), so that the
# tuples sort like the clustered key of ``history``.
TailRow = tuple[int, bytes, int, int, int, int]
_COLS = "tier, item_id, ts, origin, op, flags, payload, size"
_IN = 256


class HistoryTailMixin(TxnHooks):
    """The history tail of :class:`meshsyncd.store.core.Store` (module docstring)."""

    _conn: sqlite3.Connection
    _history_total: int
    _ht_next: int
    history_versions: dict[Tier, int]
    history_limit: int
    replicated_synchronous: str
    fold_entries: int

    # -- loading ----------------------------------------------------------------------------

    def _load_history_tail(self) -> int:
        """Rebuild the tail's memory from ``history_tail`` and the cycle's marks; return the
        bytes of the rows not yet folded (open, rollback)."""
        meta = dict(
            self._conn.execute(
                "SELECT name, value FROM meta WHERE name IN ('history_fold_rid', 'history_fold_at')"
            ).fetchall()
        )
        cycle_rid = int(meta.get("history_fold_rid", 0))
        at_raw = json.loads(meta.get("history_fold_at", "[]"))
        at = (at_raw[0], bytes.fromhex(at_raw[1]), *at_raw[2:]) if at_raw else None
        rows: dict[int, dict[bytes, list[TailRow]]] = {}
        cycle: list[TailRow] = []
        pending_bytes = new = 0
        for rid, t, iid, ts, origin, size in self._conn.execute(
            "SELECT rowid, tier, item_id, ts, origin, size FROM history_tail"
        ):
            row = (t, iid, ts, origin, rid, size)
            rows.setdefault(t, {}).setdefault(iid, []).append(row)
            if rid <= cycle_rid:
                if at is None or row[:5] > at:
                    cycle.append(row)
                    pending_bytes += size
            else:
                new += 1
                pending_bytes += size
        cycle.sort()
        self._ht_rows = rows
        self._ht_new = new
        self._ht_cycle = cycle
        self._ht_pos = 0
        self._ht_rid = cycle_rid
        # Rowids of appended rows are given (history.py), above every row in the table.
        self._ht_next = 1 + max(
            (r[4] for v in rows.values() for rs in v.values() for r in rs), default=0
        )
        return pending_bytes

    # -- the apply side ---------------------------------------------------------------------

    def _ht_add(self, t: int, rows: list[tuple[Any, ...]]) -> int:
        """Remember rows appended with their rowids given, as (rowid, tier, item id, ts,
        origin, op, flags, payload, size), none of them in the tail before; return their bytes."""
        by_id = self._ht_rows.setdefault(t, {})
        added = 0
        for rid, _t, iid, ts, origin, _op, _flags, _payload, size in rows:
            found = by_id.get(iid)
            if found is None:
                by_id[iid] = [(t, iid, ts, origin, rid, size)]
            else:
                found.append((t, iid, ts, origin, rid, size))
            added += size
        self._ht_new += len(rows)
        self._ht_next = rows[-1][0] + 1
        return added

    def _ht_has(self, t: int, iid: bytes, ts: int, origin: int) -> bool:
        """Whether the tail holds that version (stored key values) of the item already."""
        found = self._ht_rows.get(t, {}).get(iid)
        return found is not None and any(r[2] == ts and r[3] == origin for r in found)

    def _ht_rowids(self, t: int, iid: bytes) -> list[int]:
        """Rowids of the item's tail rows (read side)."""
        return [r[4] for r in self._ht_rows.get(t, {}).get(iid, ())]

    def _ht_bound(self) -> None:
        """Fold inline when no maintenance (or not enough) keeps the tail under its limit."""
        if self._ht_new > self.history_limit + self.history_limit // 4:
            self._fold_history_all()

    # -- folding ----------------------------------------------------------------------------

    @property
    def history_due(self) -> bool:
        """True while a history fold cycle is under way or the tail is full enough to start one."""
        return bool(self._ht_rid) or self._ht_new >= self.history_limit

    def fold_history(self) -> bool:
        """Fold the whole tail now, in its own transaction; return whether there was any.

        Why: ``bench apply`` times it at the end of a run, so that the fold work of the
        versions its run recorded is counted even when no cycle came due within the run.

        Raises:
            sqlite3.Error: the disk failed; nothing was folded.
        """
        if not (self._ht_rid or self._ht_new):
            return False
        self._begin(self.replicated_synchronous)
        try:
            self._fold_history_all()
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return True

    def _fold_history_all(self) -> None:
        """Fold the whole tail into ``history`` (inside the caller's transaction): before a
        purge or the byte bound deletes from ``history``, and past the hard limit."""
        while self._ht_rid and self._history_fold_step():
            pass
        while self._history_fold_step(force=True):
            pass

    def _history_fold_step(self, force: bool = False) -> bool:
        """Move the next run of the cycle into ``history`` (inside the caller's transaction).

        Starts a cycle when none is under way and the tail holds ``history_limit`` rows (any
        number with ``force``). Returns whether the cycle goes on after this step.
        """
        execute = self._conn.execute
        if not self._ht_rid:
            if not self._ht_new or (not force and self._ht_new < self.history_limit):
                return False
            cycle = sorted(r for by_id in self._ht_rows.values() for v in by_id.values() for r in v)
            self._ht_rid = max(r[4] for r in cycle)
            self._ht_cycle, self._ht_pos, self._ht_new = cycle, 0, 0
            execute("UPDATE meta SET value = ? WHERE name = 'history_fold_rid'", (self._ht_rid,))
        cycle, start = self._ht_cycle, self._ht_pos
        end = min(len(cycle), start + max(1, self.fold_entries))
        run = cycle[start:end]
        self._history_total -= sum(r[5] for r in run)
        # A run is a key range of the cycle: whatever the order of its inserts, they dirty
        # the same pages of ``history``, written once at the step's commit (no ORDER BY sort).
        for lo in range(0, len(run), _IN):
            rids = padded([r[4] for r in run[lo : lo + _IN]])
            got = execute(
                f"INSERT OR IGNORE INTO history ({_COLS}) SELECT {_COLS} FROM history_tail"
                f" WHERE rowid IN ({','.join('?' * len(rids))}) RETURNING size",
                rids,
            )
            self._history_total += sum(r[0] for r in got)
        touched: dict[int, list[bytes]] = {}
        for r in run:
            ids = touched.setdefault(r[0], [])
            if not ids or ids[-1] != r[1]:
                ids.append(r[1])
        for t, ids in touched.items():
            self._trim_items(t, ids)
        self._ht_pos = end
        if end < len(cycle):
            last = cycle[end - 1]
            execute(
                "UPDATE meta SET value = ? WHERE name = 'history_fold_at'",
                (json.dumps([last[0], last[1].hex(), last[2], last[3], last[4]]),),
            )
            return True
        execute("DELETE FROM history_tail WHERE rowid <= ?", (self._ht_rid,))
        execute("UPDATE meta SET value = 0 WHERE name = 'history_fold_rid'")
        execute("UPDATE meta SET value = '[]' WHERE name = 'history_fold_at'")
        rid = self._ht_rid
        for t, by_id in self._ht_rows.items():
            self._ht_rows[t] = {
                iid: left for iid, v in by_id.items() if (left := [r for r in v if r[4] > rid])
            }
        self._ht_rid, self._ht_cycle, self._ht_pos = 0, [], 0
        return False

    def _trim_items(self, t: int, ids: list[bytes]) -> None:
        raise NotImplementedError  # history.HistoryMixin

    def history_tail_stats(self) -> dict[str, Any]:
        """Tail rows not yet folded and whether a fold cycle is under way (tests, metrics)."""
        left = len(self._ht_cycle) - self._ht_pos if self._ht_rid else 0
        return {"pending": self._ht_new + left, "cycle": bool(self._ht_rid)}
