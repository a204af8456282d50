"""MeshStore against LangGraph's own InMemoryStore: the same results for the same random
sequence of BaseStore operations, over a real daemon, through ``batch`` and ``abatch``.

The documented differences (``meshsyncd/langgraph.py``) are applied to the reference, not
papered over in MeshStore: search results come in name order (the reference's full result
is sorted by the same key, then sliced), and namespaces are listed only while they hold an
item (:class:`Reference` drops the empty ones InMemoryStore keeps). Timestamps are not
compared (the mesh's are write timestamps, the reference's are its own clock).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterable
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base", reason="the langgraph extra is not installed")

from conftest import count_items
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore
from meshnodes import Node

from meshsyncd.client import DaemonNotRunning
from meshsyncd.langgraph import MeshStore, SemanticSearchUnsupported


class Reference(InMemoryStore):
    """InMemoryStore, minus namespaces without items (it keeps those a get touched or
    whose items were all deleted; MeshStore lists only namespaces holding items)."""

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        out = super().batch(ops)
        for ns in [ns for ns, items in self._data.items() if not items]:
            del self._data[ns]
        return out


LABELS = st.sampled_from(["a", "b", "c"])
KEYS = st.sampled_from(["k1", "k2", "k3"])
VALUES = st.fixed_dictionaries(
    {"n": st.integers(0, 5)},
    optional={
        "s": st.sampled_from(["x", "y"]),
        "d": st.fixed_dictionaries({"e": st.integers(0, 2)}),
        "l": st.lists(st.integers(0, 1), max_size=2),
    },
)
FILTERS = st.one_of(
    st.none(),
    st.builds(lambda n: {"n": n}, st.integers(0, 5)),
    st.builds(
        lambda o, n: {"n": {o: n}},
        st.sampled_from(["$gt", "$gte", "$lt", "$ne"]),
        st.integers(0, 5),
    ),
    st.builds(lambda s: {"s": s}, st.sampled_from(["x", "y"])),
    st.builds(lambda e: {"d": {"e": e}}, st.integers(0, 2)),
    st.builds(lambda ln: {"l": ln}, st.lists(st.integers(0, 1), max_size=2)),
)
TAILS = st.lists(LABELS, min_size=1, max_size=3).map(tuple)
PREFIXES = st.lists(LABELS, max_size=2).map(tuple)
PATHS = st.lists(st.sampled_from(["a", "b", "c", "*"]), min_size=1, max_size=2).map(tuple)

PUT = st.tuples(st.just("put"), TAILS, KEYS, VALUES)
DELETE = st.tuples(st.just("delete"), TAILS, KEYS)
GET = st.tuples(st.just("get"), TAILS, KEYS)
SEARCH = st.tuples(st.just("search"), PREFIXES, FILTERS, st.integers(0, 6), st.integers(0, 4))
NAMESPACES = st.tuples(
    st.just("namespaces"),
    st.one_of(st.none(), PATHS),
    st.one_of(st.none(), PATHS),
    st.one_of(st.none(), st.integers(1, 4)),
    st.integers(1, 8),
    st.integers(0, 3),
)
BATCH = st.tuples(st.just("batch"), st.lists(st.one_of(PUT, DELETE, GET), min_size=2, max_size=4))
OPS = st.lists(
    st.one_of(PUT, PUT, DELETE, GET, SEARCH, NAMESPACES, BATCH), min_size=20, max_size=80
)


def _ops(step: tuple[Any, ...], root: str) -> list[Op]:
    """The BaseStore ops of one step, every namespace under this example's own root."""
    kind = step[0]
    if kind == "put":
        return [PutOp((root, *step[1]), step[2], step[3])]
    if kind == "delete":
        return [PutOp((root, *step[1]), step[2], None)]
    if kind == "get":
        return [GetOp((root, *step[1]), step[2])]
    if kind == "search":
        _, prefix, flt, limit, offset = step
        return [SearchOp((root, *prefix), flt, limit, offset)]
    if kind == "namespaces":
        _, prefix, suffix, depth, limit, offset = step
        conds = [MatchCondition("prefix", (root, *(prefix or ())))]
        if suffix:
            conds.append(MatchCondition("suffix", suffix))
        return [ListNamespacesOp(tuple(conds), depth, limit, offset)]
    return [op for sub in step[1] for op in _ops(sub, root)]


def _seen(result: Any) -> Any:
    """What is compared: names and values, not timestamps."""
    if isinstance(result, Item):
        return (result.namespace, result.key, result.value)
    if isinstance(result, list):
        return [_seen(r) for r in result]
    return result


def _expected(ref: Reference, ops: list[Op]) -> list[Any]:
    """The reference's answer, in name order for searches (the documented order)."""
    widened = [op._replace(limit=10**6, offset=0) if isinstance(op, SearchOp) else op for op in ops]
    out = []
    for op, result in zip(ops, ref.batch(widened), strict=True):
        if isinstance(op, SearchOp):
            result = sorted(result, key=lambda i: ("".join(x + "/" for x in i.namespace), i.key))
            result = result[op.offset : op.offset + op.limit]
        out.append(_seen(result))
    return out


def _store(node: Node, root: str) -> MeshStore:
    # Tier rules reach into the generated namespaces, so searches span several tiers.
    return MeshStore(node.socket, tiers={(root, "b"): "semantic", (root, "b", "c"): "working"})


