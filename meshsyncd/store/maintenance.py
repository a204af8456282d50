"""Store upkeep: peer incarnations and acknowledgements, purging.

Theory of operation: each operation here is its own short write transaction on the store's
single connection. Purging keeps the digests exact: a removed or trimmed row's hash leaves
its bucket in the same transaction as the row.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from protocol import Op, Tier

from .reads import ReadMixin
from .rows import (
    NO_BASE,
    SEQ_BITS,
    SEQ_MASK,
    base_hash,
    decode_fields,
    encode_fields,
    fields_hash,
    name_only_base,
    to_db,
)
from .txn import TxnHooks

__all__ = ["DAY_NS", "MaintenanceMixin"]

DAY_NS = 86_400 * 1_000_000_000


class MaintenanceMixin(ReadMixin, TxnHooks):
    """Upkeep operations of :class:`meshsyncd.store.core.Store` (see the module docstring)."""

    retention_ns: dict[Tier, int | None]
    local_synchronous: str
    replicated_synchronous: str

    def _unindex(self, t: int, rows: list[tuple[int, bytes]]) -> None:
        raise NotImplementedError  # names.NamesMixin

    def _forget_history(self, t: int, ids: list[bytes]) -> None:
        raise NotImplementedError  # history.HistoryMixin

    # -- peers ------------------------------------------------------------------------------

    def record_ack(self, peer: int, tier: Tier, seq: int) -> None:
        """Remember that ``peer`` applied our ``tier`` changes through ``seq`` (monotonic)."""
        self._begin(self.replicated_synchronous)
        try:
            self._conn.execute(
                "INSERT INTO cursors (peer, tier, acked) VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET acked = max(acked, excluded.acked)",
                (to_db(peer), int(tier), seq),
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def observe_peer(self, peer: int, incarnation: bytes) -> bool:
        """Record ``peer``'s store incarnation; reset its cursors if it changed.

        Returns True when the peer's store was recreated (its cursors, both ours on it and
        its acknowledgements of ours, are now 0, so the next pulls are full resyncs).

        Raises:
            ValueError: ``incarnation`` is not 16 bytes.
        """
        if len(incarnation) != 16:
            raise ValueError("an incarnation is 16 bytes")
        known = self.peer_incarnation(peer)
        if known == incarnation:
            return False
        self._begin(self.local_synchronous)
        try:
            self._conn.execute(
                "INSERT OR REPLACE INTO peers VALUES (?, ?)", (to_db(peer), incarnation)
            )
            self._conn.execute("DELETE FROM cursors WHERE peer = ?", (to_db(peer),))
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return known is not None

    # -- purging ----------------------------------------------------------------------------

    def _remove_rows(self, t: int, rows: list[tuple[int, bytes, int]]) -> None:
        """Delete rows (rowid, item_id, full hash), take them out of the digests, and drop
        their history."""
        deltas: dict[int, int] = {}
        for _rid, iid, h in rows:
            deltas[iid[0]] = deltas.get(iid[0], 0) - h
        self._conn.executemany("DELETE FROM items WHERE rowid = ?", [(r[0],) for r in rows])
        # Both levels: a tail row may still have a stale entry in ``ids`` from before it moved.
        self._conn.executemany(
            "DELETE FROM ids WHERE tier = ? AND item_id = ?", [(t, r[1]) for r in rows]
        )
        tail = self._tail[t]
        for _rid, iid, _h in rows:
            tail.pop(iid, None)
        # An item whose row is gone has no history either (history.py).
        self._forget_history(t, [r[1] for r in rows])
        self._write_buckets(t, deltas)
        # A change feed resumed from below this would miss these deletions (names.py).
        self._conn.execute(
            "UPDATE tiers SET purged = max(purged, ?) WHERE tier = ?",
            (max(r[0] for r in rows) & SEQ_MASK, t),
        )

    def purge_expired(self, now_ns: int | None = None) -> int:
        """Drop versions older than their tier's retention; return rows removed or changed.

        Expiry is decided per version from its own timestamp, so every node drops the same
        versions: a row whose versions all expired is deleted; a row whose base expired but
        whose MERGE fields did not keeps only those fields.

        Raises:
            sqlite3.Error: the disk failed; nothing was purged.
        """
        now = time.time_ns() if now_ns is None else now_ns
        touched = 0
        for tier, keep in self.retention_ns.items():
            if keep is None:
                continue
            t, cutoff = int(tier), now - keep
            self._begin(self.local_synchronous)
            try:
                recs = self._conn.execute(
                    "SELECT rowid, item_id, ts, origin, op, flags, payload, fields, bhash"
                    " FROM items WHERE rowid > ? AND rowid <= ? AND ts < ?",
                    (t << SEQ_BITS, (t << SEQ_BITS) | SEQ_MASK, to_db(cutoff)),
                ).fetchall()
                gone: list[tuple[int, bytes, int]] = []
                unnamed: list[tuple[int, bytes]] = []
                for rowid, iid, ts, origin, op, flags, payload, ftext, bh in recs:
                    old_hash = int.from_bytes(bh, "big") + fields_hash(iid, ftext)
                    fields = {k: v for k, v in decode_fields(ftext).items() if v[0] >= cutoff}
                    if not fields:
                        gone.append((rowid, iid, old_hash))
                        unnamed.append((flags, payload))
                        continue
                    if op == NO_BASE and len(fields) == len(decode_fields(ftext)):
                        continue
                    del ts, origin
                    ftext2 = encode_fields(fields)
                    # A named row keeps its name as a name-only base (rows.py, "Names").
                    flags2, body = name_only_base(flags, payload)
                    bh2 = base_hash(iid, 0, 0, NO_BASE, flags2, body)
                    self._conn.execute(
                        "UPDATE items SET ts = ?, origin = ?, op = 0, flags = ?, payload = ?,"
                        " fields = ?, bhash = ? WHERE rowid = ?",
                        (to_db(0), to_db(0), flags2, body, ftext2, bh2.to_bytes(32, "big"), rowid),
                    )
                    self._write_buckets(t, {iid[0]: bh2 + fields_hash(iid, ftext2) - old_hash})
                    touched += 1
                if gone:
                    self._remove_rows(t, gone)
                    self._unindex(t, unnamed)
                    touched += len(gone)
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return touched

    def purge_tombstones(
        self, peers: Iterable[int], *, grace_ns: int = 7 * DAY_NS, now_ns: int | None = None
    ) -> int:
        """Delete tombstones every listed peer acknowledged and older than the grace period.

        ``peers`` must be every peer this node syncs with: a tombstone is only safe to forget
        once nobody can still hold (and re-send) the version it deleted.

        Raises:
            sqlite3.Error: the disk failed; nothing was purged.
        """
        now = time.time_ns() if now_ns is None else now_ns
        peer_list = list(peers)
        removed = 0
        for tier in Tier:
            t = int(tier)
            horizon = min((self.acked(p, tier) for p in peer_list), default=SEQ_MASK)
            if horizon <= 0:
                continue
            self._begin(self.local_synchronous)
            try:
                recs = self._conn.execute(
                    "SELECT rowid, item_id, bhash, flags, payload FROM items"
                    " WHERE rowid > ? AND rowid <= ?"
                    " AND op = ? AND fields IS NULL AND ts < ?",
                    (
                        t << SEQ_BITS,
                        (t << SEQ_BITS) | horizon,
                        int(Op.DELETE),
                        to_db(now - grace_ns),
                    ),
                ).fetchall()
                if recs:
                    self._remove_rows(t, [(r[0], r[1], int.from_bytes(r[2], "big")) for r in recs])
                    self._unindex(t, [(r[3], r[4]) for r in recs])
                    removed += len(recs)
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return removed
