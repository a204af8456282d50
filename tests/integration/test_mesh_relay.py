"""Relay across hops with real daemons: writes reach nodes that are not direct peers.

The sync interval stays at its 30 s default (a periodic pull would hide a missing relay);
every wait below is far shorter than one interval.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from meshnodes import Node, chain, cli, graph, wait_for

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


def _sync(node: Node, *args: str) -> tuple[int, dict[str, object]]:
    proc = cli("sync", "--now", "--json", "--config", str(node.config), *args, check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


def test_barrier_covers_the_chain_and_names_what_it_cannot(line: dict[str, Node]) -> None:
    a, b, c, d = line["a"], line["b"], line["c"], line["d"]
    with a.client() as cl:  # LOW: no push, only the barrier's pulls carry it to d
        cl.put("from a", tier="episodic", key="bar-a", priority="low")
    with d.client() as cl:
        cl.put("from d", tier="episodic", key="bar-d", priority="background")
    code, result = _sync(a)
    assert code == 0, result
    assert result["nodes"] == {n.node_id: "covered" for n in (b, c, d)}
    with a.client() as cl:  # what the progress line of sync --now reads
        assert cl.request("sync_progress", {}) == {"covered": 4, "known": 4}
    # the barrier brought d's write here and took a's write to d
    assert _has(a, "bar-d", "episodic") and _has(d, "bar-a", "episodic")
    # stop the far end: the barrier from a names it, two hops away, and exits 1
    assert d.stop() == 0
    wait_for(lambda: not _connected(c), 20, "c to see d gone")
    code, result = _sync(a)
    assert code == 1
    assert result["failed"] == [d.node_id]
    assert result["nodes"][d.node_id] == "unreachable"
    assert result["nodes"][b.node_id] == result["nodes"][c.node_id] == "covered"


def _started(nodes: dict[str, Node]) -> dict[str, Node]:
    for n in nodes.values():
        n.start()
    wait_for(lambda: all(_connected(n) for n in nodes.values()), 30, "links up")
    return nodes


def test_ring_concurrent_barriers_and_urgent_relay(tmp_path: Path) -> None:
    """a - b - c - d - a: writes go both ways round; two barriers at once both finish."""
    names = ["a", "b", "c", "d"]
    nodes = graph(tmp_path, names, [*chain(names), ("d", "a")])
    try:
        _started(nodes)
        a, c = nodes["a"], nodes["c"]
        with a.client() as cl:
            cl.put("ring", tier="working", key="ring-urgent", priority="urgent")
        wait_for(lambda: _has(c, "ring-urgent", "working"), 5, "urgent write across the ring")
        for i, n in enumerate(nodes.values()):
            with n.client() as cl:
                cl.put(f"w{i}", tier="semantic", key=f"ring-{i}", priority="low")
        with ThreadPoolExecutor(2) as pool:  # from opposite sides of the cycle, at once
            results = list(pool.map(_sync, [a, c]))
        for code, result in results:
            assert code == 0, result
            assert set(result["nodes"].values()) == {"covered"}
            assert len(result["nodes"]) == 3
        for i in range(4):
            assert _has(a, f"ring-{i}", "semantic") and _has(c, f"ring-{i}", "semantic")
    finally:
        for n in nodes.values():
            if n.proc is not None:
                n.stop()


def test_star_relays_between_leaves(tmp_path: Path) -> None:
    """A hub with three leaves: a leaf's writes reach the other leaves through the hub."""
    nodes = graph(tmp_path, ["h", "x", "y", "z"], [("h", "x"), ("h", "y"), ("h", "z")])
    try:
        _started(nodes)
        x, y, z = nodes["x"], nodes["y"], nodes["z"]
        with x.client() as cl:
            cl.put("hi", tier="episodic", key="star-urgent", priority="high")
            cl.put("lo", tier="episodic", key="star-low", priority="low")
        for leaf in (y, z):
            wait_for(lambda leaf=leaf: _has(leaf, "star-urgent", "episodic"), 5, "high relay")
            wait_for(lambda leaf=leaf: _has(leaf, "star-low", "episodic"), 10, "low relay")
        code, result = _sync(y)
        assert code == 0 and len(result["nodes"]) == 3, result
    finally:
        for n in nodes.values():
            if n.proc is not None:
                n.stop()
