"""The conflict log: true conflicts only (SPEC.md section 2.2), bounded in bytes.

Theory of operation: ``Row.fold`` hands over a *contest* whenever a whole-value version
meets the stored whole-value version of another origin, one of them losing. Most contests
are not conflicts: a sequential overwrite names the version it replaced as its base, and an
old version arriving late meets something written on top of it. :meth:`_judge` keeps the
pairs whose winner is BASED with a base below the loser's key (its writer had not seen the
loser), after the slice's fold and before its writes, so a stored side's payload is still
the one in the database. A winner without a base (MEMSHADOW imports, versions of older
nodes) is never reported. Nothing here touches the conflict order; the fast path of
``core.py`` (a version of an id not stored yet) cannot meet anything and never gets here.

An entry holds the item's name (or only its id), both keys and ops, and both values as
they were (``None`` for a DELETE). It is logged once per (tier, item, winner key, loser
key): whichever side arrives first, every node that held both logs the same entry, and a
resent batch, a relay, a repair or a restart finds it already there (``INSERT OR IGNORE``
on the unique index). The log is bounded by ``conflict_bytes`` (values plus ~100 bytes
of keys per entry): the oldest entries lose their values and leave the listing (counted in
``conflict_drops``) but keep their keys row, so they are not logged again; keys rows beyond
``conflict_limit`` are deleted. A version with ``RESOLVES`` marks the open entries of its
item whose keys its base covers as resolved by its key, on every node it reaches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol import BASED, Item, Name, Op, Tier, read_base
from protocol.names import SEPARATOR

from .rows import Contest, Key, from_db, plain_value, to_db

__all__ = ["Conflict", "ConflictMixin"]

ENTRY_OVERHEAD = 100  # bytes counted per entry besides its values and name
_INSERT = (
    "INSERT OR IGNORE INTO conflicts (at_ns, tier, item_id, ns, key, winner_ts, winner_origin,"
    " winner_op, loser_ts, loser_origin, loser_op, winner_value, loser_value, size)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLS = (
    "id, at_ns, tier, item_id, ns, key, winner_ts, winner_origin, winner_op, loser_ts,"
    " loser_origin, loser_op, resolved_ts, resolved_origin"
)


@dataclass(frozen=True, slots=True)
class Conflict:
    """One logged conflict: two writers that had not seen each other's write.

    ``name`` is ``None`` for an item written by id. Values are the versions' values as they
    were (``None`` for a DELETE, or when not asked for); ``resolved_by`` is the key of the
    write that resolved it, ``None`` while open.
    """

    id: int
    at_ns: int
    tier: Tier
    item_id: bytes
    name: Name | None
    winner: Key
    winner_op: Op
    loser: Key
    loser_op: Op
    resolved_by: Key | None = None
    winner_value: bytes | None = None
    loser_value: bytes | None = None


class ConflictMixin:
    """Conflict-log part of :class:`meshsyncd.store.core.Store`."""

    _conn: sqlite3.Connection
    conflict_limit: int
    conflict_bytes: int
    stats: dict[str, int]

    def _load_conflicts(self) -> None:
        row = self._conn.execute(
            "SELECT coalesce(sum(size), 0) FROM conflicts WHERE dropped = 0"
        ).fetchone()
        self._conflict_total: int = row[0]

    # -- apply side (inside the caller's transaction) ----------------------------------------

    def _judge(
        self,
        t: int,
        contests: list[Contest],
        stored_payload: Callable[[bytes], bytes],
        now: int,
    ) -> list[tuple[Any, ...]]:
        """The conflict-log rows of the contests that are true conflicts."""
        out: list[tuple[Any, ...]] = []
        for item, held, won in contests:
            hts, horigin, hop, hflags, hpayload = held
            if won:
                base = read_base(item.flags, item.payload)
                if base is None or base >= (hts, horigin):
                    continue
            else:
                if not hflags & BASED:
                    continue
                if hpayload is None:
                    hpayload = stored_payload(item.item_id)
                base = read_base(hflags, hpayload)
                if base is None or base >= item.key:
                    continue
            if hpayload is None:
                hpayload = stored_payload(item.item_id)
            mine = (item.timestamp_ns, item.origin, int(item.op), item.flags, item.payload)
            stored = (hts, horigin, hop, hflags, hpayload)
            win, lose = (mine, stored) if won else (stored, mine)
            wv, lv = _value(win), _value(lose)
            name = item.name
            ns, key = (None, None) if name is None else (SEPARATOR.join(name.namespace), name.key)
            size = ENTRY_OVERHEAD + len(wv or b"") + len(lv or b"") + len(key or "") * 2
            out.append(
                (
                    *(now, t, item.item_id, ns, key),
                    *(to_db(win[0]), to_db(win[1]), win[2]),
                    *(to_db(lose[0]), to_db(lose[1]), lose[2]),
                    *(wv, lv, size),
                )
            )
        return out

    def _log_conflicts(self, entries: list[tuple[Any, ...]]) -> int:
        """Log the entries not logged before; keep the log in its bounds; count new ones."""
        execute = self._conn.execute
        new = 0
        for entry in entries:
            if execute(_INSERT, entry).rowcount:
                new += 1
                self._conflict_total += entry[-1]
        if not new:
            return 0
        self.stats["conflicts"] += new
        drops = 0
        while self._conflict_total > self.conflict_bytes:
            oldest = execute(
                "SELECT id, size FROM conflicts WHERE dropped = 0 ORDER BY id LIMIT 64"
            ).fetchall()
            if not oldest:
                break
            for cid, size in oldest:
                if self._conflict_total <= self.conflict_bytes:
                    break
                execute(
                    "UPDATE conflicts SET dropped = 1, winner_value = NULL, loser_value = NULL,"
                    " size = 0 WHERE id = ?",
                    (cid,),
                )
                self._conflict_total -= size
                drops += 1
        top = execute("SELECT max(id) FROM conflicts").fetchone()[0]
        cut = top - self.conflict_limit
        gone = execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM conflicts WHERE id <= ? AND dropped = 0",
            (cut,),
        ).fetchone()
        if execute("DELETE FROM conflicts WHERE id <= ?", (cut,)).rowcount:
            drops += gone[0]
            self._conflict_total -= gone[1]
        if drops:
            execute("UPDATE meta SET value = value + ? WHERE name = 'conflict_drops'", (drops,))
        return new

    def _mark_resolved(self, t: int, resolutions: list[Item]) -> None:
        """Mark the open entries each RESOLVES version's base covers as resolved by it."""
        for item in resolutions:
            base = read_base(item.flags, item.payload)
            if base is None:  # pragma: no cover - the decoder refuses RESOLVES without BASED
                continue
            bts, borigin = to_db(base[0]), to_db(base[1])
            self._conn.execute(
                "UPDATE conflicts SET resolved_ts = ?, resolved_origin = ?"
                " WHERE tier = ? AND item_id = ? AND resolved_ts IS NULL"
                " AND (winner_ts, winner_origin) <= (?, ?) AND (loser_ts, loser_origin) <= (?, ?)",
                (
                    to_db(item.timestamp_ns),
                    to_db(item.origin),
                    t,
                    item.item_id,
                    *(bts, borigin, bts, borigin),
                ),
            )

    # -- reads --------------------------------------------------------------------------------

    def conflicts(
        self,
        *,
        limit: int = 100,
        tier: Tier | None = None,
        namespace: str | None = None,
        since_ns: int | None = None,
        values: bool = False,
        open_only: bool = False,
    ) -> list[Conflict]:
        """Logged conflicts, newest first; dropped ones are gone from the listing.

        ``namespace`` keeps named items under that namespace (``""``: every named item);
        ``since_ns`` those logged at or after that wall-clock time.
        """
        sql = f"SELECT {_COLS}{', winner_value, loser_value' if values else ''} FROM conflicts"
        where: list[str] = ["dropped = 0"]
        args: list[Any] = []
        if tier is not None:
            where.append("tier = ?")
            args.append(int(tier))
        if namespace is not None:
            ns = namespace.strip(SEPARATOR)
            if ns:
                where.append("(ns = ? OR substr(ns, 1, ?) = ?)")
                args += [ns, len(ns) + 1, ns + SEPARATOR]
            else:
                where.append("key IS NOT NULL")
        if since_ns is not None:
            where.append("at_ns >= ?")
            args.append(since_ns)
        if open_only:
            where.append("resolved_ts IS NULL")
        sql += " WHERE " + " AND ".join(where) + " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [_conflict(rec) for rec in self._conn.execute(sql, args)]

    def conflict(self, cid: int) -> tuple[Conflict | None, bool]:
        """One entry with its values, and whether it exists but was dropped for the bound."""
        rec = self._conn.execute(
            f"SELECT {_COLS}, winner_value, loser_value, dropped FROM conflicts WHERE id = ?",
            (cid,),
        ).fetchone()
        if rec is None:
            return None, False
        if rec[-1]:
            return None, True
        return _conflict(rec[:-1]), False

    def conflict_stats(self) -> dict[str, int]:
        """Entries listed, open ones, their bytes and the entries dropped so far."""
        entries, open_ = self._conn.execute(
            "SELECT count(*), count(*) - count(resolved_ts) FROM conflicts WHERE dropped = 0"
        ).fetchone()
        drops = self._conn.execute(
            "SELECT value FROM meta WHERE name = 'conflict_drops'"
        ).fetchone()[0]
        return {
            "entries": entries,
            "open": open_,
            "bytes": self._conflict_total,
            "max_bytes": self.conflict_bytes,
            "dropped": drops,
        }


def _value(version: tuple[int, int, int, int, bytes | None]) -> bytes | None:
    _ts, _origin, op, flags, payload = version
    if op == Op.DELETE or payload is None:
        return None
    return plain_value(payload, flags)


def _conflict(rec: tuple[Any, ...]) -> Conflict:
    cid, at, t, iid, ns, key, wts, wor, wop, lts, lor, lop, rts, ror = rec[:14]
    name = None
    if key is not None:
        name = Name(tuple(ns.split(SEPARATOR)) if ns else (), key)
    return Conflict(
        id=cid,
        at_ns=at,
        tier=Tier(t),
        item_id=iid,
        name=name,
        winner=(from_db(wts), from_db(wor)),
        winner_op=Op(wop),
        loser=(from_db(lts), from_db(lor)),
        loser_op=Op(lop),
        resolved_by=None if rts is None else (from_db(rts), from_db(ror)),
        winner_value=rec[14] if len(rec) > 14 else None,
        loser_value=rec[15] if len(rec) > 15 else None,
    )
