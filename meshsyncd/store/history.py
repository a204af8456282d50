"""Per-item history: the last N versions this node has seen of every item, bounded in bytes.

Theory of operation: the ``history`` table holds versions seen (winners and losers: whole
values, DELETEs and MERGEs, wire payload with name and base) keyed by (tier, item, version
key). The item's current whole-value version is always its row in ``items``, so nothing is
recorded when a version of a new id is inserted by the fast path of ``core.py`` (the common
case of a pull). A slice's fold path records, before its writes, the versions it folded
that did not become the row (losers, MERGEs, ids repeated in the slice) and each stored
base it replaced, as the slice's one read of its rows found it (``core._existing`` reads
the payload too when the tier keeps history: the row's page is read anyway), all in one
``executemany`` of plain values (no SQL-side copy, no read-back): a version that became
the row is recorded only once it is replaced. The versions go to the history tail first
(``histtail.py``: appended, folded into ``history`` in key order by maintenance steps);
a version already in the tail is not appended again, and the fold's ``INSERT OR IGNORE``
on the key makes redelivery (sync, relay, repair, restarts) record nothing twice. The byte
count is kept from the sizes appended and what each fold or delete ``RETURNING``s, so the
bound costs no scan. Each
item keeps its newest ``N`` (per tier; 0 turns history off): each fold step counts the
versions of the items it moved (an indexed count; usually none is above ``N``) and one
windowed ``DELETE`` trims those alone, and everything (table and tail) stays under
``history_bytes``: past it, the tail is folded and the oldest versions go until 90%.
:meth:`history` lists the current row, the table and the item's tail rows, newest key
first, at most ``N``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol import Item, Op, Tier

from .existing import padded
from .histtail import HistoryTailMixin
from .rows import NO_BASE, Key, from_db, plain_value, to_db

__all__ = ["DEFAULT_HISTORY", "HistoryEntry", "HistoryMixin"]

DEFAULT_HISTORY: Mapping[Tier, int] = {Tier.WORKING: 8, Tier.EPISODIC: 8, Tier.SEMANTIC: 8}
_INSERT_ONE = (
    "INSERT INTO history_tail (rowid, tier, item_id, ts, origin, op, flags, payload, size)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One version of an item as seen here: its key, op and value (``None``: a DELETE)."""

    key: Key
    op: Op
    value: bytes | None
    current: bool


