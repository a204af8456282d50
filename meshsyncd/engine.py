"""Sync engine: local writes, delta batches and LWW apply over the store, with no sockets.

Theory of operation (DESIGN.md "Delta sync", SPEC.md section 4 PULL/BATCH/REPLICATE):

* A local write is stamped by the hybrid logical clock, folded into the store in its own
  ``synchronous=FULL`` transaction together with the clock's high-water mark, and only then
  returned (acknowledged). The returned :class:`protocol.Item` is what the daemon pushes.
* Early push (:meth:`AsyncEngine.write_early`, ``aengine.py``): an URGENT/HIGH write may
  reach peers while its own transaction is still committing, under the *clock lease*
  (``stamp.py``: local-write stamping, the lease and why it is safe).
* :meth:`Engine.create_delta_batch` answers a PULL: the tier's rows with local sequence above
  the peer's cursor, in sequence order, each row expanded into the versions that reproduce it
  exactly on the receiver (its base write plus one MERGE per surviving field key, see
  ``store/rows.py``), cut at ``max_items``/``max_bytes`` on a row boundary. The
  :class:`DeltaBatch` says which sequence range ``(from_seq, to_seq]`` it covers.
* :meth:`Engine.apply_sync_batch` vets the batch's newest timestamp against the clock skew
  limit before touching anything, then applies it and (for a pull) moves the cursor to
  ``to_seq`` in the same transaction. A push (no ``to_seq``) never moves a cursor.
* Because every row re-sends all of its contributing versions and folding is a semilattice
  join, a node forwards whatever it learned, however old, with a fresh local sequence: an
  item that reaches B late from C still flows on to A.

The engine is synchronous and single-threaded like the store; :class:`AsyncEngine`
(``aengine.py``) is the trio face that runs each call on the store's serial worker thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from protocol import (
    ITEM_HEADER_SIZE,
    MAX_BATCH_ITEMS,
    MAX_BATCH_RAW,
    Batch,
    Item,
    Op,
    Priority,
    Tier,
)

from .clock import HybridClock
from .conditions import Freezes
from .stamp import LEASE_NS, LocalWrites
from .store import ApplyResult, Row, Store, StoredItem

__all__ = ["LEASE_NS", "DeltaBatch", "Engine", "ItemNotFoundError", "TierView"]

T = TypeVar("T")
ALL_ITEMS = bytes(16)


def merge_payload(fields: Mapping[str, Any]) -> bytes:
    """The canonical MERGE payload for ``fields``.

    Raises:
        TypeError: a field value is not JSON-serialisable.
    """
    return json.dumps(dict(fields), sort_keys=True, separators=(",", ":")).encode()


class ItemNotFoundError(KeyError):
    """UPDATE or DELETE of an item that does not exist (or is deleted) in that tier."""


@dataclass(frozen=True, slots=True)
class DeltaBatch:
    """A batch answering a PULL, covering the sender's sequences ``(from_seq, to_seq]``."""

    batch: Batch
    from_seq: int
    to_seq: int
    more: bool


def short_id(node_id: bytes | int) -> int:
    """The u64 short node id (``origin``): the first 8 bytes of the full id, big-endian."""
    if isinstance(node_id, int):
        return node_id
    if len(node_id) < 8:
        raise ValueError("a node id has at least 8 bytes")
    return int.from_bytes(node_id[:8], "big")


def stored_item(tier: Tier, seq: int, row: Row) -> StoredItem:
    """The public view of a stored row."""
    return StoredItem(
        tier=tier,
        item_id=row.item_id,
        seq=seq,
        key=max([row.key] + [(f[0], f[1]) for f in row.fields.values()]),
        op=row.op,
        deleted=row.deleted,
        value=row.value(),
        fields={k: v for k, v in row.fields.items()},
        name=row.name,
    )


