"""The durable node store: one SQLite file (WAL), one writer, synchronous API.

Theory of operation: every change goes through :meth:`Store.apply`, which folds a list of
item versions of one tier into their rows (``rows.Row.fold``: the conflict order of
DESIGN.md) inside one ``BEGIN IMMEDIATE`` transaction, together with everything that must
move with them: the new per-tier sequence numbers, the bucket digests, the conflict log, the
clock high-water mark and, for a pulled batch, the sync-vector cursor of the sending peer.
Either all of it commits or none of it does, which is what lets a node be killed at any
instant and resume its pull from the cursor it finds on disk.

The LWW work is done in bulk (``applying.py``, the write path): one read of the current
keys of every item a slice touches, the fold in memory, one statement per kind of write.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import Name, Tier

from .applying import APPLY_SLICE, ApplyMixin, ApplyResult
from .checkpoint import Checkpointer
from .conflicts import Conflict, ConflictMixin
from .existing import ExistingMixin
from .fold import FoldMixin
from .history import DEFAULT_HISTORY, HistoryMixin
from .maintenance import DAY_NS, MaintenanceMixin
from .names import NamesMixin
from .nametail import NameTailMixin
from .rows import MOD, Key
from .schema import migrate

__all__ = [
    "APPLY_SLICE",
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
    ApplyMixin,
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
