"""What the latency benches share: stamping change events as they arrive, and reporting.

Why a module of its own: ``bench latency`` (two nodes) and ``bench mesh`` (a chain and a ring)
time the same thing, an URGENT write until a ``watch`` on another node reports it, and must
time it the same way (a thread blocked in ``recv`` stamps each arrival, this process's GC
kept out of the samples, nearest-rank percentiles) for their figures to be comparable.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..client import Client, ClientError
from .nodeproc import Node, NodeError

__all__ = [
    "WARMUP",
    "Progress",
    "Watcher",
    "no_gc_pauses",
    "percentile",
    "print_targets",
    "progress_printer",
    "quiet",
    "subscribe",
]

WARMUP = 3
Progress = Callable[[str], None]


def quiet(_msg: str) -> None:
    pass


class Watcher:
    """A ``watch`` subscription on one node, read by a thread that stamps each arrival.

    The thread blocks in ``recv`` (no GIL held), so the stamp is taken within microseconds
    of the event reaching this process. It ends when the node closes the connection.
    """

    def __init__(self, node: Node, tier: str = "working") -> None:
        self.tier = tier
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._client = Client(node.socket, timeout=10)
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-watch")
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(ClientError, OSError):
            for event in self._client.watch(tier=self.tier):
                now = time.perf_counter()
                with self._cond:
                    self.seen[str(event.get("item_id"))] = now
                    self._cond.notify_all()

    def wait(self, item_id: str, timeout: float) -> float | None:
        """perf_counter time at which ``item_id`` arrived, or ``None`` after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: item_id in self.seen, timeout)
            return self.seen.get(item_id)

    def join(self) -> None:
        self._thread.join(timeout=5)


def subscribe(b: Node) -> Watcher:
    """Watch B and return once the subscription demonstrably delivers (a local probe)."""
    watcher = Watcher(b)
    with b.client() as c:
        for _ in range(100):
            probe = c.put("{}", tier="working", priority="low")["item_id"]
            if watcher.wait(probe, 0.1) is not None:
                return watcher
    raise NodeError(f"no change events from B's watch stream; see {b.log}")


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """Keep this process's cyclic GC out of the samples it times.

    The watcher thread stamps arrivals; a full collection in this process (~30 ms with
    everything imported) would hold the GIL and add itself to whichever sample it hit.
    The nodes are separate processes and keep their own GC settings.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p99 is a measured sample)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def progress_printer() -> Progress:
    if sys.stderr.isatty():
        return lambda m: click.echo(m, err=True)
    return quiet


def print_targets(targets: dict[str, Any]) -> None:
    for name, ok in targets.items():
        shown = ("pass" if ok else "FAIL") if isinstance(ok, bool) else ok
        click.echo(f"  {name}: {shown}")
