"""``meshsyncd bench latency``: an URGENT write on A until readable on B, idle and during a
bulk pull, between two real daemons on loopback (nodes and preload as in ``mesh.py``).

"Readable on B" is B's change feed: a ``watch`` subscription on B, read by a thread of this
process that timestamps each event on arrival (``observe.py``). B publishes a remote change
only after the batch carrying it committed, so a ``get`` would find it. The clock starts
before the ``put`` on A, so A's own durable write is part of the latency.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import click

from ..client import Client
from .mesh import MAX_BULK_ROUNDS, N_ITEMS, N_SAMPLES, _preload, _row, _two_nodes, _wait_cursor
from .nodeproc import Node
from .observe import (
    WARMUP,
    Progress,
    Watcher,
    no_gc_pauses,
    percentile,
    print_targets,
    progress_printer,
    quiet,
    subscribe,
)

__all__ = ["run_latency_bench"]


_DOC = {"agent": "agent-07", "kind": "alert", "text": "tool failure: retry with backoff " * 4}


def _sample(a_client: Client, watcher: Watcher, i: int) -> tuple[float, float] | None:
    """One URGENT write on A: (ms until readable on B, ms for A to acknowledge the put)."""
    value = json.dumps(_DOC | {"step": i}, separators=(",", ":"))
    t0 = time.perf_counter()
    item_id = a_client.put(value, tier="working", priority="urgent")["item_id"]
    acked = time.perf_counter()
    arrived = watcher.wait(str(item_id), 5.0)
    if arrived is None:
        return None
    return (arrived - t0) * 1e3, (acked - t0) * 1e3


def _floor(client: Client, samples: int) -> dict[str, Any]:
    """The machine's floor: the cheapest control request to A, paced like the idle samples.

    Why: an idle sample crosses three processes (this one to A, A to B, B back to this
    one's watcher) after a 5 ms pause, and on a virtual machine whose idle vCPUs halt,
    waking each one costs more than any of the work done. A ``peers`` request touches
    no store and does no I/O beyond the socket, so its round trip after the same pause
    is what one wake-up-and-answer costs here, measured in the same run.
    """
    times: list[float] = []
    for _ in range(samples + WARMUP):
        start = time.perf_counter()
        client.peers()
        times.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.005)
    times = times[WARMUP:]
    return {
        "request": "peers (no store access), 5 ms apart like the idle samples",
        "p50_ms": round(percentile(times, 50), 3),
        "p99_ms": round(percentile(times, 99), 3),
    }


def _summary(lat: list[float], acks: list[float], lost: int) -> dict[str, Any]:
    if not lat:
        return {"n": 0, "lost": lost}
    return {
        "n": len(lat),
        "lost": lost,
        "p50_ms": round(percentile(lat, 50), 3),
        "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(max(lat), 3),
        "mean_ms": round(sum(lat) / len(lat), 3),
        "put_ack_p50_ms": round(percentile(acks, 50), 3),
    }


def _restart_empty(b: Node) -> None:
    """Delete stopped B's store and start it, so it pulls A's whole EPISODIC tier again."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{b.store_path}{suffix}").unlink(missing_ok=True)
    b.start()
    b.wait_ready()


