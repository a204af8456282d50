"""The write path of the store: folding a batch of versions into rows, in one transaction.

Theory of operation (``core.py`` describes the file and its two-level lookup): the LWW work
is done in bulk. One ``SELECT ... IN (...)`` per slice reads the current keys of every item
the slice touches (keys and hashes only; the payload too when the tier keeps history, so a
replaced version is recorded from memory), the fold runs in memory, and the winners are
written with one statement per kind (``bulk.insert_rows`` for new rows). Rows whose base did
not change (only MERGE fields did) are updated in place without reading their payload back.
Everything that must move with the rows (sequence numbers, bucket digests, the names tail,
the conflict log, history, the cursor, the clock marks) is written in the same transaction.

Why its own module: it is the hot path every pull, push and local write goes through, and
the part of the store most often measured and tuned (``bench apply``); the store's setup,
transactions and reads stay in ``core.py``. A mixin of :class:`meshsyncd.store.core.Store`,
last in its bases, so the methods it borrows from the other mixins resolve to theirs.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from hashlib import blake2b as _blake2b
from typing import Any, NamedTuple

from protocol import RESOLVES, Item, Op, Tier

from .bulk import insert_rows
from .existing import Existing
from .nametail import NewNames, PendingName, new_names
from .rows import (
    BASE_HEAD,
    BIAS,
    SEQ_BITS,
    Contest,
    Row,
    base_digest,
    encode_fields,
    fields_hash,
    to_db,
)
from .txn import TxnHooks

__all__ = ["APPLY_SLICE", "ApplyMixin", "ApplyResult"]

# Items folded per step of apply_until: ~1.2 ms of writer time between two chances for
# an urgent call to go first, at no measurable cost to throughput (one SELECT per slice;
# the bucket digests are written once per transaction, not per slice).
APPLY_SLICE = 125
_INSERT = (  # VALUES added by bulk.insert_rows
    "INSERT INTO items (rowid, tier, item_id, ts, origin, op, priority, flags, payload,"
    " fields, bhash)"
)
_MOVE = (
    "UPDATE items SET rowid = ?, ts = ?, origin = ?, op = ?, priority = ?, flags = ?,"
    " payload = ?, fields = ?, bhash = ? WHERE rowid = ?"
)
_UPDATE_FIELDS = "UPDATE items SET rowid = ?, fields = ? WHERE rowid = ?"
_INT = tuple(range(256))  # IntEnum -> int by indexing (C speed, no Enum machinery)


class ApplyResult(NamedTuple):
    """``applied``: versions that changed a row; ``conflicts``: conflict-log entries made."""

    applied: int
    conflicts: int


class ApplyMixin(TxnHooks):
    """The write path of :class:`meshsyncd.store.core.Store` (module docstring)."""

    _conn: sqlite3.Connection
    _seq: dict[int, int]
    _tail: dict[int, dict[bytes, int]]
    _pending: dict[int, list[list[bytes]]]
    retention_ns: dict[Tier, int | None]
    history_versions: dict[Tier, int]
    local_synchronous: str
    replicated_synchronous: str
    stats: dict[str, int]

    # Borrowed from core.Store and the other mixins (each named where it lives).
    def _existing(
        self, tier: int, ids: Iterable[bytes], bases: bool = False
    ) -> dict[bytes, Existing]:
        raise NotImplementedError  # existing.ExistingMixin

    def _payload_of(self, existing: dict[bytes, Existing]) -> Callable[[bytes], bytes]:
        raise NotImplementedError  # existing.ExistingMixin

    def _indexed(self, entry: PendingName) -> bool:
        raise NotImplementedError  # nametail.NameTailMixin

    def _append_names(self, t: int, names: NewNames) -> None:
        raise NotImplementedError  # nametail.NameTailMixin

    def tail_size(self) -> int:
        raise NotImplementedError  # fold.FoldMixin

    @property
    def hard_limit(self) -> int:
        raise NotImplementedError  # fold.FoldMixin

    def _fold_inline(self) -> None:
        raise NotImplementedError  # fold.FoldMixin

    def _judge(
        self,
        t: int,
        contests: list[Contest],
        stored_payload: Callable[[bytes], bytes],
        now: int,
    ) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # conflicts.ConflictMixin

    def _log_conflicts(self, entries: list[tuple[Any, ...]]) -> int:
        raise NotImplementedError  # conflicts.ConflictMixin

    def _mark_resolved(self, t: int, resolutions: list[Item]) -> None:
        raise NotImplementedError  # conflicts.ConflictMixin

    def _record_history(
        self,
        t: int,
        items: list[Item],
        replaced: list[tuple[bytes, tuple[int, int, int, int, bytes]]],
    ) -> None:
        raise NotImplementedError  # history.HistoryMixin

    def apply(
        self,
        tier: Tier,
        items: Iterable[Item],
        *,
        peer: int | None = None,
        to_seq: int | None = None,
        local: bool = False,
        clock_hwm: int = 0,
        clock_lease: int = 0,
        now_ns: int | None = None,
    ) -> ApplyResult:
        """Fold ``items`` (all of ``tier``) into the store in one transaction.

        With ``peer`` and ``to_seq`` the cursor (peer, tier) moves to ``to_seq`` (never
        backwards) in the same transaction. ``local`` selects the local-write durability
        mode. ``clock_hwm`` is persisted as the clock high-water mark and ``clock_lease``
        as the bound on timestamps that may have left the node before their commit (see
        ``engine.py``). REPLICATE requests and versions older than the tier's retention are
        ignored.

        Raises:
            sqlite3.Error: the disk failed; nothing was applied.
            Exception: whatever ``fault`` raised; nothing was applied.
        """
        result, _ = self.apply_until(
            tier,
            list(items),
            peer=peer,
            to_seq=to_seq,
            local=local,
            clock_hwm=clock_hwm,
            clock_lease=clock_lease,
            now_ns=now_ns,
        )
        return result

    def apply_until(
        self,
        tier: Tier,
        items: Sequence[Item],
        *,
        yield_to: Callable[[], bool] | None = None,
        peer: int | None = None,
        to_seq: int | None = None,
        local: bool = False,
        clock_hwm: int = 0,
        clock_lease: int = 0,
        now_ns: int | None = None,
        changed: list[Item] | None = None,
    ) -> tuple[ApplyResult, int]:
        """:meth:`apply`, folded in slices of ``APPLY_SLICE`` items, that may stop early.

        After each slice but the last, ``yield_to()`` is asked whether other work is
        waiting; if so the items folded so far commit on their own, *without* the cursor,
        and the call returns. Returns the result and how many of ``items`` it consumed:
        ``len(items)`` means everything, cursor included, is committed. The caller applies
        ``items[consumed:]`` later with the same ``to_seq``. ``changed``, when given, gets
        every version that changed a row (what a relay forwards: DESIGN.md "The mesh").

        Why this is safe: folding is idempotent and order-independent, so a prefix applied
        without its cursor is exactly a live push; a crash before the rest commits leaves
        the cursor where it was and the next pull sends the whole batch again. Why it
        exists: a 1000-item batch holds the single writer for ~10 ms, and an urgent push
        must not wait for more than a slice of it (DESIGN.md "Priorities").

        Raises:
            sqlite3.Error: the disk failed; nothing of this call was applied.
            Exception: whatever ``fault`` raised; nothing of this call was applied.
        """
        now = time.time_ns() if now_ns is None else now_ns
        t = int(tier)
        keep = self.retention_ns.get(tier)
        cutoff = now - keep if keep is not None else None
        total = len(items)
        self._begin(self.local_synchronous if local else self.replicated_synchronous)
        try:
            applied = conflicts = 0
            done = 0
            deltas = [0] * 256  # bucket digests: written once, not per slice
            names = NewNames()  # new names: logged once per apply, not per slice
            replicate = Op.REPLICATE
            while done < total:
                end = min(total, done + APPLY_SLICE)
                todo = [item for item in items[done:end] if item[4] != replicate]
                if cutoff is not None:
                    fresh = [item for item in todo if item[1] >= cutoff]
                    self.stats["expired"] += len(todo) - len(fresh)
                    todo = fresh
                part = self._apply_locked(t, todo, now, deltas, names, changed)
                applied += part.applied
                conflicts += part.conflicts
                done = end
                if done < total and yield_to is not None and yield_to():
                    break
            if any(deltas):
                self._write_buckets(t, {b: d for b, d in enumerate(deltas) if d})
            if names:
                self._append_names(t, names)  # nametail.py: listed at once, indexed in order
            if peer is not None and to_seq is not None and done == total:
                self._conn.execute(
                    "INSERT INTO cursors (peer, tier, applied) VALUES (?, ?, ?)"
                    " ON CONFLICT DO UPDATE SET applied = max(applied, excluded.applied)",
                    (to_db(peer), t, to_seq),
                )
            if clock_hwm:
                self._conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE name = 'clock_hwm'",
                    (to_db(clock_hwm),),
                )
            if clock_lease:
                self._conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE name = 'clock_lease'",
                    (to_db(clock_lease),),
                )
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return ApplyResult(applied, conflicts), done

    def _apply_locked(
        self,
        t: int,
        todo: list[Item],
        now: int,
        deltas: list[int],
        names: NewNames,
        changed: list[Item] | None = None,
    ) -> ApplyResult:
        """Fold one slice of ``todo`` into its rows, inside the caller's transaction.

        Two paths. A whole-value version of an id that is neither stored nor repeated in
        the slice *is* its row: it is inserted straight from the item, with no ``Row`` and
        no fold (the common case of a pull: ~90% of items in the preloaded benchmark, all of
        them in a fresh one). Everything else (a stored id, a MERGE, an id seen twice) goes
        through ``Row.fold``, each id once with all its versions of the slice.
        """
        if not todo:
            return ApplyResult(0, 0)
        ids = [item[0] for item in todo]
        keeps = self.history_versions.get(Tier(t), 0) > 0
        existing = self._existing(t, ids, bases=keeps)
        # Names of items this slice creates (nametail.py), before the loop fills the tail.
        new_names(t, todo, existing.get, self._indexed, names)
        dups: set[bytes] = set()
        if len(set(ids)) != len(ids):
            seen: set[bytes] = set()
            for iid in ids:
                if iid in seen:
                    dups.add(iid)
                seen.add(iid)
        rows: dict[bytes, Row] = {}
        folded: list[Item] | None = [] if keeps else None
        contests: list[Contest] = []
        resolutions: list[Item] = []
        insert: list[tuple[Any, ...]] = []
        applied = 0
        merge = Op.MERGE
        seq = self._seq[t]
        top = t << SEQ_BITS
        tail = self._tail[t]
        pending = self._pending[t]
        old_of = existing.get
        pack = BASE_HEAD.pack
        for item in todo:
            iid, ts, origin, _, op, prio, flags, payload = item
            if op != merge and iid not in dups and old_of(iid) is None:
                # Plain ints: sqlite3 binds an IntEnum through its adapter lookup (~1 us).
                opn, prn = _INT[op], _INT[prio]
                seq += 1
                rid = top | seq
                tail[iid] = rid
                pending[iid[0]].append(iid)
                # Same bytes as rows.base_digest (header, then payload), in one call.
                bhb = _blake2b(
                    pack(iid, ts, origin, opn, flags, len(payload)) + payload, digest_size=32
                ).digest()
                insert.append(
                    (rid, t, iid, ts - BIAS, origin - BIAS, opn, prn, flags, payload, None, bhb)
                )
                deltas[iid[0]] += int.from_bytes(bhb, "big")
                applied += 1
                if changed is not None:
                    changed.append(item)
                continue
            row = rows.get(iid)
            if row is None:
                old = old_of(iid)
                row = rows[iid] = old.row if old is not None else Row(iid)
            won = row.fold(item, contests)
            # history.py: a version that became the row is copied when it is replaced (the
            # fast path above records nothing); losers, MERGEs and repeated ids go now.
            if folded is not None and (
                op == merge or iid in dups or (not won and (ts, origin) != (row.ts, row.origin))
            ):
                folded.append(item)
            if won:
                applied += 1
                if changed is not None:
                    changed.append(item)
            if flags & RESOLVES:  # conflicts.py (a new id has no entries to resolve)
                resolutions.append(item)
        # Judged before the writes below: a stored loser's payload is still in the database.
        entries = self._judge(t, contests, self._payload_of(existing), now) if contests else []
        if folded is not None and rows:
            replaced = [
                (iid, old.base)
                for iid, row in rows.items()
                if row.base_changed and (old := old_of(iid)) is not None and old.base is not None
            ]
            self._record_history(t, folded, replaced)
        self.stats["applied"] += applied
        self.stats["stale"] += len(todo) - applied
        move: list[tuple[Any, ...]] = []
        update: list[tuple[Any, ...]] = []
        for iid, row in rows.items():
            if not (row.base_changed or row.fields_changed):
                continue
            seq += 1
            rid = top | seq
            tail[iid] = rid
            pending[iid[0]].append(iid)
            old = old_of(iid)
            ftext = encode_fields(row.fields)
            if old is None or row.base_changed:
                body = row.payload
                assert body is not None
                bhb = base_digest(iid, row.ts, row.origin, row.op, row.flags, body)
                cols = (row.ts - BIAS, row.origin - BIAS, row.op, row.priority, row.flags, body)
                if old is None:
                    insert.append((rid, t, iid, *cols, ftext, bhb))
                else:
                    move.append((rid, *cols, ftext, bhb, old.rid))
                new_hash = int.from_bytes(bhb, "big") + fields_hash(iid, ftext)
            else:
                update.append((rid, ftext, old.rid))
                new_hash = old.bhash + fields_hash(iid, ftext)
            deltas[iid[0]] += new_hash - (old.hash if old is not None else 0)
        if move:
            self._conn.executemany(_MOVE, move)
        if update:
            self._conn.executemany(_UPDATE_FIELDS, update)
        if insert:
            insert_rows(self._conn, _INSERT, 11, insert)
        if seq != self._seq[t]:
            self._conn.execute("UPDATE tiers SET seq = ? WHERE tier = ?", (seq, t))
            self._seq[t] = seq
        if self.tail_size() > self.hard_limit:
            self._fold_inline()
        logged = self._log_conflicts(entries) if entries else 0
        if resolutions:
            self._mark_resolved(t, resolutions)
        return ApplyResult(applied, logged)
