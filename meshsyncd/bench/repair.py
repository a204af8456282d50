"""``meshsyncd bench repair``: bytes and round trips to repair one differing item in 1M.

What it measures (issue 11, "Proof"): two stores of one tier hold the same ``--items`` items
except one that only B holds; both claim to be in sync (cursors at each other's sequence,
so the pull has nothing to do). Two real :class:`~meshsyncd.node.session.Session` objects
talk over an in-memory stream pair, each with the daemon's repair handlers, and A starts a
reconciliation (SPEC.md 4.2). Counted from A's opening frame until both ends are idle: the
frame bytes in each direction (the session's own counters, before TLS) and the round
trips, i.e. how many times the direction of the traffic turned, halved and rounded up.

Why in-process: the figure is the protocol's, not TLS's or the OS's, and the stores are
large. They are built straight into SQLite (1000 items per transaction, no fsync), B as a
file copy of A plus one item; ``--cache-dir`` keeps the pair for later runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import trio
import trio.testing

import protocol as P
from protocol import Item, Op, Priority, Tier

from ..aengine import AsyncEngine
from ..engine import Engine
from ..mesh.repair import Repair
from ..node.session import Session, SessionClosed
from ..store import SCHEMA_VERSION, Store
from ..store.rows import to_db

__all__ = ["run_repair_bench"]

TIER = Tier.EPISODIC
A_ID, B_ID = bytes([1]) * 32, bytes([2]) * 32
TARGETS = {"max_round_trips": 3, "max_bytes": 32 * 1024}
_FAST = {"local_synchronous": "OFF", "replicated_synchronous": "OFF"}


def _build(path: Path, n: int, seed: int) -> None:
    """A store holding ``n`` small items of one tier, as if pulled from a third node."""
    rng = random.Random(seed)
    base = time.time_ns() - 3_600_000_000_000
    with Store.open(path, **_FAST) as store:
        for start in range(0, n, 1000):
            items = [
                Item(
                    item_id=rng.randbytes(16),
                    timestamp_ns=base + i,
                    origin=3,
                    tier=TIER,
                    op=Op.INSERT,
                    priority=Priority.LOW,
                    payload=json.dumps({"n": i}).encode(),
                )
                for i in range(start, min(n, start + 1000))
            ]
            store.apply(TIER, items)
        while store.needs_maintenance:
            store.maintenance_step()


def _pair(workdir: Path, n: int, cache: Path | None) -> tuple[Path, Path]:
    """A's and B's store files (B = A + one item), built or copied from ``cache``."""
    key = f"repair-v{SCHEMA_VERSION}-{n}"
    src = (cache or workdir) / f"{key}.db"
    if not src.exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        _build(src, n, seed=11)
    a, b = workdir / "a.db", workdir / "b.db"
    shutil.copyfile(src, a)
    shutil.copyfile(src, b)
    with Store.open(b, **_FAST) as store:
        extra = Item(
            item_id=random.Random(12).randbytes(16),
            timestamp_ns=time.time_ns(),
            origin=3,
            tier=TIER,
            op=Op.INSERT,
            priority=Priority.LOW,
            payload=b'{"the": "one that differs"}',
        )
        store.apply(TIER, [extra])
    return a, b


def _as_synced(dst: Store, src: Store, src_origin: int, dst_origin: int) -> None:
    """Record that dst has pulled everything of src and src has acked dst: nothing to pull."""
    conn = dst._conn
    conn.execute("INSERT OR REPLACE INTO peers VALUES (?, ?)", (to_db(src_origin), src.incarnation))
    for tier in Tier:
        conn.execute(
            "INSERT OR REPLACE INTO cursors (peer, tier, applied, acked) VALUES (?, ?, ?, ?)",
            (to_db(src_origin), int(tier), src.tier_seq(tier), dst.tier_seq(tier)),
        )
    del dst_origin


class _Tap(trio.abc.Stream):
    """A stream that records which side sent each chunk (for counting round trips)."""

    def __init__(self, inner: trio.abc.Stream, side: str, log: list[str]) -> None:
        self.inner, self.side, self.log = inner, side, log

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self.log or self.log[-1] != self.side:
            self.log.append(self.side)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _exchange(a: Engine, b: Engine) -> dict[str, Any]:
    left, right = trio.testing.memory_stream_pair()
    turns: list[str] = []
    repairs = {side: Repair(verify_interval=3600, announce_every=3600) for side in "ab"}
    common: dict[str, Any] = {"pull_interval": 3600, "ping_interval": 3600}
    common["capabilities"] = P.Capability.REPAIR
    sa = Session(
        AsyncEngine(a),
        _Tap(left, "a", turns),
        node_id=A_ID,
        peer_id=B_ID,
        extensions=repairs["a"].handlers(),
        **common,
    )
    sb = Session(
        AsyncEngine(b),
        _Tap(right, "b", turns),
        node_id=B_ID,
        peer_id=A_ID,
        extensions=repairs["b"].handlers(),
        **common,
    )

    async def run(s: Session) -> None:
        with contextlib.suppress(SessionClosed):
            await s.run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, sa)
        nursery.start_soon(run, sb)
        await sa.wait_synced()
        await sb.wait_synced()
        await trio.testing.wait_all_tasks_blocked()
        before = (sa.conn.bytes_out, sb.conn.bytes_out)
        turns.clear()
        started = time.perf_counter()
        await repairs["a"].link(sa).start(TIER)
        while not all(  # noqa: ASYNC110 - a benchmark polls; the daemon never waits on this
            r.stats.reconciliations and not r.status()["running"] for r in repairs.values()
        ):
            await trio.sleep(0.001)
        seconds = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    a_to_b, b_to_a = sa.conn.bytes_out - before[0], sb.conn.bytes_out - before[1]
    return {
        "bytes": a_to_b + b_to_a,
        "bytes_a_to_b": a_to_b,
        "bytes_b_to_a": b_to_a,
        "round_trips": math.ceil(len(turns) / 2),
        "items_fetched": repairs["a"].stats.items_fetched + repairs["b"].stats.items_fetched,
        "seconds": round(seconds, 3),
    }


def run_repair_bench(
    items: int, cache: Path | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Build (or reuse) the pair, run one reconciliation, return its figures and targets.

    ``progress`` gets a line before each phase (``bench mesh`` shows them on a terminal).
    """
    say = progress or (lambda _line: None)
    with tempfile.TemporaryDirectory(prefix="meshsyncd-bench-repair-") as tmp:
        say(f"bench repair: two stores of {items:,} items, one differing")
        built = time.perf_counter()
        pa, pb = _pair(Path(tmp), items, cache)
        build_s = time.perf_counter() - built
        a = Engine(Store.open(pa, **_FAST), node_id=A_ID)
        b = Engine(Store.open(pb, **_FAST), node_id=B_ID)
        try:
            assert a.digest(TIER) != b.digest(TIER)
            _as_synced(a.store, b.store, b.origin, a.origin)
            _as_synced(b.store, a.store, a.origin, b.origin)
            say("bench repair: reconciling")
            result = trio.run(_exchange, a, b)
            result["converged"] = a.digest(TIER) == b.digest(TIER)
        finally:
            a.store.close()
            b.store.close()
    result |= {"items": items, "build_seconds": round(build_s, 1), "targets": TARGETS}
    result["ok"] = (
        result["converged"]
        and result["round_trips"] <= TARGETS["max_round_trips"]
        and result["bytes"] <= TARGETS["max_bytes"]
    )
    return result


@click.command("repair")
@click.option("--items", default=1_000_000, show_default=True, help="Items in each store.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the built store here and reuse it in later runs.",
)
def repair_cmd(items: int, as_json: bool, cache_dir: str | None) -> None:
    """Bytes and round trips to repair one differing item between two large stores.

    \b
    Examples:
      meshsyncd bench repair
      meshsyncd bench repair --items 100000 --json
    """
    result = run_repair_bench(items, Path(cache_dir) if cache_dir else None)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(
            f"repair of 1 item in {items:,}: {result['round_trips']} round trips, "
            f"{result['bytes']:,} bytes ({result['bytes_a_to_b']:,} A->B, "
            f"{result['bytes_b_to_a']:,} B->A), {result['seconds']} s; "
            f"targets <= {TARGETS['max_round_trips']} round trips, <= {TARGETS['max_bytes']:,}"
            f" bytes: {'ok' if result['ok'] else 'MISSED'}"
        )
    if not result["ok"]:
        raise SystemExit(1)
