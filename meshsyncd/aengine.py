"""The trio face of the engine: every engine call on the store's one serial worker thread.

Theory of operation: :class:`AsyncEngine` runs each synchronous :class:`Engine` call on a
:class:`meshsyncd.store.aio.SerialWorker`, so SQLite and CPU-heavy work stay off the trio
thread and the single writer sees one call at a time. URGENT/HIGH writes and pushes go ahead
of queued normal calls; a pull's batch is applied in slices that give way to them, and the
store's upkeep (fold steps) runs as separate calls after bulk work (DESIGN.md "Priorities").
Early push of urgent local writes is explained in ``stamp.py`` (the clock lease).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from protocol import Batch, Item, Op, Priority, Tier

from .engine import DeltaBatch, Engine
from .stamp import EARLY_MAX_PAYLOAD
from .store import ApplyResult, StoredItem
from .store.aio import SerialWorker

__all__ = ["AsyncEngine"]


class AsyncEngine:
    """Trio face of an :class:`Engine`: each call runs on one serial worker thread."""

    def __init__(self, engine: Engine, worker: SerialWorker | None = None) -> None:
        self.engine = engine
        self.worker = worker or SerialWorker()

    async def run(self, fn: Any, *args: Any, urgent: bool = False) -> Any:
        """Run any callable that touches the engine, serialised with every other call.

        ``urgent`` calls (URGENT/HIGH writes) go ahead of queued normal ones.
        """
        return await self.worker.run(fn, *args, urgent=urgent)

    async def maintain(self) -> None:
        """Run due store upkeep (fold steps), each step its own normal-priority worker call.

        Why separate calls: a step costs about one apply slice, and a call already running
        always finishes first; between two calls a queued urgent write goes ahead
        (DESIGN.md "Priorities"). Steps run until the tail is back under its limit, so the
        upkeep keeps pace with the applies that called it. The check reads the store's
        state from the trio thread without the worker: a stale answer only shifts a step
        to the next call.
        """
        store = self.engine.store
        while store.needs_maintenance:
            if not await self.worker.run(store.maintenance_step):
                break

    async def write(
        self, tier: Tier, item_id: bytes, op: Op, payload: bytes = b"", **kw: Any
    ) -> Item:
        urgent = kw.get("priority", Priority.NORMAL) >= Priority.HIGH
        item = await self.worker.run(
            lambda: self.engine.write(tier, item_id, op, payload, **kw), urgent=urgent
        )
        if not urgent:  # an urgent write is acknowledged (and pushed) without waiting
            await self.maintain()
        return item

    async def write_early(
        self,
        tier: Tier,
        item_id: bytes,
        op: Op,
        payload: bytes = b"",
        *,
        priority: Priority = Priority.NORMAL,
        announce: Callable[[Item], None],
        name: bytes = b"",
        base: tuple[int, int] | None = None,
    ) -> Item:
        """A local write whose ``announce`` (the daemon's push) runs as soon as is safe.

        ``announce`` runs exactly once: before the commit for an URGENT/HIGH write with a
        small payload whose timestamp the clock lease covers (see the module doc), else
        after the commit. ``op`` must not depend on the stored state (INSERT of a new id,
        MERGE): the version is stamped before the store is consulted. ``base`` is the
        version it replaces ((0, 0) for a new random id); ``None`` asks the store first.

        Raises:
            LocalProtocolError: the version is invalid; nothing was announced.
            sqlite3.Error: the disk failed; an early announcement may have gone out.
        """
        engine = self.engine
        urgent = priority >= Priority.HIGH
        if urgent and len(payload) <= EARLY_MAX_PAYLOAD:
            if base is None:  # one short urgent call: the base must be read before the stamp
                base = await self.worker.run(engine.store.current_key, tier, item_id, urgent=True)
            item = engine.stamp(tier, item_id, op, payload, priority=priority, name=name, base=base)
            early = engine.may_send_early(item)
            if not early:
                await self.worker.run(engine.commit, item, urgent=True)
                announce(item)
                return item
            announce(item)
            # Once the version has left, it is committed here too, cancelled or not.
            with trio.CancelScope(shield=True):
                # Let the session writers put the push on the wire before the commit's
                # thread starts competing with them for the GIL.
                await trio.lowlevel.checkpoint()
                await self.worker.run(engine.commit, item, urgent=True)
            return item
        # Acknowledged and announced without waiting for store upkeep (pulls pay for it).
        item = await self.worker.run(
            lambda: engine.write(tier, item_id, op, payload, priority=priority, name=name),
            urgent=urgent,
        )
        announce(item)
        return item

    async def create_delta_batch(
        self, tier: Tier, peer: int, after_seq: int, max_items: int = 1000, max_bytes: int = 1 << 20
    ) -> DeltaBatch:
        return await self.worker.run(
            self.engine.create_delta_batch, tier, peer, after_seq, max_items, max_bytes
        )

    async def apply_sync_batch(
        self,
        batch: Batch,
        *,
        to_seq: int | None = None,
        peer: int | None = None,
        changed: list[Item] | None = None,
    ) -> ApplyResult:
        """Apply a pulled (``to_seq``) or pushed batch on the writer; see :class:`Engine`.

        ``changed`` is filled for a push only: a pull's changes are announced, not relayed.
        """
        if to_seq is None:
            # A live push carrying URGENT/HIGH items jumps the queue of bulk applies.
            urgent = any(i.priority >= Priority.HIGH for i in batch.items)
            return await self.worker.run(
                lambda: self.engine.apply_sync_batch(batch, peer=peer, changed=changed),
                urgent=urgent,
            )
        # A pull's batch gives way to queued urgent calls between slices (each gap commits
        # what is folded so far, without the cursor), so an urgent push waits for one slice
        # of a chunk, not the whole of it.
        applied = conflicts = done = 0
        total = len(batch.items)
        yield_to = self.worker.urgent_waiting
        while True:
            part, done = await self.worker.run(
                lambda s=done: self.engine.apply_sync_part(
                    batch, to_seq=to_seq, peer=peer, start=s, yield_to=yield_to
                )
            )
            applied += part.applied
            conflicts += part.conflicts
            if done >= total:
                break
        await self.maintain()  # bulk (a pull) pays for the upkeep; live pushes never wait
        return ApplyResult(applied, conflicts)

    async def observe_peer(self, peer: int, incarnation: bytes) -> bool:
        return await self.worker.run(self.engine.observe_peer, peer, incarnation)

    async def get(self, tier: Tier, item_id: bytes) -> StoredItem | None:
        return await self.worker.run(self.engine.get, tier, item_id)

    async def digest(self, tier: Tier) -> bytes:
        return await self.worker.run(self.engine.digest, tier)
