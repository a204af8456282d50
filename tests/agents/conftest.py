"""Real daemons for the agent interfaces (async client, LangGraph store, MCP server).

The nodes are real ``meshsyncd run`` processes made with the CLI (``tests/integration/
meshnodes.py``), started once per module: every test writes under a namespace of its own,
so tests do not see each other's items.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from meshnodes import Node, mesh, wait_for

from meshsyncd.client import Client


def _connected(node: Node) -> bool:
    with node.client() as c:
        return all(row["state"] == "connected" for row in c.peers())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One running node (no peers)."""
    n = Node(tmp_path_factory.mktemp("node"), "a")
    n.start()
    try:
        yield n
    finally:
        if n.proc is not None:
            n.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """Two running nodes that peer with each other, links up."""
    a, b = mesh(tmp_path_factory.mktemp("pair"), ["a", "b"])
    a.start()
    b.start()
    try:
        wait_for(lambda: _connected(a) and _connected(b), 30, "links up")
        yield a, b
    finally:
        for n in (a, b):
            if n.proc is not None:
                n.stop()


@pytest.fixture
def ns() -> str:
    """A namespace label of this test's own."""
    return "t" + uuid.uuid4().hex[:12]


def count_items(node: Node, tier: str = "episodic") -> int:
    with Client(node.socket) as c:
        return int(c.status()["tiers"][tier]["items"])
