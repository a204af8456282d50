"""``meshsyncd demo``: three real daemons on loopback, written to, synced, shown, removed.

Everything a user would do by hand, done in order: ``init`` three nodes in a temporary
directory, ``peers add`` each to the others, start three ``meshsyncd run`` processes (real
TLS, real SQLite files), write an item of every tier and priority on different nodes plus
one deliberate conflict through the control client, run the ``sync --now`` barrier, print
the peers table and the per-tier digests, stop the daemons with SIGTERM and delete the
directory. The exit status is 0 only if all three nodes converged.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from protocol import Priority, Tier

from ..bench.nodeproc import Node

__all__ = ["demo"]

NAMES = ("A", "B", "C")


def _write_everything(nodes: list[Node]) -> int:
    count = 0
    for i, tier in enumerate(Tier):
        for prio in Priority:
            node = nodes[(i + prio) % len(nodes)]
            doc = {"tier": tier.name, "priority": prio.name, "by": node.name, "text": "demo"}
            with node.client() as c:
                c.put(json.dumps(doc), tier=tier.name.lower(), priority=prio.name.lower())
            count += 1
    # one conflict: A then B write the same key, C merges a field on top
    with nodes[0].client() as c:
        c.put('{"fact": "from A"}', tier="semantic", key="shared")
    with nodes[1].client() as c:
        c.put('{"fact": "from B"}', tier="semantic", key="shared")
    with nodes[2].client() as c:
        c.merge({"extra": "merged by C"}, tier="semantic", key="shared")
    return count + 3


def _show(nodes: list[Node]) -> bool:
    echo = click.echo
    names = {n.node_id: n.name for n in nodes}
    echo(f"\n{'node':<5}{'peer':<5}{'state':<11}{'rtt ms':>8}{'items in':>10}{'items out':>11}")
    for node in nodes:
        with node.client() as c:
            rows: list[dict[str, Any]] = c.peers()
        for row in sorted(rows, key=lambda r: names.get(r["id"], "?")):
            rtt = row.get("rtt_ms")
            echo(
                f"{node.name:<5}{names.get(row['id'], '?'):<5}{row['state']:<11}"
                f"{(f'{rtt:.2f}' if rtt is not None else '-'):>8}"
                f"{row.get('items_in', 0):>10}{row.get('items_out', 0):>11}"
            )
    statuses = []
    for node in nodes:
        with node.client() as c:
            statuses.append(c.status())
    echo(f"\n{'tier':<10}" + "".join(f"{'digest ' + n.name:>20}" for n in nodes) + f"{'items':>7}")
    converged = True
    for tier in Tier:
        key = tier.name.lower()
        digests = [s["tiers"][key]["digest"] for s in statuses]
        converged &= len(set(digests)) == 1
        echo(
            f"{tier.name:<10}"
            + "".join(f"{d[:16]:>20}" for d in digests)
            + f"{statuses[0]['tiers'][key]['items']:>7}"
        )
    with nodes[0].client() as c:
        value = c.get(tier="semantic", key="shared").get("value")
    echo(f"\nthe conflict on every node resolves to: {value}")
    return converged


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (logs, stores, config).")
def demo(keep: bool) -> None:
    """Start a three-node mesh on loopback, write to it, show peers and digests, clean up.

    Three `meshsyncd run` processes with real TLS and SQLite stores in a temporary
    directory; an item of every tier and priority is written on different nodes, then
    `sync --now` runs and the peers table and per-tier digests are printed.

    \b
    Example:
      meshsyncd demo
      meshsyncd demo --keep    # look at the logs and stores afterwards
    """
    root = Path(tempfile.mkdtemp(prefix="msdemo-", dir="/tmp"))
    nodes: list[Node] = []
    ok = False
    try:
        click.echo(f"demo: three nodes in {root}")
        nodes = [Node(root, name) for name in NAMES]
        for a in nodes:
            for b in nodes:
                if a is not b:
                    a.add_peer(b)
            click.echo(f"  node {a.name}  {a.node_id}  127.0.0.1:{a.port}")
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        started = time.perf_counter()
        written = _write_everything(nodes)
        click.echo(f"demo: wrote {written} items (every tier x priority, one conflict)")
        for _ in range(40):  # until every node sees both peers and the barrier passes
            results = []
            for node in nodes:
                with node.client() as c:
                    results.append(c.sync(timeout=2.0))
            if all(len(r.get("synced", [])) == 2 for r in results):
                break
            time.sleep(0.25)
        click.echo(
            f"demo: sync --now barrier passed in {(time.perf_counter() - started) * 1000:.0f} ms"
        )
        ok = _show(nodes)
    finally:
        for node in nodes:
            node.stop()
        if keep:
            click.echo(f"demo: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    click.echo(
        f"demo: {'converged' if ok else 'NOT converged'}" + ("" if keep else f"; removed {root}")
    )
    if not ok:
        raise SystemExit(1)
