"""Async facade: run store calls off the trio thread, one at a time.

Theory of operation: SQLite calls block (disk, fsync), so trio code must not make them on
the event loop. :class:`AsyncStore` sends every call to a worker thread through
``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``: calls run one after another in
arrival order, which is the store's one-writer rule. A call that has started is not
abandoned on cancellation (the default of ``run_sync``): the caller waits until SQLite
returns, so a cancelled task can never leave a transaction half-open behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

from protocol import Item, Tier

from .core import ApplyResult, Store
from .rows import Row

__all__ = ["AsyncStore", "SerialWorker"]

T = TypeVar("T")


class SerialWorker:
    """Runs blocking callables on worker threads strictly one at a time."""

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread; re-raise whatever it raises."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def statistics(self) -> trio.CapacityLimiterStatistics:
        """How many calls are running (0 or 1) and waiting."""
        return self._limiter.statistics()


class AsyncStore:
    """A :class:`Store` for trio code; every method is the async twin of the store's."""

    def __init__(self, store: Store, worker: SerialWorker | None = None) -> None:
        self.store = store
        self.worker = worker or SerialWorker()

    @classmethod
    async def open(cls, path: str, **options: Any) -> AsyncStore:
        """Open the store on a worker thread (migrations may take a while)."""
        worker = SerialWorker()
        store = await worker.run(lambda: Store.open(path, **options))
        return cls(store, worker)

    async def aclose(self) -> None:
        await self.worker.run(self.store.close)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any callable that uses the store, serialised with every other call."""
        return await self.worker.run(fn, *args)

    async def apply(self, tier: Tier, items: list[Item], **kwargs: Any) -> ApplyResult:
        return await self.worker.run(lambda: self.store.apply(tier, items, **kwargs))

    async def get_row(self, tier: Tier, item_id: bytes) -> tuple[int, Row] | None:
        return await self.worker.run(self.store.get_row, tier, item_id)

    async def rows_since(self, tier: Tier, after_seq: int, limit: int) -> list[tuple[int, Row]]:
        return await self.worker.run(self.store.rows_since, tier, after_seq, limit)

    async def digest(self, tier: Tier) -> bytes:
        return await self.worker.run(self.store.digest, tier)
