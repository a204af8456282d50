"""The durable node store: one SQLite file (WAL), one writer, synchronous API.

Theory of operation: every change goes through :meth:`Store.apply`, which folds a list of
item versions of one tier into their rows (``rows.Row.fold``: the conflict order of
DESIGN.md) inside one ``BEGIN IMMEDIATE`` transaction, together with everything that must
move with them: the new per-tier sequence numbers, the bucket digests, the conflict log, the
clock high-water mark and, for a pulled batch, the sync-vector cursor of the sending peer.
Either all of it commits or none of it does, which is what lets a node be killed at any
instant and resume its pull from the cursor it finds on disk.

The LWW work is done in bulk: one ``SELECT ... IN (...)`` reads the current keys of every
item the batch touches (keys and hashes only, never payloads), the fold runs in memory, and
the winners are written with one ``executemany`` per statement kind. Rows whose base did not
change (only MERGE fields did) are updated in place without reading their payload back.

Sequence numbers are per tier and live in the rowid (``tier << 56 | seq``, see
``schema.py``), so every changed row is written at the end of the table. Finding a row by id
goes through two levels: the in-memory *tail* map (id -> rowid of every row above the mark
of its id's bucket, rebuilt from those rows on open and after a rollback) and the ``ids``
table for everything below it. When the tail grows past ``tail_limit`` it is written into
``ids`` in id order, a run of buckets (first id byte) per step, and those buckets' marks
move up (``fold.py``). This is what keeps a batch of new random ids from dirtying one random
index page per item (the cost that dominates a synchronously indexed table of a million
rows); the price is a bounded map in memory (``tail_limit`` entries for all tiers together,
at most 1.25 times that, ~130 bytes each) and one sorted pass over ``ids`` per
``tail_limit`` changes, cut into steps of about one batch's cost that the async engine runs
as separate worker calls. WAL checkpoints run beside the writer on their own thread and
connection (``checkpoint.py``), not inside a commit.

Durability: local writes commit with ``synchronous=FULL`` (acknowledged means on disk);
replicated batches default to ``NORMAL``, which in WAL mode can lose the last transactions
on power loss but never tears one, and the cursor rolls back together with the items, so the
next pull simply fetches them again.

Not thread-safe: exactly one thread at a time may call into a :class:`Store`. The async
facade in ``aio.py`` serialises calls onto worker threads for trio code.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b as _blake2b
from pathlib import Path
from typing import Any, NamedTuple

from protocol import RESOLVES, Item, Name, Op, Tier

from .bulk import insert_rows
from .checkpoint import Checkpointer
from .conflicts import Conflict, ConflictMixin
from .existing import ExistingMixin
from .fold import FoldMixin
from .history import DEFAULT_HISTORY, HistoryMixin
from .maintenance import DAY_NS, MaintenanceMixin
from .names import NamesMixin
from .nametail import NameTailMixin, NewNames, new_names
from .rows import (
    BASE_HEAD,
    BIAS,
    MOD,
    Contest,
    Key,
    Row,
    base_digest,
    encode_fields,
    fields_hash,
    to_db,
)
from .schema import migrate

__all__ = [
    "DAY_NS",
    "DEFAULT_RETENTION_NS",
    "ApplyResult",
    "Conflict",
    "Store",
    "StoredItem",
]

DEFAULT_RETENTION_NS: Mapping[Tier, int | None] = {
    Tier.WORKING: DAY_NS,
    Tier.EPISODIC: None,
    Tier.SEMANTIC: None,
}
PAGE_SIZE = 8192  # bytes; applies to new files only
TAIL_LIMIT = 50_000  # tail entries of all tiers together (fold.py: why this many)
SEQ_BITS = 56
SEQ_MASK = (1 << SEQ_BITS) - 1
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


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item as stored: its visible value (``None`` when deleted) and where it came from."""

    tier: Tier
    item_id: bytes
    seq: int
    key: Key
    op: int
    deleted: bool
    value: bytes | None
    fields: Mapping[str, tuple[int, int, Any]]
    name: Name | None = None


