"""Local writes: stamping a version, storing it durably, and the clock lease behind early push.

Theory of operation (DESIGN.md "Delta sync", SPEC.md sections 2.1-2.2): a local write is
stamped by the hybrid logical clock with the item's current version here as its base, folded
into the store in its own ``synchronous=FULL`` transaction together with the clock's
high-water mark, and only then returned (acknowledged). The returned :class:`protocol.Item`
is what the daemon pushes.

Early push (:meth:`meshsyncd.aengine.AsyncEngine.write_early`): an URGENT/HIGH write may go
to peers while its own transaction is still committing, so a peer one hop away reads it
about one fsync sooner. What makes that safe is the *clock lease*: every local write commits
``clock_lease = timestamp + LEASE_NS`` along with its row (URGENT and HIGH writes, the
only ones that can go early, do), and a write is sent early
only if its timestamp is below the lease already on disk. A node that crashes between
the send and the commit therefore finds a lease above every timestamp it may have sent,
and its clock starts above it (the daemon first waits, at most ``LEASE_NS``, for the wall
clock to pass it), so a timestamp that left the node is never handed out again. The
first urgent write after ``LEASE_NS`` without urgent writes renews the lease the slow way
(commit, then push). A write that fails to commit after it was sent may still exist on
peers: the writer got an error, not a promise that nothing happened.

:class:`LocalWrites` is a part of :class:`meshsyncd.engine.Engine` (kept apart by concern:
the engine module holds sync, this one the local write path).
"""

from __future__ import annotations

import zstandard

from protocol import NAMED, PAYLOAD_ZSTD, Item, LocalProtocolError, Op, Priority, Tier
from protocol.bases import with_base
from protocol.names import SEPARATOR, read_name

from .clock import HybridClock
from .conditions import Freezes, check_condition
from .store import Store

__all__ = ["EARLY_MAX_PAYLOAD", "LEASE_NS", "LocalWrites"]

# How far ahead of a committed local write its clock lease reaches (see the module doc):
# longer keeps more urgent writes on the early path, shorter bounds the wait after a crash.
LEASE_NS = 1_000_000_000
# Payloads above this are stamped on the worker: building them is not free on the loop.
EARLY_MAX_PAYLOAD = 16 * 1024


def _describe(tier: Tier, item_id: bytes, name: bytes) -> str:
    """An item as errors name it: ``agents/alden/units`` or its id, and the tier."""
    if name:
        found = read_name(name)[0]
        text = SEPARATOR.join((*found.namespace, found.key))
    else:
        text = item_id.hex()
    return f"item {text} in tier {Tier(tier).name.lower()}"


class LocalWrites:
    """The local-write part of :class:`meshsyncd.engine.Engine` (module docstring)."""

    store: Store
    freezes: Freezes
    origin: int
    clock: HybridClock
    lease: int
    _floor: int

    def write(
        self,
        tier: Tier,
        item_id: bytes,
        op: Op,
        payload: bytes = b"",
        *,
        priority: Priority = Priority.NORMAL,
        compress: bool = False,
        name: bytes = b"",
        resolves: bool = False,
        expect: tuple[int, int] | None = None,
        absent: bool = False,
    ) -> Item:
        """Stamp, store durably and return one local version (INSERT/UPDATE/DELETE/MERGE).

        ``name`` is the item's name block (``protocol.name_block``) for a NAMED version;
        ``item_id`` must then be its id. The version carries the item's current version
        here as its base (SPEC.md section 2.2); ``resolves`` marks it as the resolution of
        the conflicts that base covers. ``expect``/``absent`` make it conditional
        (``conditions.py``): it is written only if the item's current version here is
        ``expect``, or it has no value; the check and the write are one writer call.

        Raises:
            PreconditionFailed: the condition does not hold; nothing was written.
            FrozenError: the item's namespace is frozen here; nothing was written.

        Raises:
            LocalProtocolError: the version is invalid (payload too large, MERGE not an
                object, DELETE with a payload, REPLICATE).
            sqlite3.Error: the disk failed; the write did not happen.
        """
        current, live = self.store.current_state(tier, item_id)
        if expect is not None or absent:
            what = _describe(tier, item_id, name)
            check_condition(current, live, expect=expect, absent=absent, what=what)
        item = self.stamp(
            tier,
            item_id,
            op,
            payload,
            priority=priority,
            compress=compress,
            name=name,
            base=current,
            resolves=resolves,
        )
        self.commit(item)
        return item

    def stamp(
        self,
        tier: Tier,
        item_id: bytes,
        op: Op,
        payload: bytes = b"",
        *,
        priority: Priority = Priority.NORMAL,
        compress: bool = False,
        name: bytes = b"",
        base: tuple[int, int] | None = None,
        resolves: bool = False,
    ) -> Item:
        """A new local version, stamped but not stored (thread-safe; see :meth:`write`).

        ``base`` is the version it replaces here ((0, 0): none; ``None``: unknown, only
        for tests of versions from older nodes).

        Raises:
            LocalProtocolError: the version is invalid.
        """
        if op == Op.REPLICATE:
            raise LocalProtocolError("REPLICATE is a request, not a write", field="item.op")
        if self.freezes.any:
            self.freezes.check(read_name(name)[0].namespace if name else None, self.clock.wall())
        flags = 0
        if compress and payload:
            packed = zstandard.ZstdCompressor(write_content_size=True).compress(payload)
            if len(packed) < len(payload):
                payload, flags = packed, PAYLOAD_ZSTD
        if name:  # SPEC.md section 2.1: the name goes first, never compressed
            payload, flags = name + payload, flags | NAMED
        if base is not None:  # SPEC.md section 2.2: then the base, never compressed
            flags, payload = with_base(flags, payload, base, resolves=resolves)
        return Item(
            item_id=item_id,
            timestamp_ns=self.clock.now(),
            origin=self.origin,
            tier=tier,
            op=op,
            priority=priority,
            flags=flags,
            payload=payload,
        )

    def commit(self, item: Item) -> None:
        """Store a stamped local version durably; an URGENT/HIGH one renews the clock lease.

        Only urgent writes can be sent early, so only they keep the lease ahead: a node
        whose last urgent write is older than ``LEASE_NS`` restarts without waiting.

        Raises:
            sqlite3.Error: the disk failed; the write did not happen here.
        """
        lease = item.timestamp_ns + LEASE_NS if item.priority >= Priority.HIGH else 0
        self.store.apply(
            Tier(item.tier),
            [item],
            local=True,
            clock_hwm=self.clock.last,
            clock_lease=lease,
            now_ns=self.clock.wall(),
        )
        self.lease = max(self.lease, lease)

    def may_send_early(self, item: Item) -> bool:
        """Whether ``item`` may reach peers before its commit: the lease on disk covers it."""
        return item.timestamp_ns < self.lease

    def lease_wait_s(self) -> float:
        """Seconds until the wall clock passes the lease (0 when it has, or is far off).

        A restart within ``LEASE_NS`` of the last local write waits this long before
        stamping anything, rather than starting its clock ahead of the wall clock (which
        peers would see as skew). A lease further ahead than twice that means the wall
        clock stepped back a long way; then the clock simply starts at the lease, as after
        any step back, instead of stalling the daemon.
        """
        ahead = self._floor - self.clock.wall()
        return ahead / 1e9 if 0 < ahead <= 2 * LEASE_NS else 0.0
