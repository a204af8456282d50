"""Per-item history: the last N versions this node has seen of every item, bounded in bytes.

Theory of operation: the ``history`` table holds versions seen (winners and losers: whole
values, DELETEs and MERGEs, wire payload with name and base) keyed by (tier, item, version
key). The item's current whole-value version is always its row in ``items``, so nothing is
recorded when a version of a new id is inserted by the fast path of ``core.py`` (the common
case of a pull). A slice's fold path records, before its writes, the versions it folded
that did not become the row (losers, MERGEs, ids repeated in the slice) and, by an SQL-side
copy (no payload read into Python), each stored base it replaced: a version that became
the row is copied only once it is replaced. ``INSERT OR IGNORE`` on the key makes
redelivery (sync, relay, repair, restarts) record nothing twice; triggers keep the table's
byte count in ``meta``, so the bound costs no scan. Then each touched item keeps its
newest ``N`` (per tier; 0 turns history off) in one windowed ``DELETE`` per slice, and the
whole table stays under ``history_bytes``: the oldest entries by arrival go first.
:meth:`history` lists the current row and the table, newest key first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol import Item, Op, Tier

from .rows import Key, from_db, plain_value, to_db

__all__ = ["DEFAULT_HISTORY", "HistoryEntry", "HistoryMixin"]

DEFAULT_HISTORY: Mapping[Tier, int] = {Tier.WORKING: 8, Tier.EPISODIC: 8, Tier.SEMANTIC: 8}
_INSERT = (
    "INSERT OR IGNORE INTO history (tier, item_id, ts, origin, op, flags, payload, size)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_COPY = (
    "INSERT OR IGNORE INTO history (tier, item_id, ts, origin, op, flags, payload, size)"
    " SELECT tier, item_id, ts, origin, op, flags, payload, length(payload) + 64 FROM items"
    " WHERE rowid = ? AND op != 0"
)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One version of an item as seen here: its key, op and value (``None``: a DELETE)."""

    key: Key
    op: Op
    value: bytes | None
    current: bool


class HistoryMixin:
    """History part of :class:`meshsyncd.store.core.Store`."""

    _conn: sqlite3.Connection
    history_versions: dict[Tier, int]
    history_bytes: int

    def _load_history(self) -> None:
        self._history_total: int = self._history_size()

    def _history_size(self) -> int:
        size: int = self._conn.execute(
            "SELECT value FROM meta WHERE name = 'history_bytes'"
        ).fetchone()[0]
        return size

    def _record_history(
        self, t: int, items: list[Item], replaced: list[int], touched: set[bytes]
    ) -> None:
        """Record a slice's folded versions and replaced bases, then trim (inside the txn)."""
        keep = self.history_versions.get(Tier(t), 0)
        if keep <= 0 or not touched:
            return
        execute = self._conn.execute
        before = self._conn.total_changes
        rows = [
            (t, i[0], to_db(i[1]), to_db(i[2]), int(i[4]), i[6], i[7], len(i[7]) + 64)
            for i in items
        ]
        self._conn.executemany(_INSERT, rows)
        if replaced:
            self._conn.executemany(_COPY, [(rid,) for rid in replaced])
        if self._conn.total_changes == before:
            return
        ids = list(touched)
        for start in range(0, len(ids), 256):
            chunk = ids[start : start + 256]
            marks = ",".join("?" * len(chunk))
            execute(
                "DELETE FROM history WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER"
                " (PARTITION BY item_id ORDER BY ts DESC, origin DESC) AS rn FROM history"
                f" WHERE tier = ? AND item_id IN ({marks})) WHERE rn > ?)",
                (t, *chunk, keep),
            )
        self._history_total = self._history_size()  # exact: triggers keep it (schema.py)
        while self._history_total > self.history_bytes:
            last = execute("SELECT max(id) FROM (SELECT id FROM history ORDER BY id LIMIT 256)")
            top = last.fetchone()[0]
            if top is None:
                break
            execute("DELETE FROM history WHERE id <= ?", (top,))
            self._history_total = self._history_size()

    def history(
        self, tier: Tier, item_id: bytes, current: tuple[Key, int, int, bytes] | None
    ) -> list[HistoryEntry]:
        """The versions seen of one item, newest key first, at most the tier's N.

        ``current`` is the row's whole-value version (key, op, flags, payload), if any.
        """
        keep = self.history_versions.get(Tier(tier), 0)
        found: dict[Key, HistoryEntry] = {}
        if current is not None:
            key, op, flags, payload = current
            value = None if op == Op.DELETE else plain_value(payload, flags)
            found[key] = HistoryEntry(key, Op(op), value, True)
        if keep > 0:
            for ts, origin, op, flags, payload in self._conn.execute(
                "SELECT ts, origin, op, flags, payload FROM history WHERE tier = ? AND item_id = ?"
                " ORDER BY ts DESC, origin DESC LIMIT ?",
                (int(tier), item_id, keep),
            ):
                key = (from_db(ts), from_db(origin))
                if key not in found:
                    value = None if op == Op.DELETE else plain_value(payload, flags)
                    found[key] = HistoryEntry(key, Op(op), value, False)
        ordered = sorted(found.values(), key=lambda e: e.key, reverse=True)
        return ordered[: max(keep, 1)]

    def history_stats(self) -> dict[str, Any]:
        count = self._conn.execute("SELECT count(*) FROM history").fetchone()[0]
        return {"entries": count, "bytes": self._history_total, "max_bytes": self.history_bytes}