class Store(
    ExistingMixin,
    NameTailMixin,
    FoldMixin,
    NamesMixin,
    ConflictMixin,
    HistoryMixin,
    MaintenanceMixin,
):
    """One node's items, digests, cursors and conflict log in one SQLite file.

    Open with :meth:`Store.open`; close with :meth:`close` (or use it as a context manager).
    ``fault`` is a fault-injection hook called with a point name (``"before_commit"``)
    inside write transactions; tests use it to crash or raise mid-apply.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
        SchemaError: the file belongs to a newer meshsyncd.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention_ns: Mapping[Tier, int | None] = DEFAULT_RETENTION_NS,
        conflict_limit: int = 10_000,
        conflict_bytes: int = 16 << 20,
        history_versions: Mapping[Tier, int] = DEFAULT_HISTORY,
        history_bytes: int = 64 << 20,
        snapshot_bytes: int = 256 << 20,
        local_synchronous: str = "FULL",
        replicated_synchronous: str = "NORMAL",
        cache_kib: int = 8_192,
        tail_limit: int = TAIL_LIMIT,
        fold_entries: int | None = None,
        names_limit: int | None = None,
        history_limit: int | None = None,
        checkpointer: bool = True,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.retention_ns = dict(retention_ns)
        self.conflict_limit = conflict_limit
        self.conflict_bytes = conflict_bytes
        self.history_versions = dict(history_versions)
        self.history_bytes = history_bytes
        self.snapshot_bytes = snapshot_bytes  # snapshots.py (their own files)
        self.local_synchronous = local_synchronous.upper()
        self.replicated_synchronous = replicated_synchronous.upper()
        self.fault = fault
        self.tail_limit = tail_limit
        # ~1/128 of the tail per step: at the default limit one step costs about a quarter
        # of a batch apply, the same as one apply slice; AsyncEngine.maintain runs as many
        # steps as it takes, each its own worker call.
        self.fold_entries = max(1, tail_limit // 128) if fold_entries is None else fold_entries
        # New names pending in the names tail before a fold cycle (nametail.py).
        self.names_limit = max(1, tail_limit) if names_limit is None else names_limit
        # History versions pending in the history tail before a fold cycle (histtail.py).
        self.history_limit = max(1, tail_limit // 4) if history_limit is None else history_limit
        self.stats = {"applied": 0, "stale": 0, "expired": 0, "conflicts": 0}
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # 8 KiB pages halve the WAL frames per commit of ~250-byte rows (a new file
            # only: the page size of an existing WAL database is fixed).
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")
            # 8 MiB: with new rows appended and ids looked up through the filter, the hot set
            # is the b-tree interiors and the last pages, not a random index.
            conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
            conn.execute("PRAGMA temp_store = MEMORY")
            self._sync_mode = ""
            self._conn = conn
            self._set_sync(self.local_synchronous)
            migrate(conn)
            self.incarnation: bytes = self._meta("incarnation")
            self._seq = dict(conn.execute("SELECT tier, seq FROM tiers").fetchall())
            self._buckets: dict[int, list[int]] = {}
            self._load_buckets()
            self._load_tail()
            self._load_name_tail()
            self._load_conflicts()
            self._load_history()
            self._checkpointer: Checkpointer | None = None
            if checkpointer:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                self._checkpointer = Checkpointer(self.path)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open(cls, path: str | Path, **options: Any) -> Store:
        """Open (creating and migrating as needed) the store at ``path``."""
        return cls(path, **options)

    def close(self) -> None:
        """Close the connection; uncommitted work cannot exist between calls."""
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _meta(self, name: str) -> Any:
        return self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]

    def _set_sync(self, mode: str) -> None:
        if mode != self._sync_mode:
            self._conn.execute(f"PRAGMA synchronous = {mode}")
            self._sync_mode = mode

    def _load_buckets(self) -> None:
        self._buckets = {int(t): [0] * 256 for t in Tier}
        for tier, blob in self._conn.execute("SELECT tier, buckets FROM digests"):
            self._buckets[tier] = [
                int.from_bytes(blob[i : i + 32], "big") for i in range(0, 256 * 32, 32)
            ]

    def _begin(self, synchronous: str) -> None:
        self._set_sync(synchronous)
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self.fault is not None:
            self.fault("before_commit")
        self._conn.execute("COMMIT")
        if self._checkpointer is not None:
            self._checkpointer.poke()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._seq = dict(self._conn.execute("SELECT tier, seq FROM tiers").fetchall())
        self._load_buckets()
        self._load_tail()
        self._load_name_tail()
        self._load_history()

    def _write_buckets(self, tier: int, deltas: dict[int, int]) -> None:
        buckets = self._buckets[tier]
        for bucket, delta in deltas.items():
            buckets[bucket] = (buckets[bucket] + delta) % MOD
        self._conn.execute(
            "INSERT OR REPLACE INTO digests (tier, buckets) VALUES (?, ?)",
            (tier, b"".join([value.to_bytes(32, "big") for value in buckets])),
        )

    def current_key(self, tier: Tier, item_id: bytes) -> Key:
        """The item's current version here ((0, 0): none): a local write's base."""
        return self.current_state(tier, item_id)[0]

    def current_state(self, tier: Tier, item_id: bytes) -> tuple[Key, bool]:
        """The item's current version here ((0, 0): none) and whether it has a value."""
        found = self._existing(int(tier), [item_id]).get(item_id)
        return ((0, 0), False) if found is None else (found.row.current, not found.row.deleted)

    # -- writes -----------------------------------------------------------------------------

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