@pytest.mark.parametrize("mode", ["batch", "abatch"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=OPS)
def test_mesh_store_answers_like_the_in_memory_store(
    mode: str, node: Node, steps: list[tuple[Any, ...]]
) -> None:
    root = "r" + uuid.uuid4().hex[:12]
    ref, mesh = Reference(), _store(node, root)
    try:
        if mode == "batch":
            for step in steps:
                ops = _ops(step, root)
                assert _seen(mesh.batch(ops)) == _expected(ref, ops), step
        else:

            async def run() -> None:
                for step in steps:
                    ops = _ops(step, root)
                    assert _seen(await mesh.abatch(ops)) == _expected(ref, ops), step

            asyncio.run(run())
        # The public methods end where the ops did: every item, by search and by get.
        everything = mesh.search((root,), limit=10**4)
        assert _seen(everything) == _expected(ref, [SearchOp((root,), None, 10**4, 0)])[0]
        for item in everything:
            assert _seen(mesh.get(item.namespace, item.key)) == _seen(item)
    finally:
        mesh.close()


def test_the_methods_and_their_async_twins(node: Node) -> None:
    root = "m" + uuid.uuid4().hex[:12]
    store = MeshStore(node.socket, tiers={(root, "facts"): "semantic"})
    store.put((root, "facts"), "sky", {"colour": "blue", "n": 1})
    store.put((root, "notes", "x"), "todo", {"text": "buy milk", "n": 2})
    item = store.get((root, "facts"), "sky")
    assert item is not None and item.value == {"colour": "blue", "n": 1}
    assert item.created_at == item.updated_at
    assert [i.key for i in store.search((root,), filter={"n": {"$gte": 2}})] == ["todo"]
    assert store.list_namespaces(prefix=(root,)) == [(root, "facts"), (root, "notes", "x")]
    assert store.list_namespaces(prefix=(root,), max_depth=2) == [(root, "facts"), (root, "notes")]
    assert store.list_namespaces(suffix=("x",), prefix=(root, "*")) == [(root, "notes", "x")]
    # The tier rule: facts are semantic, the rest the default (episodic).
    assert store.tier_for((root, "facts", "deep")).name == "SEMANTIC"
    assert store.tier_for((root, "notes")).name == "EPISODIC"

    async def twins() -> None:
        await store.aput((root, "facts"), "sea", {"colour": "green", "n": 3})
        sea = await store.aget((root, "facts"), "sea")
        assert sea is not None and sea.value["colour"] == "green"
        found = await store.asearch((root, "facts"), filter={"colour": "green"})
        assert [i.key for i in found] == ["sea"]
        await store.adelete((root, "facts"), "sea")
        assert await store.aget((root, "facts"), "sea") is None
        assert await store.alist_namespaces(prefix=(root, "facts")) == [(root, "facts")]

    asyncio.run(twins())
    store.delete((root, "facts"), "sky")
    store.delete((root, "facts"), "never-there")  # a no-op, as in LangGraph
    assert store.get((root, "facts"), "sky") is None
    assert store.list_namespaces(prefix=(root,)) == [(root, "notes", "x")]
    store.close()


def test_bad_input_raises_and_changes_nothing(node: Node) -> None:
    root = "e" + uuid.uuid4().hex[:12]
    store = MeshStore(node.socket)
    before = count_items(node)
    cases: list[tuple[Any, type[BaseException], str]] = [
        (lambda: store.put((root,), "k", ["not", "a", "dict"]), TypeError, "dicts"),
        (lambda: store.put((root,), "k", {"s": {1, 2}}), ValueError, "not JSON-serialisable"),
        (lambda: store.put((root,), "k", {"x": math.inf}), ValueError, "not JSON-serialisable"),
        (lambda: store.put((root,), "k", {"x": "y" * (1 << 20)}), ValueError, "1 MiB"),
        (lambda: store.put((root, ""), "k", {}), InvalidNamespaceError, "empty"),
        (lambda: store.put((root, "a/b"), "k", {}), InvalidNamespaceError, "separator"),
        (lambda: store.put((), "k", {}), InvalidNamespaceError, "empty"),
        (lambda: store.put((root,), "k", {}, index=["text"]), SemanticSearchUnsupported, "index"),
        (lambda: store.put((root,), "k", {}, ttl=5), NotImplementedError, "TTL"),
        (lambda: store.search((root,), query="cats"), SemanticSearchUnsupported, "embedding"),
        (
            lambda: store.batch(
                [PutOp((root,), "good", {"ok": 1}), PutOp((root,), "bad", {"x": object()})]
            ),
            ValueError,
            "not JSON-serialisable",
        ),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words):
            call()
    assert count_items(node) == before
    assert store.get((root,), "good") is None  # the good half of the bad batch: not written
    with pytest.raises(ValueError, match=r"unknown tier|expected one of"):
        MeshStore(node.socket, default_tier="L9")
    store.close()


def test_a_daemon_that_is_not_running(tmp_path: Any) -> None:
    with MeshStore(tmp_path / "none.sock") as store:
        with pytest.raises(DaemonNotRunning, match="daemon not running"):
            store.get(("a",), "k")
        with pytest.raises(DaemonNotRunning):
            asyncio.run(store.aput(("a",), "k", {"v": 1}))
