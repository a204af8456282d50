"""The async client against a real daemon, under asyncio and under trio (anyio runs both).

Each test body is one coroutine run by ``anyio.run`` on the backend of the parameter, so
the same assertions hold on both event loops.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import count_items
from meshnodes import Node

from meshsyncd.client import (
    AsyncClient,
    Client,
    ClientError,
    ConnectionLost,
    DaemonNotRunning,
    NotFound,
)
from meshsyncd.results import Change, Item, Version, Written
from protocol import Tier

pytestmark = pytest.mark.parametrize("backend", ["asyncio", "trio"])


def run(backend: str, body: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        with anyio.fail_after(60):  # a hang fails the test instead of blocking the suite
            return await body()

    return anyio.run(bounded, backend=backend)


def test_typed_round_trip(backend: str, node: Node, ns: str) -> None:
    async def body() -> None:
        async with AsyncClient(node.socket) as c:
            w = await c.put({"units": "metric"}, namespace=(ns, "alden"), key="prefs")
            assert isinstance(w, Written) and w.op == "insert"
            assert w.namespace == (ns, "alden") and w.key == "prefs"
            item = await c.get(namespace=(ns, "alden"), key="prefs")
            assert isinstance(item, Item) and item.tier is Tier.EPISODIC
            assert item.value == {"units": "metric"} and item.is_json
            assert item.raw == b'{"units": "metric"}'
            assert item.version == w.version and item.origin == w.origin
            assert item.updated_at.timestamp() == pytest.approx(w.version.timestamp_ns / 1e9)

            await c.merge({"tz": "UTC"}, namespace=(ns, "alden"), key="prefs")
            merged = await c.get(namespace=f"{ns}/alden", key="prefs")
            assert merged.value == {"units": "metric", "tz": "UTC"}
            assert merged.version > item.version

            await c.put("plain text", namespace=(ns, "bob"), key="note", tier="semantic")
            text = await c.get(namespace=(ns, "bob"), key="note", tier=Tier.SEMANTIC)
            assert text.value == "plain text" and not text.is_json
            await c.put(b"\xff\x00", namespace=(ns, "bob"), key="bin", tier="semantic")
            raw = await c.get(namespace=(ns, "bob"), key="bin", tier="semantic")
            assert raw.value == b"\xff\x00" and raw.raw == b"\xff\x00"

            page = await c.list(namespace=ns, tier="semantic")
            assert [(i.namespace, i.key) for i in page.items] == [
                ((ns, "bob"), "bin"),
                ((ns, "bob"), "note"),
            ]
            assert page.next is None
            infos = await c.namespaces(prefix=ns)
            assert [(i.namespace, i.items) for i in infos] == [((ns, "alden"), 1), ((ns, "bob"), 2)]
            assert infos[1].tiers == {"semantic": 2}

            gone = await c.delete(namespace=(ns, "alden"), key="prefs")
            assert gone.op == "delete" and gone.version > merged.version
            dead = await c.get(namespace=(ns, "alden"), key="prefs", include_deleted=True)
            assert dead.deleted and dead.value is None

            result = await c.sync(timeout=2.0)
            assert result.ok and result.failed == ()
            assert (await c.status())["node_id"] == node.node_id
            assert await c.conflicts() == []

    run(backend, body)


def test_conditions_history_freezes_and_snapshots(backend: str, node: Node, ns: str) -> None:
    async def body() -> None:
        async with AsyncClient(node.socket) as c:
            first = await c.put("v1", namespace=ns, key="doc", if_absent=True)
            with pytest.raises(ClientError) as absent:
                await c.put("again", namespace=ns, key="doc", if_absent=True)
            assert absent.value.code == "precondition_failed"
            item = await c.get(namespace=ns, key="doc")
            second = await c.put("v2", namespace=ns, key="doc", if_version=item.version)
            with pytest.raises(ClientError) as stale:
                await c.delete(namespace=ns, key="doc", if_version=first.version)
            assert stale.value.code == "precondition_failed"
            versions = await c.history(namespace=ns, key="doc")
            assert [v["current"] for v in versions] == [True, False]
            assert versions[0]["timestamp_ns"] == second.version.timestamp_ns

            snap = f"{ns}-snap"
            made = await c.snapshot_create(snap, namespace=ns, ttl=60)
            assert made["items"] == 1
            await c.put("v3", namespace=ns, key="doc")
            assert (await c.get(namespace=ns, key="doc", snapshot=snap)).value == "v2"
            page = await c.list(namespace=ns, snapshot=snap)
            assert [i.key for i in page.items] == ["doc"]
            assert snap in [s["name"] for s in await c.snapshots()]
            await c.snapshot_drop(snap)

            await c.freeze(ns, 60)
            with pytest.raises(ClientError) as frozen:
                await c.delete(namespace=ns, key="doc")
            assert frozen.value.code == "frozen"
            await c.unfreeze(ns)
            await c.delete(namespace=ns, key="doc")
            assert await c.conflicts(namespace=ns, open_only=True) == []

    run(backend, body)


def test_a_missing_item_raises_not_found_a_key_error(backend: str, node: Node, ns: str) -> None:
    async def body() -> None:
        async with AsyncClient(node.socket) as c:
            with pytest.raises(KeyError) as caught:
                await c.get(namespace=(ns,), key="nothing")
            assert isinstance(caught.value, NotFound) and caught.value.code == "not_found"
            assert "no item" in str(caught.value) and not str(caught.value).startswith("'")
            with pytest.raises(NotFound):
                await c.delete(namespace=(ns,), key="nothing")

    run(backend, body)
    # The blocking client follows the same convention, and old callers still see a
    # ClientError with code not_found.
    with Client(node.socket) as c, pytest.raises(NotFound) as caught:
        c.get(namespace=(ns,), key="nothing")
    assert isinstance(caught.value, ClientError) and caught.value.code == "not_found"


def test_bad_input_is_refused_before_anything_is_stored(backend: str, node: Node, ns: str) -> None:
    async def body() -> None:
        async with AsyncClient(node.socket) as c:
            cases: list[tuple[dict[str, Any], str, str]] = [
                ({"value": {1, 2}}, "bad_request", "not JSON-serialisable"),
                ({"value": {"x": math.nan}}, "bad_request", "not JSON-serialisable"),
                ({"value": {"x": object()}}, "bad_request", "not JSON-serialisable"),
                ({"value": "x" * (1 << 20 | 1)}, "too_large", "the limit is 1048576"),
                ({"value": "v", "namespace": (ns, ""), "key": "k"}, "bad_request", "empty"),
                ({"value": "v", "namespace": f"{ns}//x", "key": "k"}, "bad_request", "label 2"),
                ({"value": "v", "namespace": (ns, "a/b"), "key": "k"}, "bad_request", "label 2"),
                ({"value": "v", "namespace": (ns,), "key": ""}, "bad_request", "key"),
                ({"value": "v", "tier": "nowhere", "key": "k"}, "unknown_tier", "nowhere"),
            ]
            for kw, code, words in cases:
                value = kw.pop("value")
                kw.setdefault("key", "k")
                with pytest.raises(ClientError) as caught:
                    await c.put(value, **kw)
                assert caught.value.code == code, (kw, caught.value)
                assert words in caught.value.message, (kw, caught.value)
            with pytest.raises(ClientError, match="not JSON-serialisable"):
                await c.merge({"x": {1}}, namespace=(ns,), key="k")
            assert await c.namespaces(prefix=ns) == []

    before = count_items(node)
    run(backend, body)
    assert count_items(node) == before


def test_daemon_not_running(backend: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with AsyncClient(tmp_path / "no.sock") as c:
            with pytest.raises(DaemonNotRunning, match="daemon not running: no control socket"):
                await c.status()
            with pytest.raises(DaemonNotRunning):
                async for _ in c.watch():
                    pass

    run(backend, body)


def test_connection_loss_and_a_watch_that_resumes_across_a_restart(
    backend: str, tmp_path: Path, ns: str
) -> None:
    """The watch yields every change once across a daemon restart: it resumes after the
    last event it yielded, so an event read off the old connection but not yet yielded is
    replayed, and nothing yielded comes again."""
    node = Node(tmp_path, "r")
    node.start()

    async def body() -> None:
        async with AsyncClient(node.socket) as c, c.watch(namespace=ns, values=True) as feed:
            for i in range(3):
                await c.put({"n": i}, namespace=(ns,), key=f"k{i}")
            seen: list[Change] = [await feed.__anext__(), await feed.__anext__()]
            node.stop()
            with pytest.raises(ConnectionLost, match="lost the connection to the daemon"):
                await c.status()
            with pytest.raises(DaemonNotRunning):
                await c.status()
            await anyio.to_thread.run_sync(node.start)
            await c.put({"n": 3}, namespace=(ns,), key="k3")
            seen += [await feed.__anext__(), await feed.__anext__()]
            assert [e.key for e in seen] == ["k0", "k1", "k2", "k3"]
            assert [e.value for e in seen] == [{"n": i} for i in range(4)]
            assert feed.reconnects >= 1 and feed.cursor == seen[-1].cursor
            assert all(isinstance(e.version, Version) and e.op == "insert" for e in seen)

    try:
        run(backend, body)
    finally:
        if node.proc is not None:
            node.stop()