class HistoryMixin(HistoryTailMixin):
    """History part of :class:`meshsyncd.store.core.Store`."""

    _conn: sqlite3.Connection
    history_versions: dict[Tier, int]
    history_bytes: int

    def _load_history(self) -> None:
        """The size in bytes of the table and the tail's pending rows (one scan at open and
        after a rollback); every change after that reports its own sizes with ``RETURNING``,
        so the bound costs no scan."""
        pending = self._load_history_tail()
        row = self._conn.execute("SELECT coalesce(sum(size), 0) FROM history").fetchone()
        self._history_total = row[0] + pending

    def _record_history(
        self,
        t: int,
        items: list[Item],
        replaced: list[tuple[bytes, tuple[int, int, int, int, bytes]]],
    ) -> None:
        """Append a slice's folded versions and the replaced bases to the tail, inside the
        apply's transaction.

        ``replaced`` holds (item id, stored version as read with its row: ts, origin, op,
        flags, payload), so every version goes in one ``executemany`` of plain values (no
        SQL-side copy, no ``RETURNING``). A version already in the tail (or twice in
        the slice) is skipped; one recorded before the tail existed is dropped by the fold's
        ``INSERT OR IGNORE``, and reads merge by key. A fields-only row (no whole value) has
        nothing to record.
        """
        keep = self.history_versions.get(Tier(t), 0)
        if keep <= 0 or not (items or replaced):
            return
        execute = self._conn.execute
        has = self._ht_has
        rid = self._ht_next
        rows: list[Any] = []
        seen: set[tuple[bytes, int, int]] = set()
        for i in items:
            key = (i[0], to_db(i[1]), to_db(i[2]))
            if key not in seen and not has(t, *key):
                seen.add(key)
                size = len(i[7]) + 64
                rows.append((rid, t, key[0], key[1], key[2], int(i[4]), i[6], i[7], size))
                rid += 1
        for iid, (ts, origin, op, flags, payload) in replaced:
            key = (iid, ts, origin)
            if op != NO_BASE and key not in seen and not has(t, iid, ts, origin):
                seen.add(key)
                rows.append((rid, t, iid, ts, origin, op, flags, payload, len(payload) + 64))
                rid += 1
        added = 0
        if rows:
            # Rowids given, one statement text: no RETURNING, and the statement cache keeps it.
            self._conn.executemany(_INSERT_ONE, rows)
            added += self._ht_add(t, rows)
        self._history_total += added
        self._ht_bound()
        if self._history_total > self.history_bytes:
            # The tail first (its rows count too), then down to 90% at once, oldest versions
            # first: a scan, but a rare one. Exactly as many rows as that takes: many
            # versions can share a timestamp, and going by timestamp alone once wiped them all.
            self._fold_history_all()
            target = self.history_bytes * 9 // 10
            while self._history_total > target:
                oldest = execute(
                    "SELECT tier, item_id, ts, origin, size FROM history"
                    " ORDER BY ts, origin, tier, item_id LIMIT 256"
                ).fetchall()
                if not oldest:
                    break
                need, freed, gone = self._history_total - target, 0, []
                for tier, item_id, ts, origin, size in oldest:
                    gone.append((tier, item_id, ts, origin))
                    freed += size
                    if freed >= need:
                        break
                self._conn.executemany(
                    "DELETE FROM history WHERE tier = ? AND item_id = ? AND ts = ? AND origin = ?",
                    gone,
                )
                self._history_total -= freed

    def _trim_items(self, t: int, ids: list[bytes]) -> None:
        """Trim each of ``ids`` (tier ``t``) to the tier's newest N versions in ``history``.

        Most items hold fewer than N versions: one indexed count finds the few that do not,
        and only those go through the windowed DELETE.
        """
        keep = self.history_versions.get(Tier(t), 0)
        execute = self._conn.execute
        for start in range(0, len(ids), 256):
            chunk = padded(ids[start : start + 256])
            over = [
                iid
                for (iid,) in execute(
                    "SELECT item_id FROM history WHERE tier = ? AND item_id IN"
                    f" ({','.join('?' * len(chunk))}) GROUP BY item_id HAVING count(*) > ?",
                    (t, *chunk, keep),
                )
            ]
            if not over:
                continue
            over = padded(over)
            marks = ",".join("?" * len(over))
            gone = execute(
                "DELETE FROM history WHERE (tier, item_id, ts, origin) IN (SELECT tier, item_id,"
                " ts, origin FROM (SELECT tier, item_id, ts, origin, row_number() OVER"
                " (PARTITION BY item_id ORDER BY ts DESC, origin DESC) AS rn FROM history"
                f" WHERE tier = ? AND item_id IN ({marks})) WHERE rn > ?) RETURNING size",
                (t, *over, keep),
            )
            self._history_total -= sum(r[0] for r in gone)

    def _forget_history(self, t: int, ids: list[bytes]) -> None:
        """Drop every recorded version of items whose row a purge removes (inside its txn).

        Why: once the row is gone nothing can list those versions, and an id that comes
        back later starts a new history. The tail is folded first (at most 1.25 times
        ``history_limit`` rows, sorted), so that one place holds them all; then the work is
        bounded by the purge's own: at most the tier's N versions per removed row, each
        delete a range of the clustered key.
        """
        if any(iid in self._ht_rows.get(t, {}) for iid in ids):
            self._fold_history_all()
        for start in range(0, len(ids), 256):
            chunk = ids[start : start + 256]
            gone = self._conn.execute(
                f"DELETE FROM history WHERE tier = ? AND item_id IN ({','.join('?' * len(chunk))})"
                " RETURNING size",
                (t, *chunk),
            )
            self._history_total -= sum(r[0] for r in gone)

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
            rids = self._ht_rowids(int(tier), item_id)
            rows = self._conn.execute(
                "SELECT ts, origin, op, flags, payload FROM history WHERE tier = ? AND item_id = ?"
                " ORDER BY ts DESC, origin DESC LIMIT ?",
                (int(tier), item_id, keep),
            ).fetchall()
            if rids:  # versions still in the tail (histtail.py)
                rows += self._conn.execute(
                    "SELECT ts, origin, op, flags, payload FROM history_tail"
                    f" WHERE rowid IN ({','.join('?' * len(rids))})",
                    rids,
                ).fetchall()
            for ts, origin, op, flags, payload in rows:
                key = (from_db(ts), from_db(origin))
                if key not in found:
                    value = None if op == Op.DELETE else plain_value(payload, flags)
                    found[key] = HistoryEntry(key, Op(op), value, False)
        ordered = sorted(found.values(), key=lambda e: e.key, reverse=True)
        return ordered[: max(keep, 1)]

    def history_stats(self) -> dict[str, Any]:
        """Entries and bytes of the whole history (the tail's pending rows too), and its bound."""
        count = self._conn.execute("SELECT count(*) FROM history").fetchone()[0]
        count += self.history_tail_stats()["pending"]
        return {"entries": count, "bytes": self._history_total, "max_bytes": self.history_bytes}
