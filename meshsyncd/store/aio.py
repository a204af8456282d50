"""Async facade: run store calls off the trio thread, one at a time.

Theory of operation: SQLite calls block (disk, fsync), so trio code must not make them on
the event loop. :class:`AsyncStore` sends every call to a worker thread through
``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``: calls run one after another in
arrival order, which is the store's one-writer rule. A call that has started is not
abandoned on cancellation (the default of ``run_sync``): the caller waits until SQLite
returns, so a cancelled task can never leave a transaction half-open behind it.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from protocol import Item, Tier

from .core import ApplyResult, Store
from .rows import Row

__all__ = ["AsyncStore", "SerialWorker", "WorkerStatistics"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """Calls running (0 or 1) and waiting, urgent and normal."""

    borrowed_tokens: int
    tasks_waiting: int
    urgent_waiting: int
    urgent_runs: int


class SerialWorker:
    """Runs blocking callables on worker threads strictly one at a time, urgent ones first.

    Why a priority: an URGENT write or push must not queue behind a backlog of bulk
    applies (DESIGN.md "Priorities"). Queued urgent calls run before queued normal ones;
    a call already running always finishes first (a transaction is never interrupted).
    """

    def __init__(self) -> None:
        self._busy = False
        self._urgent: collections.deque[trio.Event] = collections.deque()
        self._normal: collections.deque[trio.Event] = collections.deque()
        self._urgent_runs = 0

    async def run(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> T:
        """Run ``fn(*args)`` on a worker thread; re-raise whatever it raises."""
        await self._acquire(urgent)
        try:
            if urgent:
                self._urgent_runs += 1
            return await trio.to_thread.run_sync(fn, *args)
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._busy:
            # Raise a pending cancellation *before* taking the worker: a cancel delivered
            # after taking it would leave it taken for ever (every later call would hang).
            await trio.lowlevel.checkpoint_if_cancelled()
            self._busy = True
            return
        turn = trio.Event()
        queue = self._urgent if urgent else self._normal
        queue.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # the worker was handed to us as we were cancelled
                self._release()
            else:
                queue.remove(turn)
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._normal):
            if queue:
                queue.popleft().set()  # ownership passes on; _busy stays True
                return
        self._busy = False

    def urgent_waiting(self) -> bool:
        """Whether an urgent call is queued; safe to ask from the running call's thread.

        A long call (a bulk apply) polls this between slices and ends early when it is
        true, so the urgent call runs next (reading a deque's length is atomic).
        """
        return bool(self._urgent)

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            borrowed_tokens=int(self._busy),
            tasks_waiting=len(self._urgent) + len(self._normal),
            urgent_waiting=len(self._urgent),
            urgent_runs=self._urgent_runs,
        )


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
