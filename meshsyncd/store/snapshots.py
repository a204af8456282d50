"""Snapshots: what this node holds (under a namespace) at one instant, readable while writes go on.

Theory of operation: a snapshot is its own SQLite file next to the store
(``<store>.snapshots/NAME.db``), made by a separate connection that opens a read
transaction on the store and copies the rows (all tiers, or the named items under a
namespace, through the names index) into the new file. In WAL mode a reader never blocks
the writer, so replication and local writes go on while it is made, and the read
transaction sees exactly one instant. The rows are copied as stored (wire payload, MERGE
fields), so reading one gives the same value, name and version a ``get`` gave then. Its
size is checked before the copy against ``max_bytes`` and reported; its expiry time is in
its own ``meta`` table, so it survives restarts and ends by itself: an expired snapshot is
refused by name and its file removed on the next listing. The file is written under a
temporary name and renamed, so a crash never leaves half a snapshot.
"""

from __future__ import annotations

import builtins
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import SEPARATOR, Tier

from .core import StoredItem
from .nametail import unpack_log
from .rows import Row, decode_fields, from_db

__all__ = ["SnapshotError", "SnapshotInfo", "Snapshots"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COLS = "tier, item_id, ts, origin, op, priority, flags, payload, fields"


class SnapshotError(Exception):
    """A snapshot operation refused; the message names the snapshot. Nothing changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    name: str
    namespace: str | None
    created_ns: int
    expires_ns: int
    items: int
    bytes: int


class Snapshots:
    """The snapshots of one store; each call opens its own connections (any thread)."""

    def __init__(self, store_path: Path, *, max_bytes: int = 256 << 20) -> None:
        self.store_path = Path(store_path)
        self.dir = self.store_path.with_name(self.store_path.name + ".snapshots")
        self.max_bytes = max_bytes

    def _path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise SnapshotError(
                "bad_request",
                f"bad snapshot name {name!r}: 1-64 letters, digits, '_', '.', '-'",
            )
        return self.dir / f"{name}.db"

    def create(self, name: str, *, namespace: str | None, ttl_s: float) -> SnapshotInfo:
        """Freeze what the store holds now (under ``namespace``) into snapshot ``name``.

        Raises:
            SnapshotError: a bad or used name, or a snapshot larger than ``max_bytes``.
        """
        path = self._path(name)
        self.list()  # removes expired files, so their names can be used again
        if path.exists():
            raise SnapshotError("bad_request", f"snapshot name {name!r} is in use")
        self.dir.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(self.store_path, isolation_level=None)
        try:
            conn.execute("ATTACH ? AS snap", (str(tmp),))
            if namespace is not None:
                conn.execute("CREATE TEMP TABLE logged (tier, ns, item_id)")
            conn.execute("BEGIN")  # one read instant of the store (WAL: the writer goes on)
            where, args = "", []
            source = "main.items"
            if namespace is not None:
                ns = namespace.strip(SEPARATOR)
                # New names wait in names_log until folded (nametail.py), packed: unpacked
                # here in the same read instant. UNION drops the copies of a fold cycle
                # under way.
                logged = conn.execute("SELECT tier, entries FROM main.names_log").fetchall()
                conn.executemany(
                    "INSERT INTO temp.logged VALUES (?, ?, ?)",
                    [(e[0], e[1], e[3]) for t, blob in logged for e in unpack_log(t, blob)],
                )
                source = (
                    "main.items JOIN (SELECT tier, ns, item_id FROM main.names UNION"
                    " SELECT tier, ns, item_id FROM temp.logged) AS names"
                    " ON names.tier = items.tier AND names.item_id = items.item_id"
                )
                if ns:
                    where = " WHERE (names.ns = ? OR substr(names.ns, 1, ?) = ?)"
                    args = [ns + SEPARATOR, len(ns) + 1, ns + SEPARATOR]
            size, count = conn.execute(
                "SELECT coalesce(sum(length(payload) + coalesce(length(fields), 0) + 64), 0),"
                f" count(*) FROM {source}{where}",
                args,
            ).fetchone()
            if size > self.max_bytes:
                raise SnapshotError(
                    "too_large",
                    f"snapshot {name!r} would hold {size} bytes, the limit is {self.max_bytes}",
                )
            now = time.time_ns()
            cols = ", ".join(f"items.{c.strip()}" for c in _COLS.split(","))
            conn.execute(f"CREATE TABLE snap.items AS SELECT {cols} FROM {source}{where}", args)
            conn.execute("CREATE UNIQUE INDEX snap.items_by_id ON items (tier, item_id)")
            conn.execute("CREATE TABLE snap.meta (name TEXT PRIMARY KEY, value)")
            info = SnapshotInfo(name, namespace, now, now + int(ttl_s * 1e9), count, size)
            conn.executemany(
                "INSERT INTO snap.meta VALUES (?, ?)",
                [
                    ("namespace", namespace),
                    ("created_ns", info.created_ns),
                    ("expires_ns", info.expires_ns),
                    ("items", count),
                    ("bytes", size),
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            tmp.unlink(missing_ok=True)
            raise
        conn.close()
        os.replace(tmp, path)
        return info

    def _info(self, path: Path) -> SnapshotInfo:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta: dict[str, Any] = dict(conn.execute("SELECT name, value FROM meta"))
        finally:
            conn.close()
        return SnapshotInfo(
            path.stem,
            meta["namespace"],
            meta["created_ns"],
            meta["expires_ns"],
            meta["items"],
            meta["bytes"],
        )

    def list(self) -> builtins.list[SnapshotInfo]:
        """Live snapshots by name; expired ones are removed."""
        out = []
        now = time.time_ns()
        for path in sorted(self.dir.glob("*.db")) if self.dir.exists() else []:
            info = self._info(path)
            if info.expires_ns <= now:
                path.unlink(missing_ok=True)
                continue
            out.append(info)
        return out

    def drop(self, name: str) -> None:
        """Remove a snapshot.

        Raises:
            SnapshotError: no such snapshot.
        """
        path = self._path(name)
        if not path.exists():
            raise SnapshotError("not_found", f"no snapshot {name!r}")
        path.unlink()

    def _open(self, name: str) -> sqlite3.Connection:
        path = self._path(name)
        if not path.exists():
            raise SnapshotError("not_found", f"no snapshot {name!r}")
        info = self._info(path)
        if info.expires_ns <= time.time_ns():
            path.unlink(missing_ok=True)
            raise SnapshotError("not_found", f"snapshot {name!r} expired")
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def get(self, name: str, tier: Tier, item_id: bytes) -> StoredItem | None:
        """One item as it was in the snapshot (``None``: not in it)."""
        conn = self._open(name)
        try:
            rec = conn.execute(
                f"SELECT {_COLS} FROM items WHERE tier = ? AND item_id = ?", (int(tier), item_id)
            ).fetchone()
        finally:
            conn.close()
        return None if rec is None else _stored(rec)

    def items(
        self, name: str, tier: Tier, *, after: bytes = b"", limit: int = 100
    ) -> builtins.list[StoredItem]:
        """Live items of ``tier`` in the snapshot, in id order after ``after``."""
        conn = self._open(name)
        try:
            out = []
            for rec in conn.execute(
                f"SELECT {_COLS} FROM items WHERE tier = ? AND item_id > ? ORDER BY item_id",
                (int(tier), after),
            ):
                found = _stored(rec)
                if not found.deleted:
                    out.append(found)
                    if len(out) >= limit:
                        break
            return out
        finally:
            conn.close()


def _stored(rec: tuple[Any, ...]) -> StoredItem:
    t, iid, ts, origin, op, prio, flags, payload, ftext = rec
    row = Row(iid, from_db(ts), from_db(origin), op, prio, flags, payload)
    row.fields = decode_fields(ftext)
    return StoredItem(
        tier=Tier(t),
        item_id=iid,
        seq=0,
        key=row.current,
        op=row.op,
        deleted=row.deleted,
        value=row.value(),
        fields=dict(row.fields),
        name=row.name,
    )
