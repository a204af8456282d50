"""The ``make_node`` fixture: engines over real store files (helpers in ``enginekit``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from enginekit import Node, Wall


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(origin: int, name: str | None = None, wall: Wall | None = None) -> Node:
        node = Node(tmp_path / f"{name or origin}.db", origin, wall)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
