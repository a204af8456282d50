"""The serial worker: one call at a time, queued urgent calls before queued normal ones."""

from __future__ import annotations

import threading

import trio
import trio.testing

from meshsyncd.store.aio import SerialWorker


async def test_urgent_calls_overtake_queued_normal_calls() -> None:
    worker = SerialWorker()
    gate = threading.Event()
    order: list[str] = []
    running = 0
    peak = 0
    lock = threading.Lock()

    def job(name: str, wait: bool = False) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if wait:
            gate.wait(5)
        order.append(name)
        with lock:
            running -= 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, job, "first", True)  # holds the worker
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            nursery.start_soon(worker.run, job, f"bulk{i}")
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(lambda: worker.run(job, "urgent", urgent=True))
        await trio.testing.wait_all_tasks_blocked()
        stats = worker.statistics()
        assert (stats.tasks_waiting, stats.urgent_waiting) == (4, 1)
        gate.set()
    assert order == ["first", "urgent", "bulk0", "bulk1", "bulk2"]
    assert peak == 1
    assert worker.statistics().borrowed_tokens == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_the_worker_usable() -> None:
    worker = SerialWorker()
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run, gate.wait, 5)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.05):
            await worker.run(lambda: None, urgent=True)
        assert worker.statistics().tasks_waiting == 0
        gate.set()
    assert await worker.run(lambda: 42) == 42


async def test_a_call_cancelled_as_it_takes_an_idle_worker_does_not_keep_it() -> None:
    worker = SerialWorker()
    with trio.CancelScope() as scope:
        scope.cancel()
        await worker.run(lambda: None)
    with trio.fail_after(5):
        assert await worker.run(lambda: 7) == 7
