"""``meshsyncd bench mesh``: N real daemons as a chain and as a ring (issue 11's figures).

Why real processes: relay and the barrier cross process boundaries, TLS and SQLite at every
hop, and the figure a user gets is the sum of those hops. The nodes come from
:mod:`meshsyncd.bench.nodeproc` like the demo's. The sync interval stays at its 30 s
default, so LOW data can only beat it through the relay's announcements.

What is measured, from node 0 (one end of the chain; the ring is the same nodes with the
last one linked back to node 0, so its farthest node is N/2 hops away):

* URGENT write on node 0 until readable on the farthest node: the farthest node's change
  feed, stamped on arrival by a thread of this process (as ``bench latency`` does one hop).
* LOW write on node 0 until readable on the farthest node (same watcher, another tier).
* ``sync --now`` on node 0: the mesh-wide barrier's wall time (control round trip).
* Repair of one differing item in a 1,000,000-item tier: ``bench repair``'s figures when
  that bench is there (``--repair-items`` sets its size; 0 skips it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..client import Client
from .nodeproc import Node, NodeError
from .observe import (
    WARMUP,
    Watcher,
    no_gc_pauses,
    percentile,
    print_targets,
    progress_printer,
    quiet,
)

__all__ = ["run_mesh_bench"]

N_NODES = 8
URGENT_SAMPLES = 120
LOW_SAMPLES = 10
BARRIER_SAMPLES = 10
_DOC = {"agent": "agent-07", "kind": "alert", "text": "mesh-wide alert " * 8}


@contextlib.contextmanager
def _line(n: int) -> Iterator[list[Node]]:
    root = Path(tempfile.mkdtemp(prefix="msmesh-", dir="/tmp"))
    nodes: list[Node] = []
    try:
        nodes = [Node(root, f"n{i}") for i in range(n)]
        for a, b in itertools.pairwise(nodes):
            a.add_peer(b)
            b.add_peer(a)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def _all_connected(nodes: list[Node], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(all(r.get("state") == "connected" for r in n.peers()) for n in nodes):
            return
        time.sleep(0.1)
    raise NodeError("the mesh's links did not all come up")


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3),
    }


def _writes(
    client: Client, watcher: Watcher, count: int, tier: str, priority: str
) -> dict[str, Any]:
    """``count`` writes on the first node until each is readable on the watched node."""
    times: list[float] = []
    lost = 0
    for i in range(count + WARMUP):
        value = json.dumps(_DOC | {"step": i, "tier": tier}, separators=(",", ":"))
        t0 = time.perf_counter()
        item_id = client.put(value, tier=tier, priority=priority)["item_id"]
        arrived = watcher.wait(str(item_id), 10.0)
        if arrived is None:
            lost += 1
        elif i >= WARMUP:
            times.append((arrived - t0) * 1e3)
        time.sleep(0.005 if priority == "urgent" else 0.25)
    return _stats(times) | {"lost": lost}


def _barriers(client: Client, count: int) -> dict[str, Any]:
    times: list[float] = []
    failed = 0
    for _ in range(count):
        t0 = time.perf_counter()
        result = client.sync(None, 10.0)
        times.append((time.perf_counter() - t0) * 1e3)
        failed += bool(result.get("failed"))
    return _stats(times) | {"failed": failed}


def _scenario(nodes: list[Node], far: Node, samples: int, progress: Any) -> dict[str, Any]:
    urgent_watch, low_watch = Watcher(far, "working"), Watcher(far, "semantic")
    try:
        with nodes[0].client() as c, no_gc_pauses():
            progress("  urgent writes")
            urgent = _writes(c, urgent_watch, samples, "working", "urgent")
            progress("  low writes")
            low = _writes(c, low_watch, LOW_SAMPLES, "semantic", "low")
            progress("  barriers")
            barrier = _barriers(c, BARRIER_SAMPLES)
    finally:
        far.stop()  # ends the watch connections; restarted by the caller if needed
        urgent_watch.join()
        low_watch.join()
    return {"urgent_farthest": urgent, "low_farthest": low, "barrier": barrier}


def run_mesh_bench(
    n: int = N_NODES, samples: int = URGENT_SAMPLES, progress: Any = quiet
) -> dict[str, Any]:
    """Chain then ring of ``n`` daemons; figures per topology (module docstring)."""
    out: dict[str, Any] = {"nodes": n, "sync_interval": "30s (default)"}
    with _line(n) as nodes:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        _all_connected(nodes)
        progress(f"bench mesh: chain of {n}, farthest node {n - 1} hops away")
        out["chain"] = {"hops": n - 1, **_scenario(nodes, nodes[-1], samples, progress)}
        nodes[-1].add_peer(nodes[0])
        nodes[0].add_peer(nodes[-1])  # reloads node 0; the last node starts with it listed
        nodes[-1].start()
        nodes[-1].wait_ready()
        _all_connected(nodes)
        far = nodes[n // 2]
        progress(f"bench mesh: ring of {n}, farthest node {n // 2} hops away")
        out["ring"] = {"hops": n // 2, **_scenario(nodes, far, samples, progress)}
    chain = out["chain"]
    out["targets"] = {
        "chain_urgent_p99<=25ms": chain["urgent_farthest"].get("p99_ms", math.inf) <= 25,
        "chain_low<=2s": chain["low_farthest"].get("max_ms", math.inf) <= 2000,
        "barrier<=2s": chain["barrier"].get("max_ms", math.inf) <= 2000
        and not chain["barrier"]["failed"],
    }
    return out


def _repair_figures(items: int, progress: Any) -> dict[str, Any] | None:
    """``bench repair``'s figures, if that bench exists in this build."""
    try:
        from . import repair as repair_bench
    except ImportError:
        return None
    run = getattr(repair_bench, "run_repair_bench", None)
    return None if run is None else dict(run(items, progress=progress))


@click.command("mesh")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--nodes", default=N_NODES, show_default=True, type=click.IntRange(3, 32))
@click.option("--samples", default=URGENT_SAMPLES, show_default=True, type=click.IntRange(100))
@click.option(
    "--repair-items",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(0),
    help="Tier size for the one-item repair figure (0 skips it).",
)
def mesh_cmd(as_json: bool, nodes: int, samples: int, repair_items: int) -> None:
    """N real daemons as a chain and a ring: urgent and LOW writes to the farthest node,
    the mesh-wide barrier, and the cost of repairing one item."""
    progress = progress_printer()
    try:
        result = run_mesh_bench(nodes, samples, progress)
        if repair_items:
            repair = _repair_figures(repair_items, progress)
            result["repair"] = repair if repair is not None else "bench repair not available"
    except NodeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"bench mesh: {nodes} daemons, default 30 s sync interval")
    for topo in ("chain", "ring"):
        r = result[topo]
        click.echo(f"  {topo} ({r['hops']} hops to the farthest node):")
        for name in ("urgent_farthest", "low_farthest", "barrier"):
            f = r[name]
            click.echo(
                f"    {name}: p50 {f.get('p50_ms')} ms, p99 {f.get('p99_ms')} ms, "
                f"max {f.get('max_ms')} ms (n={f.get('n')})"
            )
    if "repair" in result:
        click.echo(f"  repair: {result['repair']}")
    click.echo("targets:")
    print_targets(result["targets"])
