"""Helpers for engine and store tests: real SQLite stores in tmp_path with a settable wall clock.

A module of its own, not ``conftest.py``: test files import these names, and a bare
``from conftest import`` finds whichever directory's conftest was imported last.
"""

from __future__ import annotations

from pathlib import Path

from meshsyncd.clock import HybridClock
from meshsyncd.engine import Engine
from meshsyncd.store import Store
from protocol import Tier, pack_batch, unpack_batch

BASE_NS = 1_700_000_000_000_000_000


class Wall:
    """A wall clock the test moves by hand (it may step backwards)."""

    def __init__(self, ns: int = BASE_NS) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


class Node:
    """One engine over one store file, reopenable to simulate a restart."""

    def __init__(
        self, path: Path, origin: int, wall: Wall | None = None, *, fsync: bool = True
    ) -> None:
        self.options = (
            {} if fsync else {"local_synchronous": "OFF", "replicated_synchronous": "OFF"}
        )
        self.path = path
        self.origin = origin
        self.wall = wall or Wall()
        self.engine: Engine = self._open()

    def _open(self) -> Engine:
        store = Store.open(self.path, **self.options)
        return Engine(store, node_id=self.origin, clock=HybridClock(wall=self.wall))

    @property
    def store(self) -> Store:
        return self.engine.store

    def restart(self) -> None:
        self.store.close()
        self.engine = self._open()

    def close(self) -> None:
        self.store.close()


def pull(dst: Node, src: Node, tier: Tier, *, max_items: int = 50, wire: bool = True) -> int:
    """Pull every change of ``tier`` from ``src`` into ``dst``; return batches moved."""
    moved = 0
    while True:
        after = dst.store.cursor(src.origin, tier)
        delta = src.engine.create_delta_batch(tier, dst.origin, after, max_items)
        batch = delta.batch
        if wire:
            batch, _ = unpack_batch(pack_batch(batch))
        dst.engine.apply_sync_batch(batch, to_seq=delta.to_seq)
        moved += 1
        if not delta.more:
            return moved
