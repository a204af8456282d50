"""Introducers with real daemons: three nodes that know only the hub end up linked.

The hub lists b, c and d (``peers add``); each of them lists only the hub, marked
``--introducer``. Nothing else is configured: every other link comes from introductions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshnodes import Node, cli, wait_for

from meshsyncd.client import ClientError


def _rows(node: Node) -> dict[str, dict[str, object]]:
    with node.client() as c:
        return {str(r["id"]): r for r in c.peers()}


def _linked(node: Node, others: list[Node], by: Node) -> bool:
    rows = _rows(node)
    return all(
        o.node_id in rows
        and rows[o.node_id]["state"] == "connected"
        and rows[o.node_id]["introduced_by"] == [by.node_id]
        for o in others
    )


def _has(node: Node, key: str) -> bool:
    try:
        with node.client() as c:
            return c.get(tier="working", key=key) is not None
    except ClientError:
        return False


def _refused(node: Node, stranger: Node) -> bool:
    return any(
        line.get("event") == "connection refused"
        and len(str(line.get("peer", ""))) >= 8
        and stranger.node_id.startswith(str(line["peer"]))
        for line in node.logs()
    )


@pytest.fixture
def star(tmp_path: Path) -> Iterator[dict[str, Node]]:
    nodes = {n: Node(tmp_path, n) for n in ("hub", "b", "c", "d")}
    hub = nodes["hub"]
    for name in ("b", "c", "d"):
        hub.add_peer(nodes[name])
        nodes[name].add_peer(hub, "--introducer")
    for n in nodes.values():
        n.start()
    try:
        yield nodes
    finally:
        for n in nodes.values():
            if n.proc is not None:
                n.stop()


def test_introduced_nodes_link_relay_and_are_removed(star: dict[str, Node], tmp_path: Path) -> None:
    hub, b, c, d = star["hub"], star["b"], star["c"], star["d"]
    members = [b, c, d]
    for n in members:
        others = [o for o in members if o is not n]
        wait_for(lambda n=n, others=others: _linked(n, others, hub), 30, f"{n.name} introduced")

    # introduced links carry data: an urgent write from b reaches everyone
    with b.client() as cl:
        cl.put("alert", tier="working", key="urgent-m", priority="urgent")
    for n in (hub, c, d):
        wait_for(lambda n=n: _has(n, "urgent-m"), 10, f"urgent write on {n.name}")

    # learned peers are kept apart from the hand-written config
    learned = json.loads((b.config.parent / "introduced.json").read_text())
    assert set(learned["peers"]) == {c.node_id, d.node_id}
    assert c.node_id not in b.config.read_text()

    # a node nobody vouches for is refused by all, even though it lists them all
    stranger = Node(tmp_path, "x")
    for n in star.values():
        stranger.add_peer(n)
    stranger.start()
    try:
        for n in star.values():
            wait_for(lambda n=n: _refused(n, stranger), 30, f"{n.name} refusing x")
        assert all(r["state"] != "connected" for r in _rows(stranger).values())
    finally:
        stranger.stop()

    # removing d at the introducer removes it everywhere
    cli("peers", "remove", d.node_id, "--config", str(hub.config))
    for n in (hub, b, c):
        wait_for(lambda n=n: d.node_id not in _rows(n), 20, f"d gone from {n.name}")
    learned = json.loads((b.config.parent / "introduced.json").read_text())
    assert set(learned["peers"]) == {c.node_id}
    assert b.node_id in _rows(c) and _rows(c)[b.node_id]["state"] == "connected"
