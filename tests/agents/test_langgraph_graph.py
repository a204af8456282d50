"""A compiled LangGraph graph writes memories through MeshStore on node A; after the
``sync`` barrier, MeshStore on node B reads them back by the same names (real daemons,
real TLS between them)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph.graph", reason="the langgraph extra is not installed")

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from meshnodes import Node

from meshsyncd.client import Client
from meshsyncd.langgraph import MeshStore


class State(TypedDict):
    user: str
    facts: list[str]
    written: int


def remember(state: State, *, store: BaseStore) -> dict[str, Any]:
    """A graph node that saves each fact as a memory under the user's namespace."""
    for i, fact in enumerate(state["facts"]):
        store.put(("users", state["user"], "facts"), f"fact-{i}", {"text": fact, "n": i})
    store.put(("users", state["user"]), "profile", {"facts": len(state["facts"])})
    return {"written": len(state["facts"]) + 1}


async def aremember(state: State, *, store: BaseStore) -> dict[str, Any]:
    """The same, as an async node (the graph calls the store's async twins)."""
    for i, fact in enumerate(state["facts"]):
        await store.aput(("users", state["user"], "facts"), f"fact-{i}", {"text": fact, "n": i})
    await store.aput(("users", state["user"]), "profile", {"facts": len(state["facts"])})
    return {"written": len(state["facts"]) + 1}


def _graph(node: Any, store: MeshStore) -> Any:
    builder = StateGraph(State)
    builder.add_node("remember", node)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    return builder.compile(store=store)


def test_a_graph_on_node_a_is_read_back_on_node_b(pair: tuple[Node, Node], ns: str) -> None:
    a, b = pair
    tiers = {("users",): "semantic"}
    on_a = MeshStore(a.socket, tiers=tiers, priority="high")
    on_b = MeshStore(b.socket, tiers=tiers)
    alden, alice = f"alden-{ns}", f"alice-{ns}"

    out = _graph(remember, on_a).invoke({"user": alden, "facts": ["likes tea", "uses metric"]})
    assert out["written"] == 3
    state = {"user": alice, "facts": ["prefers UTC"], "written": 0}
    assert asyncio.run(_graph(aremember, on_a).ainvoke(state))["written"] == 2

    with Client(a.socket) as c:
        assert c.sync(timeout=10.0)["failed"] == []  # the barrier: A's writes are on B

    facts = on_b.search(("users", alden, "facts"))
    assert [(i.key, i.value) for i in facts] == [
        ("fact-0", {"text": "likes tea", "n": 0}),
        ("fact-1", {"text": "uses metric", "n": 1}),
    ]
    profile = on_b.get(("users", alden), "profile")
    assert profile is not None and profile.value == {"facts": 2}
    assert on_b.list_namespaces(prefix=("users", "*"), max_depth=2) >= [
        ("users", alden),
        ("users", alice),
    ]
    assert [i.value["text"] for i in on_b.search(("users", alice), filter={"n": 0})] == [
        "prefers UTC"
    ]
    # Same item on both nodes: same name, same version (the mesh replicated it).
    with Client(a.socket) as ca, Client(b.socket) as cb:
        item_a = ca.get(namespace=("users", alden), key="profile", tier="semantic")
        item_b = cb.get(namespace=("users", alden), key="profile", tier="semantic")
    assert (item_a["item_id"], item_a["timestamp_ns"]) == (
        item_b["item_id"],
        item_b["timestamp_ns"],
    )
    on_a.close()
    on_b.close()


def _doc_block(name: str) -> str:
    """The Python block of docs/agents.md that starts with ``# name``."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if block.startswith(f"# {name}"):
            return str(block)
    raise AssertionError(f"no {name} block in docs/agents.md")


def test_the_two_agent_example_of_the_docs_runs(
    pair: tuple[Node, Node], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    for name, node in (("agent_a.py", a), ("agent_b.py", b)):
        code = _doc_block(name).replace(f"node-{node.name}/control.sock", str(node.socket))
        scope: dict[str, Any] = {"__name__": name}
        exec(compile(code, name, "exec"), scope)
        scope["store"].close()
    assert capsys.readouterr().out.splitlines() == ["fact-0 prefers metric units"]