class Engine(LocalWrites):
    """One node's state machine for local writes and sync; see the module docstring.

    ``node_id`` is the full 32-byte node id or the short u64 id. The clock is seeded from
    the store's persisted high-water mark, so a restart never reuses a timestamp.
    """

    def __init__(
        self, store: Store, *, node_id: bytes | int, clock: HybridClock | None = None
    ) -> None:
        self.store = store
        self.freezes = Freezes()
        self.origin = short_id(node_id)
        self.clock = clock or HybridClock()
        # The lease on disk bounds every timestamp that may have been pushed before its
        # commit: the clock starts above it, whoever reads it (the daemon first waits for
        # the wall clock to pass it, see lease_wait_s, so it does not start ahead of peers).
        self.lease = store.clock_lease()
        self._floor = self.lease
        self.clock.advance_to(max(store.clock_hwm(), self.lease))

    @property
    def incarnation(self) -> bytes:
        return self.store.incarnation

    def tier(self, tier: Tier) -> TierView:
        """The MEMSHADOW per-tier interface."""
        return TierView(self, Tier(tier))

    def _require_live(self, tier: Tier, item_id: bytes) -> None:
        found = self.store.get_row(tier, item_id)
        if found is None or found[1].deleted:
            raise ItemNotFoundError(f"no item {item_id.hex()} in tier {Tier(tier).name}")

    def add(
        self,
        tier: Tier,
        payload: bytes,
        *,
        item_id: bytes | None = None,
        priority: Priority = Priority.NORMAL,
        compress: bool = False,
    ) -> Item:
        """INSERT a whole value; a new random item id unless one is given."""
        iid = os.urandom(16) if item_id is None else item_id
        return self.write(tier, iid, Op.INSERT, payload, priority=priority, compress=compress)

    def update(
        self,
        tier: Tier,
        item_id: bytes,
        payload: bytes,
        *,
        priority: Priority = Priority.NORMAL,
        compress: bool = False,
    ) -> Item:
        """UPDATE (replace) the whole value of an existing item.

        Raises:
            ItemNotFoundError: no live item with that id in the tier.
        """
        self._require_live(tier, item_id)
        return self.write(tier, item_id, Op.UPDATE, payload, priority=priority, compress=compress)

    def delete(
        self,
        tier: Tier,
        item_id: bytes,
        *,
        priority: Priority = Priority.NORMAL,
        name: bytes = b"",
        expect: tuple[int, int] | None = None,
    ) -> Item:
        """Write a tombstone for an existing item (a named one keeps its name).

        Raises:
            ItemNotFoundError: no live item with that id in the tier.
            PreconditionFailed: ``expect`` is not its current version (see :meth:`write`).
        """
        if expect is None:
            self._require_live(tier, item_id)
        return self.write(tier, item_id, Op.DELETE, priority=priority, name=name, expect=expect)

    def merge(
        self,
        tier: Tier,
        item_id: bytes,
        fields: Mapping[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        name: bytes = b"",
    ) -> Item:
        """MERGE top-level fields into an item (creating it if needed).

        Raises:
            TypeError: a field value is not JSON-serialisable.
        """
        return self.write(
            tier, item_id, Op.MERGE, merge_payload(fields), priority=priority, name=name
        )

    # -- reads ------------------------------------------------------------------------------

    def get(self, tier: Tier, item_id: bytes) -> StoredItem | None:
        """The item's stored state, tombstones included (``deleted`` set)."""
        found = self.store.get_row(tier, item_id)
        return None if found is None else stored_item(Tier(tier), *found)

    def digest(self, tier: Tier) -> bytes:
        return self.store.digest(tier)

    # -- sync -------------------------------------------------------------------------------

    def create_delta_batch(
        self,
        tier: Tier,
        peer: int,
        after_seq: int,
        max_items: int = 1000,
        max_bytes: int = 1 << 20,
    ) -> DeltaBatch:
        """The next batch of ``tier`` changes after ``after_seq`` for ``peer``.

        Rows are never split: a batch ends on a row boundary, and always holds at least one
        row when there is one (even if that row alone exceeds ``max_bytes``).

        Raises:
            ValueError: ``max_items`` or ``max_bytes`` below 1, or a bad ``after_seq``.
        """
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be at least 1")
        tier = Tier(tier)
        max_items = min(max_items, MAX_BATCH_ITEMS)
        max_bytes = min(max_bytes, MAX_BATCH_RAW)
        rows = self.store.changes_since(tier, after_seq, max_items)
        items: list[Item] = []
        size = 0
        to_seq = after_seq
        cut = False
        for seq, row in rows:
            if isinstance(row, Item):  # one whole-value version: the common row
                versions: list[Item] | tuple[Item] = (row,)
                extra = ITEM_HEADER_SIZE + len(row[7])
            else:
                versions = row.versions(tier)
                extra = sum(ITEM_HEADER_SIZE + len(v.payload) for v in versions)
            if items and (len(items) + len(versions) > max_items or size + extra > max_bytes):
                cut = True
                break
            items.extend(versions)
            size += extra
            to_seq = seq
        more = cut or (len(rows) == max_items and bool(self.store.rows_since(tier, to_seq, 1)))
        batch = Batch(
            batch_id=Batch.new_id(), source=self.origin, target=peer, tier=tier, items=tuple(items)
        )
        return DeltaBatch(batch=batch, from_seq=after_seq, to_seq=to_seq, more=more)

    def apply_sync_batch(
        self,
        batch: Batch,
        *,
        to_seq: int | None = None,
        peer: int | None = None,
        changed: list[Item] | None = None,
    ) -> ApplyResult:
        """Apply a peer's batch; with ``to_seq`` (a pull) move its cursor in the same txn.

        ``peer`` defaults to the batch's source. Returns ``(applied, conflicts)``;
        ``changed`` (if given) receives the versions that changed our state.

        Raises:
            ClockSkewError: an item is stamped too far ahead of our wall clock; nothing was
                applied and the cursor did not move.
            sqlite3.Error: the disk failed; nothing was applied.
        """
        result, _ = self.apply_sync_part(batch, to_seq=to_seq, peer=peer, changed=changed)
        return result

    def apply_sync_part(
        self,
        batch: Batch,
        *,
        to_seq: int | None = None,
        peer: int | None = None,
        start: int = 0,
        yield_to: Callable[[], bool] | None = None,
        changed: list[Item] | None = None,
    ) -> tuple[ApplyResult, int]:
        """:meth:`apply_sync_batch` from item ``start`` on, stopping early if ``yield_to()``.

        Returns the result and the index of the first item not yet applied
        (``len(batch.items)`` when the batch and its cursor are committed); see
        :meth:`Store.apply_until` for why a prefix may commit alone.

        Raises:
            ClockSkewError: an item is stamped too far ahead of our wall clock; nothing was
                applied and the cursor did not move.
            sqlite3.Error: the disk failed; nothing of this call was applied.
        """
        sender = batch.source if peer is None else peer
        items = batch.items
        if items and start == 0:
            newest = max(item.timestamp_ns for item in items)
            self.clock.observe(newest, peer=sender)
        result, done = self.store.apply_until(
            batch.tier,
            items[start:] if start else items,
            yield_to=yield_to,
            peer=sender if to_seq is not None else None,
            to_seq=to_seq,
            clock_hwm=self.clock.last,
            now_ns=self.clock.wall(),
            changed=changed,
        )
        return result, start + done

    def answer_replicate(
        self,
        tier: Tier,
        item_id: bytes,
        peer: int,
        max_items: int = 1000,
        max_bytes: int = 1 << 20,
    ) -> Iterator[DeltaBatch]:
        """Answer REPLICATE: the current versions of one item, or (all-zero id) the tier.

        The whole-tier answer is the pull from sequence 0, so its batches carry real
        sequence ranges; a single-item answer covers ``(0, 0]`` and moves no cursor.
        """
        tier = Tier(tier)
        if item_id == ALL_ITEMS:
            after = 0
            while True:
                delta = self.create_delta_batch(tier, peer, after, max_items, max_bytes)
                yield delta
                if not delta.more:
                    return
                after = delta.to_seq
        found = self.store.get_row(tier, item_id)
        versions = () if found is None else tuple(found[1].versions(tier))
        batch = Batch(
            batch_id=Batch.new_id(), source=self.origin, target=peer, tier=tier, items=versions
        )
        yield DeltaBatch(batch=batch, from_seq=0, to_seq=0, more=False)

    def observe_peer(self, peer: int, incarnation: bytes) -> bool:
        """Note a peer's HELLO incarnation; True if its store was recreated (cursors reset)."""
        return self.store.observe_peer(peer, incarnation)

    def record_ack(self, peer: int, tier: Tier, seq: int) -> None:
        """The peer applied our ``tier`` changes through ``seq`` (enables tombstone purge)."""
        self.store.record_ack(peer, tier, seq)

    def purge(self, peers: list[int], *, grace_ns: int | None = None) -> int:
        """Drop expired versions and fully acknowledged old tombstones; return the count."""
        now = self.clock.wall()
        n = self.store.purge_expired(now)
        if grace_ns is None:
            return n + self.store.purge_tombstones(peers, now_ns=now)
        return n + self.store.purge_tombstones(peers, grace_ns=grace_ns, now_ns=now)


class TierView:
    """The MEMSHADOW tier interface over one tier of an :class:`Engine`."""

    def __init__(self, engine: Engine, tier: Tier) -> None:
        self.engine = engine
        self.tier = tier

    def get_modified_since(self, seq: int, limit: int = 1000) -> list[StoredItem]:
        """Items changed after local sequence ``seq``, in sequence order (tombstones too)."""
        return [
            stored_item(self.tier, s, r)
            for s, r in self.engine.store.rows_since(self.tier, seq, limit)
        ]

    def get_by_id(self, item_id: bytes) -> StoredItem | None:
        """The live item, or ``None`` if absent or deleted."""
        found = self.engine.get(self.tier, item_id)
        return None if found is None or found.deleted else found

    def add(self, payload: bytes, **kwargs: Any) -> Item:
        return self.engine.add(self.tier, payload, **kwargs)

    def update(self, item_id: bytes, payload: bytes, **kwargs: Any) -> Item:
        return self.engine.update(self.tier, item_id, payload, **kwargs)

    def delete(self, item_id: bytes, **kwargs: Any) -> Item:
        return self.engine.delete(self.tier, item_id, **kwargs)

    def merge(self, item_id: bytes, fields: Mapping[str, Any], **kwargs: Any) -> Item:
        return self.engine.merge(self.tier, item_id, fields, **kwargs)

    def list(
        self, limit: int = 100, *, after_id: bytes = b"", include_deleted: bool = False
    ) -> list[StoredItem]:
        """Items in id order after ``after_id`` (CLI paging)."""
        rows = self.engine.store.scan(
            self.tier, limit=limit, after_id=after_id, include_deleted=include_deleted
        )
        return [stored_item(self.tier, s, r) for s, r in rows]
