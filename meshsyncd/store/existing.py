"""Reading the stored rows a slice touches: the first step of every apply.

Why a module of its own: the read decides what the apply costs (keys and hashes only,
never payloads, unless the tier keeps history: then the payload comes in the same read of
the row's page, so a replaced version is recorded from memory). The ids come from the
in-memory tail map or, below its marks, the ``ids`` table (``core.py`` explains the two
levels); IN lists are padded to powers of two (:func:`padded`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .idfilter import IdFilter
from .rows import Row, decode_fields, fields_hash, from_db

__all__ = ["Existing", "ExistingMixin", "padded"]

_IN_CHUNK = 512  # parameters per IN list (padded to a power of two, see padded)
_KEY_COLS = "items.rowid, items.item_id, ts, origin, op, priority, flags, fields, bhash"


class Existing(NamedTuple):
    """A stored row as the fold needs it: keys and fields, hashes, where it lives, and
    (read only when the tier keeps history) its whole-value version as stored: (ts,
    origin, op, flags, payload), what history records when the fold replaces it."""

    row: Row
    hash: int
    bhash: int
    rid: int
    base: tuple[int, int, int, int, bytes] | None = None


def padded(values: list[Any]) -> list[Any]:
    """``values`` repeated up to a power-of-two length (an IN list ignores repeats).

    Why: every distinct statement text is compiled and kept in the connection's statement
    cache; IN lists of every length from 1 to 512 would fill it with large programs (several
    MiB) and recompile on most batches. Ten lengths stay cached.
    """
    size = 1 << (len(values) - 1).bit_length()
    return values + values[: size - len(values)] if size > len(values) else values


def _collect(cursor: Iterable[tuple[Any, ...]], out: dict[bytes, Existing]) -> None:
    for rid, iid, ts, origin, op, prio, flags, ftext, bh in cursor:
        row = Row(iid, from_db(ts), from_db(origin), op, prio, flags, None)
        row.fields = decode_fields(ftext)
        bhash = int.from_bytes(bh, "big")
        out[iid] = Existing(row, bhash + fields_hash(iid, ftext), bhash, rid)


def _collect_bases(cursor: Iterable[tuple[Any, ...]], out: dict[bytes, Existing]) -> None:
    """:func:`_collect` of rows read with their payload (``_existing(..., bases=True)``)."""
    for rid, iid, ts, origin, op, prio, flags, ftext, bh, payload in cursor:
        row = Row(iid, from_db(ts), from_db(origin), op, prio, flags, None)
        row.fields = decode_fields(ftext)
        bhash = int.from_bytes(bh, "big")
        base = (ts, origin, op, flags, payload)
        out[iid] = Existing(row, bhash + fields_hash(iid, ftext), bhash, rid, base)


class ExistingMixin:
    """The slice read of :class:`meshsyncd.store.core.Store`."""

    _conn: sqlite3.Connection
    _tail: dict[int, dict[bytes, int]]
    _filters: dict[int, IdFilter]

    def _existing(
        self, tier: int, ids: Iterable[bytes], bases: bool = False
    ) -> dict[bytes, Existing]:
        """Current rows of ``ids``: row, full hash, base hash, rowid; with ``bases`` also
        the stored version with its payload (in the same read of the row's page: a replaced
        base is then recorded in history from memory, with no second read or SQL copy)."""
        tail = self._tail[tier]
        idf = self._filters[tier]
        by_rid: list[int] = []
        by_id: list[bytes] = []
        if idf.count == 0:  # nothing folded into ``ids`` yet (a new node's first sync)
            by_rid = list(filter(None, map(tail.get, ids)))  # rowids are never 0
        else:
            rest: list[bytes] = []
            for iid in ids:
                rid = tail.get(iid)
                if rid is not None:
                    by_rid.append(rid)
                else:
                    rest.append(iid)
            by_id = idf.maybe(rest)
        out: dict[bytes, Existing] = {}
        execute = self._conn.execute
        cols, collect = (_KEY_COLS, _collect)
        if bases:
            cols, collect = f"{_KEY_COLS}, payload", _collect_bases
        for start in range(0, len(by_id), _IN_CHUNK):
            chunk = padded(by_id[start : start + _IN_CHUNK])
            sql = (
                f"SELECT {cols} FROM ids JOIN items ON items.rowid = ids.rid"
                f" WHERE ids.tier = ? AND ids.item_id IN ({','.join('?' * len(chunk))})"
            )
            collect(execute(sql, (tier, *chunk)), out)
        for start in range(0, len(by_rid), _IN_CHUNK):
            rids = padded(by_rid[start : start + _IN_CHUNK])
            sql = f"SELECT {cols} FROM items WHERE rowid IN ({','.join('?' * len(rids))})"
            collect(execute(sql, rids), out)
        return out

    def _payload_of(self, existing: dict[bytes, Existing]) -> Callable[[bytes], bytes]:
        """Reads the stored payload of an id of ``existing`` (rows are read without it)."""

        def payload(iid: bytes) -> bytes:
            old = existing[iid]
            if old.base is not None:  # read with the row (the tier keeps history)
                return old.base[4]
            rid = old.rid
            found: bytes = self._conn.execute(
                "SELECT payload FROM items WHERE rowid = ?", (rid,)
            ).fetchone()[0]
            return found

        return payload