def run_latency_bench(
    samples: int = N_SAMPLES, bulk_items: int = N_ITEMS, progress: Progress = quiet
) -> dict[str, Any]:
    """URGENT write on A until readable on B: ``samples`` idle and ``samples`` during a pull.

    During-bulk samples count only if B's cursor on A's EPISODIC tier was still below A's
    sequence after the sample arrived; when a pull ends before enough samples were taken,
    B is restarted with an empty store for another pull (at most ``MAX_BULK_ROUNDS``).

    Raises:
        NodeError: a node failed to start, or B never saw its own probe write.
    """
    with _two_nodes() as (a, b):
        progress(f"bench latency: writing {bulk_items:,} items into A's store")
        _preload(a, bulk_items)
        a.start()
        a.wait_ready()
        seq = int(a.status()["tiers"]["episodic"]["seq"])
        bulk_lat: list[float] = []
        bulk_acks: list[float] = []
        bulk_lost = after_bulk = rounds = 0
        watcher: Watcher | None = None
        with a.client() as ac, no_gc_pauses():
            while len(bulk_lat) < samples and rounds < MAX_BULK_ROUNDS:
                rounds += 1
                if watcher is None:
                    b.start()
                    b.wait_ready()
                else:
                    b.stop()  # also ends the old watcher's connection
                    watcher.join()
                    _restart_empty(b)
                watcher = subscribe(b)
                _wait_cursor(b, a, 1, 60, progress, "bench latency: pull start")
                progress(f"bench latency: during bulk, round {rounds}")
                taken = 0
                while len(bulk_lat) < samples:
                    got = _sample(ac, watcher, taken)
                    taken += 1
                    if got is None:
                        bulk_lost += 1
                    elif _row(b, a).get("cursors", {}).get("episodic", 0) >= seq:
                        after_bulk += 1  # the pull ended before this one was confirmed
                        break
                    elif rounds > 1 or taken > WARMUP:
                        bulk_lat.append(got[0])
                        bulk_acks.append(got[1])
                    time.sleep(0.002)
                _wait_cursor(b, a, seq, 600, progress, "bench latency: bulk")
            assert watcher is not None
            progress("bench latency: idle")
            idle_lat: list[float] = []
            idle_acks: list[float] = []
            idle_lost = 0
            for i in range(samples + WARMUP):
                got = _sample(ac, watcher, i)
                if got is None:
                    idle_lost += 1
                elif i >= WARMUP:
                    idle_lat.append(got[0])
                    idle_acks.append(got[1])
                time.sleep(0.005)
            floor = _floor(ac, samples)
    idle = _summary(idle_lat, idle_acks, idle_lost)
    bulk = _summary(bulk_lat, bulk_acks, bulk_lost) | {
        "bulk_items": bulk_items,
        "pull_rounds": rounds,
        "dropped_after_pull_ended": after_bulk,
    }
    return {
        "samples": samples,
        "warmup_discarded": WARMUP,
        "readable_on_b": "B's watch stream (change event stamped on arrival by a thread)",
        "clock_starts": "before the put on A (A's durable write included)",
        "idle": idle,
        "bulk": bulk,
        "floor": floor,
        "targets": {
            "idle_p50<=2ms": idle.get("p50_ms", math.inf) <= 2,
            "idle_p99<=10ms": idle.get("p99_ms", math.inf) <= 10,
            "bulk_p99<=25ms": bulk.get("p99_ms", math.inf) <= 25 and len(bulk_lat) >= samples,
        },
    }


@click.command("latency")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--samples", default=N_SAMPLES, show_default=True, type=click.IntRange(1))
@click.option("--bulk-items", default=N_ITEMS, show_default=True, type=click.IntRange(1000))
def latency(as_json: bool, samples: int, bulk_items: int) -> None:
    """URGENT write on A until readable on B (watch stream): p50/p99 idle and during a pull.

    The bulk is a BULK_ITEMS-item pull from A to a B with an empty store; a sample counts
    as "during bulk" only if the pull was still running after it arrived.

    \b
    Example:
      meshsyncd bench latency
      meshsyncd bench latency --samples 50 --json | jq .idle
    """
    figures = run_latency_bench(samples, bulk_items, progress_printer())
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(f"readable on B: {figures['readable_on_b']}; clock {figures['clock_starts']}")
    click.echo(f"{'phase':<7}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'put ack p50':>13}")
    for phase in ("idle", "bulk"):
        s = figures[phase]
        if s["n"]:
            click.echo(
                f"{phase:<7}{s['n']:>5}{s['p50_ms']:>9}{s['p99_ms']:>9}{s['max_ms']:>9}"
                f"{s['put_ack_p50_ms']:>13}"
            )
    bulk = figures["bulk"]
    click.echo(
        f"bulk: {bulk['bulk_items']:,}-item pull, {bulk['pull_rounds']} round(s), "
        f"{bulk['lost']} lost"
    )
    floor = figures["floor"]
    click.echo(
        f"floor: one control round trip to A ({floor['request']}): "
        f"p50 {floor['p50_ms']} ms, p99 {floor['p99_ms']} ms"
    )
    print_targets(figures["targets"])
