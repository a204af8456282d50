"""The names index's tail: new names logged on apply, folded into ``names`` in name order.

Theory of operation (``names.py`` describes the index, ``fold.py`` the same idea for ids):
an item's name entry used to be inserted into ``names`` in the transaction that creates the
item. ``names`` is clustered on the name, and new names are random within it, so on a
store of a million named items every new item dirtied about one 8 KiB leaf page of the
index (written to the WAL at commit, and again at the checkpoint): named items were applied
at about half the rate of nameless ones. Now the apply appends the batch's new names to
``names_log`` in the same transaction, so they are exactly as crash-safe as before: *one*
row per apply, the entries packed back to back (16-byte item id, then the name block as it
came in the payload, SPEC.md section 2.1: self-delimiting, so no separator and no
re-encoding). A row per name cost ~2 us each, as much as the name's later fold into the
index, for data that is only read back after a crash. The store keeps the pending entries
in memory too, and every read of the index (``names.py``: listing, counting) merges them
with ``names``, so a name is listed as soon as the apply that created it returns.

Folding: once ``names_limit`` entries are pending, a *fold cycle* starts: the entries
present at that moment (log rows ``rowid <= cycle_rid``) are sorted by name and inserted
into ``names`` in runs of ``fold_entries`` per maintenance step (the async engine runs each
step as its own worker call, like the id fold steps), each step recording the last name it
moved (``names_fold_at`` in ``meta``). Sorted runs of tens of thousands of names touch each
leaf page of ``names`` once per cycle instead of once per name. The last step deletes the
cycle's rows from the log (a prefix of its rowids). Entries logged during a cycle wait for
the next one.

Crash safety: the log, ``names_fold_rid`` and ``names_fold_at`` change only inside
transactions, together with ``names``. On open (and after a rollback) the memory is rebuilt
from them: an entry of the cycle's rows whose name is at or before ``names_fold_at`` is
already in ``names``; every other logged entry is pending. A purge that removes a pending
name rewrites the log without it (rare: tombstones past their grace period). Other
connections (a snapshot by namespace) unpack the log with :func:`unpack_log`.

Cost: memory of about 200 bytes per pending entry (at most 1.25 times ``names_limit``: an
apply that finds more runs the whole cycle inline, for callers that never run maintenance),
and a bisection of the pending entries on each read of the index.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from protocol import NAMED, Item
from protocol.names import index_key, index_key_at, name_block

from .bulk import insert_rows
from .names import INSERT_NAMES

__all__ = ["NameTailMixin", "NewNames", "PendingName", "new_names", "pack_log", "unpack_log"]

PendingName = tuple[int, str, str, bytes]  # (tier, index namespace, key, item id)
_INSERT_LOG = "INSERT INTO names_log (tier, entries) VALUES (?, ?)"
_TOP = b"\xff" * 17  # above every item id (16 bytes)
_IN = 256
# Index form of each namespace block seen (the bytes before the key), shared by every entry
# of that namespace: parsing and building it per item was a third of the cost of a name.
_NS: dict[bytes, str] = {}
_NS_MAX = 4096


Pending = dict[tuple[int, str], dict[str, bytes]]  # (tier, namespace) -> {key: item id}


class NewNames:
    """The new names of one apply: by namespace, and the same packed for ``names_log``.

    Grouped by namespace (key -> item id) rather than as one tuple per name: a fold cycle
    then sorts each namespace's keys, plain strings, instead of 4-tuples compared field by
    field (half the cost of the sort), and memory holds no tuple per pending name.
    """

    __slots__ = ("groups", "packed")

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, bytes]] = {}
        self.packed: list[bytes] = []  # item id, name block, item id, name block, ...

    def __bool__(self) -> bool:
        return bool(self.packed)


def new_names(
    t: int,
    todo: Sequence[Item],
    old_of: Callable[[bytes], Any],
    indexed: Callable[[PendingName], bool],
    out: NewNames,
) -> None:
    """Add to ``out`` the NAMED versions in ``todo`` whose item has no named row yet.

    A stored row without a name whose id is a name's (written by id before the named
    version came, here or on a node that allowed it) gets its entry from the first NAMED
    version too, unless ``indexed`` finds one already (the name may have been indexed by
    a version that later lost to a nameless one): the id is derived from the name, so
    the entry is right whichever version wins.

    The name block (SPEC.md section 2.1) starts the payload of a NAMED version, and the
    decoder or the ``Item`` constructor validated it (its form, and that the id is the
    name's): here it is only split, never checked again. A label count, each label as a
    length byte and UTF-8, then the key as a u16 length and UTF-8.
    """
    cache = _NS
    groups = out.groups
    pack = out.packed.append
    for iid, _ts, _origin, _tier, _op, _prio, flags, p in todo:
        if not flags & NAMED:
            continue
        old = old_of(iid)
        if old is not None and old.row.flags & NAMED:
            continue
        pos = 1
        for _ in range(p[0]):
            pos += 1 + p[pos]
        head = p[:pos]
        ns = cache.get(head)
        if ns is None:
            if len(cache) >= _NS_MAX:
                cache.clear()
            ns = cache[head] = sys.intern(index_key(p)[0])
        end = pos + 2 + ((p[pos] << 8) | p[pos + 1])
        key = p[pos + 2 : end].decode()
        if old is None or not indexed((t, ns, key, iid)):
            keys = groups.get(ns)
            if keys is None:
                keys = groups[ns] = {}
            keys[key] = iid
            pack(iid)
            pack(p[:end])


def pack_log(entries: Sequence[PendingName]) -> bytes:
    """A ``names_log`` blob of ``entries`` (re-encoded from their text: the rare path)."""
    parts = []
    for _t, ns, key, iid in entries:
        parts.append(iid)
        parts.append(name_block(ns.split("/")[:-1], key))
    return b"".join(parts)


def unpack_log(t: int, blob: bytes) -> Iterator[PendingName]:
    """The entries of one ``names_log`` row of tier ``t``, in the order logged."""
    pos, size = 0, len(blob)
    intern = sys.intern
    while pos < size:
        iid = blob[pos : pos + 16]
        ns, key, pos = index_key_at(blob, pos + 16)
        yield (t, intern(ns), key, iid)


def _in_order(pending: Pending) -> list[PendingName]:
    """The pending entries as (tier, namespace, key, item id), sorted: the index's order."""
    out: list[PendingName] = []
    for group in sorted(pending):
        t, ns = group
        keys = pending[group]
        out += [(t, ns, key, keys[key]) for key in sorted(keys)]
    return out


class NameTailMixin:
    """The names tail of :class:`meshsyncd.store.core.Store` (module docstring)."""

    _conn: sqlite3.Connection
    _tail: dict[int, dict[bytes, int]]
    fold_entries: int
    tail_limit: int
    names_limit: int

    # -- loading ----------------------------------------------------------------------------

    def _load_name_tail(self) -> None:
        """Rebuild the pending names from ``names_log`` and the cycle's marks (open, rollback)."""
        meta = dict(
            self._conn.execute(
                "SELECT name, value FROM meta WHERE name IN ('names_fold_rid', 'names_fold_at')"
            ).fetchall()
        )
        cycle_rid = int(meta.get("names_fold_rid", 0))
        at_raw = json.loads(meta.get("names_fold_at", "[]"))
        at = tuple(at_raw) if at_raw else None
        new: Pending = {}
        cycle: list[PendingName] = []
        for rid, t, blob in self._conn.execute("SELECT rowid, tier, entries FROM names_log"):
            if rid <= cycle_rid:
                cycle.extend(e for e in unpack_log(t, blob) if at is None or e[:3] > at)
            else:
                for _t, ns, key, iid in unpack_log(t, blob):
                    new.setdefault((t, ns), {})[key] = iid
        cycle = sorted(set(cycle))
        self._nt_new = new
        self._nt_count = sum(map(len, new.values()))
        self._nt_sorted: list[PendingName] | None = None
        self._nt_cycle = cycle
        self._nt_pos = 0
        self._nt_gone: set[tuple[int, str, str]] = set()
        self._nt_rid = cycle_rid

    # -- the apply side ---------------------------------------------------------------------

    def _append_names(self, t: int, names: NewNames) -> None:
        """Log an apply's new names, one ``names_log`` row (inside the apply's transaction).

        ``names`` comes from :func:`new_names`; a name twice in it is one entry (the log
        may hold both, its reader keeps one).
        """
        if names:
            added = 0
            pending = self._nt_new
            for ns, keys in names.groups.items():
                have = pending.get((t, ns))
                if have is None:
                    pending[(t, ns)] = keys
                    added += len(keys)
                else:
                    before = len(have)
                    have.update(keys)
                    added += len(have) - before
            self._conn.execute(_INSERT_LOG, (t, b"".join(names.packed)))
            self._nt_sorted = None
            self._nt_count += added
            if self._nt_count > self.names_limit + self.names_limit // 4:
                # No maintenance runs (or not enough): fold inline, memory stays bounded.
                while self._nt_rid and self._name_fold_step():
                    pass
                while self._name_fold_step(force=True):
                    pass

    @property
    def names_due(self) -> bool:
        """True while a names fold cycle is under way or the tail is full enough to start one."""
        return bool(self._nt_rid) or self._nt_count >= self.names_limit

    def _name_fold_step(self, force: bool = False) -> bool:
        """Move the next run of the cycle into ``names`` (inside the caller's transaction).

        Starts a cycle when none is under way and the tail holds ``names_limit`` entries
        (any number with ``force``). Returns whether the cycle goes on after this step.
        """
        execute = self._conn.execute
        if not self._nt_rid:
            if not self._nt_count or (not force and self._nt_count < self.names_limit):
                return False
            rid = execute("SELECT max(rowid) FROM names_log").fetchone()[0]
            self._nt_cycle = _in_order(self._nt_new)
            self._nt_pos, self._nt_gone = 0, set()
            self._nt_new, self._nt_sorted, self._nt_count = {}, None, 0
            self._nt_rid = rid
            execute("UPDATE meta SET value = ? WHERE name = 'names_fold_rid'", (rid,))
        cycle, start = self._nt_cycle, self._nt_pos
        end = min(len(cycle), start + max(1, self.fold_entries))
        gone = self._nt_gone
        run = [e for e in cycle[start:end] if e[:3] not in gone] if gone else cycle[start:end]
        if run:
            insert_rows(self._conn, INSERT_NAMES, 4, run)
        self._nt_pos = end
        if end < len(cycle):
            last = cycle[end - 1]
            execute(
                "UPDATE meta SET value = ? WHERE name = 'names_fold_at'",
                (json.dumps([last[0], last[1], last[2]]),),
            )
            return True
        execute("DELETE FROM names_log WHERE rowid <= ?", (self._nt_rid,))
        execute("UPDATE meta SET value = 0 WHERE name = 'names_fold_rid'")
        execute("UPDATE meta SET value = '[]' WHERE name = 'names_fold_at'")
        self._nt_rid, self._nt_cycle, self._nt_pos, self._nt_gone = 0, [], 0, set()
        return False

    def _indexed(self, entry: PendingName) -> bool:
        """Whether ``entry`` is in the index already: pending, in the cycle, or folded."""
        t, ns, key, _iid = entry
        if key in self._nt_new.get((t, ns), ()) or (self._nt_rid and self._in_cycle((t, ns, key))):
            return True
        found = self._conn.execute(
            "SELECT 1 FROM names WHERE tier = ? AND ns = ? AND key = ?", (t, ns, key)
        ).fetchone()
        return found is not None

    def _unpend_names(self, gone: Sequence[tuple[int, str, str]]) -> None:
        """Forget pending entries of removed rows (a purge), in memory and in the log."""
        hits = []
        for k in gone:
            keys = self._nt_new.get(k[:2])
            if keys is not None and k[2] in keys:
                del keys[k[2]]
                self._nt_count -= 1
                hits.append(k)
                self._nt_sorted = None
            elif self._nt_rid and self._in_cycle(k):
                self._nt_gone.add(k)
                hits.append(k)
        if hits:
            self._rewrite_log()

    def _rewrite_log(self) -> None:
        """Write ``names_log`` afresh from memory (inside the caller's transaction).

        The cycle's entries not folded yet (all after ``names_fold_at``) go first, one row
        per tier, and ``names_fold_rid`` moves to the last of them; the other pending
        entries follow.
        """
        execute = self._conn.execute
        execute("DELETE FROM names_log")
        if self._nt_rid:
            rest = [e for e in self._nt_cycle[self._nt_pos :] if e[:3] not in self._nt_gone]
            rid = 0
            for t in sorted({e[0] for e in rest} or {0}):
                blob = pack_log([e for e in rest if e[0] == t])
                rid = execute(_INSERT_LOG, (t, blob)).lastrowid or 0
            self._nt_rid = rid
            execute("UPDATE meta SET value = ? WHERE name = 'names_fold_rid'", (rid,))
        pending = _in_order(self._nt_new)
        for t in sorted({e[0] for e in pending}):
            execute(_INSERT_LOG, (t, pack_log([e for e in pending if e[0] == t])))

    def _in_cycle(self, k: tuple[int, str, str]) -> bool:
        cycle = self._nt_cycle
        i = bisect_left(cycle, (*k, b""), self._nt_pos)
        return i < len(cycle) and cycle[i][:3] == k and k not in self._nt_gone

    # -- the read side ----------------------------------------------------------------------

    def _pending_names(
        self, t: int, lo: str, hi: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str, bytes]]:
        """Up to ``limit`` pending entries of tier ``t`` in ``[lo, hi)`` after ``after``.

        In name order, as ``(ns, key, item id)``: what ``names`` will hold once folded.
        """
        if not self._nt_count and not self._nt_rid:
            return []
        if self._nt_sorted is None:
            self._nt_sorted = _in_order(self._nt_new)
        out: list[tuple[str, str, bytes]] = []
        for entries, first in ((self._nt_sorted, 0), (self._nt_cycle, self._nt_pos)):
            i = bisect_left(entries, (t, lo, "", b""), first)
            if after is not None:
                i = max(i, bisect_right(entries, (t, after[0], after[1], _TOP), first))
            taken = 0
            while i < len(entries) and taken < limit:
                et, ns, key, iid = entries[i]
                if et != t or (hi is not None and ns >= hi):
                    break
                if entries is not self._nt_cycle or (t, ns, key) not in self._nt_gone:
                    out.append((ns, key, iid))
                    taken += 1
                i += 1
        out.sort()
        del out[limit:]
        return out

    def _rids_of(self, t: int, iids: Sequence[bytes]) -> dict[bytes, int]:
        """Rowids of the rows of ``iids`` (the tail map, then ``ids``); missing: purged."""
        tail = self._tail[t]
        out = {iid: tail[iid] for iid in iids if iid in tail}
        rest = [iid for iid in iids if iid not in out]
        for start in range(0, len(rest), _IN):
            chunk = rest[start : start + _IN]
            sql = (
                "SELECT item_id, rid FROM ids WHERE tier = ?"
                f" AND item_id IN ({','.join('?' * len(chunk))})"
            )
            out.update(self._conn.execute(sql, (t, *chunk)).fetchall())
        return out

    def name_tail_stats(self) -> dict[str, Any]:
        """Pending entries and whether a fold cycle is under way (tests, metrics)."""
        left = len(self._nt_cycle) - self._nt_pos if self._nt_rid else 0
        return {"pending": self._nt_count + left, "cycle": bool(self._nt_rid)}
