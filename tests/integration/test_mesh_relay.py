"""Relay across hops with real daemons: writes reach nodes that are not direct peers.

The sync interval stays at its 30 s default (a periodic pull would hide a missing relay);
every wait below is far shorter than one interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from meshnodes import Node, chain, graph, wait_for

from meshsyncd.client import ClientError


@pytest.fixture
def line(tmp_path: Path) -> Iterator[dict[str, Node]]:
    """a - b - c - d: a and d are three hops apart."""
    names = ["a", "b", "c", "d"]
    nodes = graph(tmp_path, names, chain(names))
    for n in nodes.values():
        n.start()
    try:
        wait_for(lambda: all(_connected(n) for n in nodes.values()), 30, "links up")
        yield nodes
    finally:
        for n in nodes.values():
            if n.proc is not None:
                n.stop()


def _connected(node: Node) -> bool:
    with node.client() as c:
        return all(row["state"] == "connected" for row in c.peers())


def _has(node: Node, key: str, tier: str) -> bool:
    try:
        with node.client() as c:
            return c.get(tier=tier, key=key) is not None
    except ClientError:
        return False


def test_urgent_and_low_writes_cross_three_hops(line: dict[str, Node]) -> None:
    a, b, c, d = line["a"], line["b"], line["c"], line["d"]
    with d.client() as cl:
        cl.put("alert", tier="working", key="urgent-1", priority="urgent")
        cl.put("bulk", tier="semantic", key="low-1", priority="low")
    # far inside the 30 s interval: only relay and announcements can do this
    wait_for(lambda: _has(a, "urgent-1", "working"), 5, "urgent write three hops away")
    wait_for(lambda: _has(a, "low-1", "semantic"), 10, "low write three hops away")
    with b.client() as cl:
        rows = {r["id"]: r for r in cl.peers()}
    # b got the urgent write from c and pushed it on to a: counted as relayed towards a
    assert rows[a.node_id]["relayed"] >= 1
    assert rows[c.node_id].get("relayed", 0) == 0  # never back towards where it came from
    assert c.digests() == a.digests() == d.digests()
