"""Named memory on the control socket and the client: names, prefix listing, namespaces,
bad names refused by part, and the resumable watch (replay + live, gapless, no dups)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from controlkit import serving, wait_until

from meshsyncd.client import Client, ClientError
from protocol import Tier


async def in_thread(path: Path, fn: Any) -> Any:
    """Run ``fn(client)`` with a blocking Client on a worker thread."""

    def work() -> Any:
        with Client(path) as client:
            return fn(client)

    return await trio.to_thread.run_sync(work)


async def test_named_items_round_trip_and_list_by_prefix(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_daemon, path, _server):

        def scenario(c: Client) -> tuple[Any, ...]:
            put = c.put('{"units": "metric"}', namespace="agents/alden/prefs", key="units")
            c.put("x", namespace=("agents", "alden"), key="mood")
            c.put("y", namespace="agents/alice", key="mood")
            c.merge({"n": 1}, namespace="agents/alden/prefs", key="counters")
            c.put("gone", namespace="agents/alden", key="old")
            c.delete(namespace="agents/alden", key="old")
            got = c.get(namespace=["agents", "alden", "prefs"], key="units")
            page1 = c.list(namespace="agents/alden", limit=2)
            page2 = c.list(namespace="agents/alden", limit=2, after=page1["next"])
            spaces = c.namespaces(prefix="agents")
            folded = c.namespaces(max_depth=1)
            return put, got, page1, page2, spaces, folded

        put, got, page1, page2, spaces, folded = await in_thread(path, scenario)
    assert (put["namespace"], put["key"]) == ("agents/alden/prefs", "units")
    assert got["value_json"] == {"units": "metric"} and got["item_id"] == put["item_id"]
    listed = [(i["namespace"], i["key"]) for i in page1["items"] + page2["items"]]
    assert listed == [
        ("agents/alden", "mood"),
        ("agents/alden/prefs", "counters"),
        ("agents/alden/prefs", "units"),
    ]
    assert page2["next"] is None
    assert {r["namespace"]: r["items"] for r in spaces} == {
        "agents/alden": 1,
        "agents/alden/prefs": 2,
        "agents/alice": 1,
    }
    assert folded == [{"namespace": "agents", "items": 4, "tiers": {"episodic": 4}}]


@pytest.mark.parametrize(
    ("namespace", "key", "part"),
    [
        ("agents//alden", "k", "namespace label 2"),
        ("a" * 256, "k", "namespace label 1"),
        ("/".join(["a"] * 17), "k", "namespace"),
        ("agents", "", "key"),
        ("agents", "k" * 1025, "key"),
        (["a/b"], "k", "namespace label 1"),
    ],
)
async def test_bad_names_are_refused_naming_the_part(
    tmp_path: Path, namespace: Any, key: str, part: str
) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        with pytest.raises(ClientError) as info:
            await in_thread(path, lambda c: c.put("v", namespace=namespace, key=key))
        assert info.value.code == "bad_request" and part in info.value.message
        assert daemon.engine.engine.store.tier_seq(Tier.EPISODIC) == 0


def _collect(path: Path, out: list[dict[str, Any]], n: int, **kw: Any) -> None:
    with Client(path) as c:
        for event in c.watch(timeout=10, **kw):
            out.append(event)
            if len(out) == n:
                return


async def test_watch_replays_then_follows_live_without_gap_or_duplicate(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        for i in range(5):
            await in_thread(path, lambda c, i=i: c.put(f"v{i}", namespace="a", key=f"k{i}"))
        await in_thread(path, lambda c: c.put("other", namespace="b", key="x"))
        first: list[dict[str, Any]] = []
        await trio.to_thread.run_sync(lambda: _collect(path, first, 3, since="episodic:0"))
        resume = first[-1]["cursor"]
        rest: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: trio.to_thread.run_sync(
                    lambda: _collect(path, rest, 4, since=resume, namespace="a", values=True)
                )
            )
            await in_thread(path, lambda c: c.put("live", namespace="a", key="k9"))
            await in_thread(path, lambda c: c.put("not a", namespace="b", key="y"))
            await in_thread(path, lambda c: c.delete(namespace="a", key="k0"))
        del daemon
    keys = [e["key"] for e in first] + [e["key"] for e in rest]
    assert keys == ["k0", "k1", "k2", "k3", "k4", "k9", "k0"]
    assert rest[-1]["op"] == "delete" and rest[1]["value"] == "v4"
    seqs = [e["seq"] for e in first + rest]
    assert seqs == sorted(set(seqs))


async def test_watch_refuses_a_cursor_it_cannot_resume_from(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_daemon, path, _server):
        await in_thread(path, lambda c: c.put("v", key="k"))

        def ahead() -> None:
            with Client(path) as c:
                next(iter(c.watch(since="episodic:99", timeout=5)))

        with pytest.raises(ClientError, match=r"beyond this node's sequence.*re-list"):
            await trio.to_thread.run_sync(ahead)


def test_watch_signal_is_never_dropped(tmp_path: Path) -> None:
    """A resumable watcher that reads nothing for a while still gets every change."""
    seen: list[dict[str, Any]] = []
    ready = threading.Event()

    async def main() -> None:
        async with serving(tmp_path, feed_buffer=1) as (daemon, path, _server):

            def slow() -> None:
                with Client(path) as c:
                    events = c.watch(since="now", tier="working", started=lambda _f: ready.set())
                    for event in events:
                        seen.append(event)
                        if len(seen) == 40:
                            return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, slow)
                await trio.to_thread.run_sync(ready.wait)
                for i in range(40):
                    await in_thread(path, lambda c, i=i: c.put(str(i), key=f"k{i}", tier="working"))
            await wait_until(lambda: daemon.feed.statistics().dropped == 0)

    trio.run(main)
    assert [e["key"] for e in seen] == [f"k{i}" for i in range(40)]


async def test_a_page_by_namespace_carries_each_value_once(tmp_path: Path) -> None:
    """Text as ``value`` only, bytes as ``value_b64`` only, a merged value as its JSON; the
    Client gives every item ``value_b64`` back, and the items equal what ``get`` says."""
    async with serving(tmp_path) as (_daemon, path, _server):

        def scenario(c: Client) -> tuple[Any, ...]:
            c.put("caf\u00e9", namespace="v", key="text")
            c.put(b"\xff\x00\xfe", namespace="v", key="bytes")
            c.put('{"a": 1}', namespace="v", key="merged")
            c.merge({"b": 2}, namespace="v", key="merged")
            raw = c.request("list", {"tier": "episodic", "namespace": "v"})
            page = c.list(namespace="v")
            gets = [c.get(namespace="v", key=k) for k in ("bytes", "merged", "text")]
            return raw, page, gets

        raw, page, gets = await in_thread(path, scenario)
    by_key = {i["key"]: i for i in raw["items"]}
    assert by_key["text"]["value"] == "caf\u00e9" and "value_b64" not in by_key["text"]
    assert by_key["bytes"]["value_b64"] == "/wD+" and "value" not in by_key["bytes"]
    assert by_key["merged"]["value"] == '{"a":1,"b":2}'
    assert by_key["merged"]["size"] == len('{"a":1,"b":2}')
    fields = ("value", "value_b64", "size", "op", "timestamp_ns", "origin", "item_id", "seq")
    for item, got in zip(page["items"], gets, strict=True):
        assert {f: item.get(f) for f in fields} == {f: got.get(f) for f in fields}


async def test_a_page_by_namespace_stops_at_the_value_budget(tmp_path: Path) -> None:
    """Five values of 900 KB: a page holds four (about 4 MiB), the next the fifth."""
    async with serving(tmp_path) as (_daemon, path, _server):

        def scenario(c: Client) -> tuple[Any, ...]:
            for i in range(5):
                c.put(str(i) * 900_000, namespace="big", key=f"k{i}")
            first = c.list(namespace="big", limit=10)
            second = c.list(namespace="big", limit=10, after=first["next"])
            return first, second

        first, second = await in_thread(path, scenario)
    assert [i["key"] for i in first["items"]] == ["k0", "k1", "k2", "k3"]
    assert first["next"] is not None
    assert [i["key"] for i in second["items"]] == ["k4"] and second["next"] is None


async def test_a_write_by_id_to_a_named_item_is_refused_naming_it(tmp_path: Path) -> None:
    """put/merge/delete by item_id of a named item: one-line bad_request naming the item,
    nothing stored; the item keeps its name and value, listed as before."""
    async with serving(tmp_path) as (_daemon, path, _server):

        def scenario(c: Client) -> tuple[Any, ...]:
            put = c.put('{"a": 1}', namespace="agents/alden", key="prefs")
            iid = put["item_id"]
            errors = []
            for op, params in (
                ("put", {"item_id": iid, "value": "by id"}),
                ("merge", {"item_id": iid, "fields": {"b": 2}}),
                ("delete", {"item_id": iid}),
            ):
                with pytest.raises(ClientError) as caught:
                    c.request(op, {"tier": "episodic", **params})
                errors.append((caught.value.code, caught.value.message))
            got = c.get(item_id=iid)
            page = c.list(namespace="agents")
            return iid, errors, got, page

        iid, errors, got, page = await in_thread(path, scenario)
    for code, message in errors:
        assert code == "bad_request" and "\n" not in message
        assert iid in message and "'agents/alden'" in message and "'prefs'" in message
    assert (got["namespace"], got["key"], got["value"]) == ("agents/alden", "prefs", '{"a": 1}')
    assert [(i["key"], i["value"]) for i in page["items"]] == [("prefs", '{"a": 1}')]
