"""Named memory across real daemons: prefix listing two hops away, sharing by namespace.

Every wait is on a state (a barrier answered, an item listed), never on a duration.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshnodes import Node, chain, graph, wait_for

from meshsyncd.client import ClientError


def _start(nodes: dict[str, Node]) -> None:
    for n in nodes.values():
        n.start()
    wait_for(lambda: all(_connected(n) for n in nodes.values()), 30, "links up")


def _connected(node: Node) -> bool:
    with node.client() as c:
        return all(row["state"] == "connected" for row in c.peers())


def _stop(nodes: dict[str, Node]) -> None:
    for n in nodes.values():
        if n.proc is not None:
            n.stop()


def _listed(node: Node, namespace: str, tier: str = "episodic") -> list[tuple[str, str]]:
    with node.client() as c:
        page = c.list(namespace=namespace, tier=tier, limit=1000)
    return [(i["namespace"], i["key"]) for i in page["items"]]


def _share(node: Node, peer: Node, line: str) -> None:
    """Add ``line`` (``share = [...]``) to ``node``'s table for ``peer``."""
    text = node.config.read_text()
    pattern = rf'(?m)^(id = "{re.escape(peer.node_id)}"\naddress = .*$)'
    new = re.sub(pattern, lambda m: m.group(1) + "\n" + line, text)
    assert new != text, "peer table not found"
    node.config.write_text(new)


@pytest.fixture
def line3(tmp_path: Path) -> Iterator[dict[str, Node]]:
    names = ["a", "b", "c"]
    nodes = graph(tmp_path, names, chain(names))
    try:  # a node that fails to start must not leave the others running
        _start(nodes)
        yield nodes
    finally:
        _stop(nodes)


def test_named_item_is_listed_by_prefix_two_hops_away(line3: dict[str, Node]) -> None:
    a, c = line3["a"], line3["c"]
    with a.client() as cl:
        cl.put('{"units":"metric"}', namespace="agents/alden/prefs", key="units")
        cl.merge({"mood": "curious"}, namespace="agents/alden", key="state")
        cl.put("other agent", namespace="agents/alice", key="units")
        cl.put("by id, nameless")
    with c.client() as cl:  # the mesh barrier: a's acknowledged writes are readable on c
        assert cl.sync(timeout=30)["failed"] == []
    assert _listed(c, "agents/alden") == [
        ("agents/alden", "state"),
        ("agents/alden/prefs", "units"),
    ]
    with c.client() as cl:
        got = cl.get(namespace="agents/alden/prefs", key="units")
        spaces = cl.namespaces(prefix="agents", max_depth=2)
    assert got["value_json"] == {"units": "metric"}
    assert [(s["namespace"], s["items"]) for s in spaces] == [
        ("agents/alden", 2),
        ("agents/alice", 1),
    ]


def test_sharing_keeps_a_namespace_from_a_peer_both_ways(tmp_path: Path) -> None:
    """a gives b only public/ (share) and takes only public/ from it (write_share)."""
    nodes = graph(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    rule = '["episodic:public/"]'
    _share(a, b, f"share = {rule}\nwrite_share = {rule}")
    try:
        _start(nodes)
        with a.client() as cl:
            cl.put("for everyone", namespace="public", key="a1", priority="urgent")
            cl.put("a's secret", namespace="private", key="a2", priority="urgent")
            cl.put("nameless from a", priority="urgent")
        with b.client() as cl:
            cl.put("from b", namespace="public", key="b1", priority="urgent")
            cl.put("b's secret", namespace="private", key="b2", priority="urgent")
            # The barrier: b's writes are on a and a's are here, as far as sharing allows.
            assert cl.sync(timeout=20)["failed"] == []
        with a.client() as cl:
            assert cl.sync(timeout=20)["failed"] == []
        assert _listed(b, "") == [("private", "b2"), ("public", "a1"), ("public", "b1")]
        assert _listed(a, "") == [("private", "a2"), ("public", "a1"), ("public", "b1")]
        with b.client() as cl:
            assert len(cl.list(limit=1000)["items"]) == 3  # a's nameless item stayed on a
        with pytest.raises(ClientError, match="no item"), a.client() as cl:
            cl.get(namespace="private", key="b2")
        with a.client() as cl:
            row = next(r for r in cl.peers() if r["id"] == b.node_id)
        assert row["rejected"] >= 1
    finally:
        _stop(nodes)
    refused = [e for e in a.logs() if "namespace not writable" in str(e.get("event"))]
    assert refused and "private" in refused[0]["namespaces"]
