"""True conflicts across real daemons (SPEC.md section 2.2): a chain a - b - c.

Sequential writes made on different nodes log nothing; two writes made on both sides of a
partition (b stopped) log exactly one entry, with the losing value, on every node that held
both; a resolution converges everywhere and marks the entry resolved where it is logged.
Every wait is on a state (a barrier answered, a value read), never on a duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meshnodes import Node, chain, graph, wait_for

NS, KEY = "agents/alden", "units"


def _connected(node: Node) -> bool:
    with node.client() as c:
        return all(row["state"] == "connected" for row in c.peers())


def _barrier(node: Node) -> None:
    def done() -> bool:
        with node.client() as c:
            return not c.sync(timeout=5)["failed"]

    wait_for(done, 60, f"sync --now on {node.name}")


def _conflicts(node: Node) -> list[dict[str, Any]]:
    with node.client() as c:
        return c.conflicts(values=True)


def _value(node: Node) -> str:
    with node.client() as c:
        return str(c.get(namespace=NS, key=KEY)["value"])


@pytest.fixture
def line3(tmp_path: Path) -> Iterator[dict[str, Node]]:
    names = ["a", "b", "c"]
    nodes = graph(tmp_path, names, chain(names))
    for n in nodes.values():
        n.start()
    wait_for(lambda: all(_connected(n) for n in nodes.values()), 30, "links up")
    try:
        yield nodes
    finally:
        for n in nodes.values():
            if n.proc is not None:
                n.stop()


def test_sequential_then_concurrent_writes_and_a_resolution(line3: dict[str, Node]) -> None:
    a, b, c = line3["a"], line3["b"], line3["c"]
    for node, value in ((a, '"metric"'), (c, '"imperial"'), (b, '"kelvin"')):
        with node.client() as cl:
            cl.put(value, namespace=NS, key=KEY)
        _barrier(node)
    with a.client() as cl:
        cl.delete(namespace=NS, key=KEY)
    _barrier(a)
    with c.client() as cl:
        cl.put('"again"', namespace=NS, key=KEY)
    _barrier(c)
    assert [_conflicts(n) for n in (a, b, c)] == [[], [], []]  # sequential: nothing logged

    b.stop()  # the partition: a and c write the same item without seeing each other
    with a.client() as cl:
        cl.put('"from a"', namespace=NS, key=KEY)
    with c.client() as cl:
        cl.put('"from c"', namespace=NS, key=KEY)
    b.start()
    wait_for(lambda: all(_connected(n) for n in line3.values()), 30, "links up again")
    _barrier(b)
    _barrier(a)
    _barrier(c)
    winner = _value(b)
    assert winner in ('"from a"', '"from c"') and _value(a) == _value(c) == winner
    loser = '"from c"' if winner == '"from a"' else '"from a"'
    loser_node = c if winner == '"from a"' else a
    entries = {n.name: _conflicts(n) for n in (a, b, c)}
    for name in ("b", loser_node.name):  # these held both versions
        (entry,) = entries[name]
        assert entry["loser"]["value"] == loser and entry["winner"]["value"] == winner
        assert (entry["namespace"], entry["key"]) == (NS, KEY)
    keys = {
        (e["winner"]["timestamp_ns"], e["loser"]["timestamp_ns"])
        for v in entries.values()
        for e in v
    }
    assert len(keys) == 1 and all(len(v) <= 1 for v in entries.values())

    b.stop()  # a restart logs nothing twice
    b.start()
    wait_for(lambda: all(_connected(n) for n in line3.values()), 30, "links up after restart")
    _barrier(b)
    assert len(_conflicts(b)) == 1

    with b.client() as cl:
        cl.resolve_conflict(_conflicts(b)[0]["id"], keep="loser")
    _barrier(b)
    for node in (a, b, c):
        assert _value(node) == loser
        for entry in _conflicts(node):
            assert entry["resolved_by"] is not None
    assert a.digests() == b.digests() == c.digests()


def test_history_is_bounded_and_survives_a_daemon_restart(tmp_path: Path) -> None:
    (node,) = graph(tmp_path, ["h"], []).values()
    node.config.write_text(node.config.read_text() + "\n[history]\nepisodic = 3\n")
    node.start()
    try:
        with node.client() as cl:
            for i in range(6):
                cl.put(f'"v{i}"', namespace=NS, key=KEY)
            before = cl.history(namespace=NS, key=KEY)
        assert [r["value"] for r in before] == ['"v5"', '"v4"', '"v3"']
        node.stop()
        node.start()
        with node.client() as cl:
            assert cl.history(namespace=NS, key=KEY) == before
    finally:
        if node.proc is not None:
            node.stop()
