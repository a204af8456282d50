"""The control server over a real Unix socket, a real store and a fake daemon."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
from controlkit import PEER_ID, RawConn, serving, short_socket_dir, wait_until

from meshsyncd.client import Client, ClientError, DaemonNotRunning, PermissionDenied
from meshsyncd.control.feed import ChangeFeed
from meshsyncd.control.proto import key_item_id, node_id_text
from meshsyncd.control.server import ControlServer, ControlSocketError
from protocol import MAX_PAYLOAD, Op, Priority, Tier


async def in_thread(path: Path, fn: Any) -> Any:
    """Run ``fn(client)`` with a blocking Client on a worker thread."""

    def work() -> Any:
        with Client(path) as client:
            return fn(client)

    return await trio.to_thread.run_sync(work)


async def _snapshot(daemon: Any) -> list[tuple[int, bytes]]:
    store = daemon.engine.engine.store
    return await daemon.engine.run(
        lambda: [(store.count(t), store.digest(t)) for t in Tier] + [(0, store.incarnation)]
    )


# -- round trips ----------------------------------------------------------------------------


async def test_put_get_delete_merge_list_round_trip(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):

        def scenario(c: Client) -> dict[str, Any]:
            out: dict[str, Any] = {}
            out["put"] = c.put("hello", tier=Tier.SEMANTIC, priority=Priority.URGENT)
            iid = out["put"]["item_id"]
            out["get"] = c.get(iid, tier="semantic")
            out["update"] = c.put("hello again", item_id=iid, tier=Tier.SEMANTIC)
            out["get2"] = c.get(iid, tier=Tier.SEMANTIC)
            out["merge"] = c.merge({"a": 1}, key="doc", tier="L2")
            out["merge2"] = c.merge({"b": [2]}, key="doc")
            out["doc"] = c.get(key="doc")
            out["list"] = c.list(tier=Tier.SEMANTIC)
            out["delete"] = c.delete(iid, tier=Tier.SEMANTIC)
            with pytest.raises(ClientError) as gone:
                c.get(iid, tier=Tier.SEMANTIC)
            out["gone"] = gone.value.code
            out["tomb"] = c.get(iid, tier=Tier.SEMANTIC, include_deleted=True)
            with pytest.raises(ClientError) as again:
                c.delete(iid, tier=Tier.SEMANTIC)
            out["again"] = again.value.code
            out["list_after"] = c.list(tier=Tier.SEMANTIC)
            out["list_deleted"] = c.list(tier=Tier.SEMANTIC, include_deleted=True)
            out["status"] = c.status()
            return out

        out = await in_thread(path, scenario)
        assert out["put"]["op"] == "insert" and out["put"]["priority"] == "urgent"
        assert out["put"]["origin"] == NODE_ORIGIN
        assert out["get"]["value"] == "hello" and out["get"]["tier"] == "semantic"
        assert base64.b64decode(out["get"]["value_b64"]) == b"hello"
        assert out["update"]["op"] == "update"
        assert out["update"]["timestamp_ns"] > out["put"]["timestamp_ns"]
        assert out["get2"]["value"] == "hello again"
        assert out["merge"]["op"] == "merge"
        assert json.loads(out["doc"]["value"]) == {"a": 1, "b": [2]}
        assert [i["item_id"] for i in out["list"]["items"]] == [out["put"]["item_id"]]
        assert out["list"]["next"] is None
        assert out["delete"]["op"] == "delete"
        assert out["gone"] == "not_found" and out["again"] == "not_found"
        assert out["tomb"]["deleted"] is True and "value" not in out["tomb"]
        assert out["list_after"]["items"] == []
        assert len(out["list_deleted"]["items"]) == 1
        semantic = out["status"]["tiers"]["semantic"]
        assert (semantic["items"], semantic["tombstones"], semantic["seq"]) == (0, 1, 3)
        assert out["status"]["tiers"]["episodic"]["items"] == 1  # the merged doc
        # Every local write was published and handed to the daemon for pushing.
        assert [i.op for i in daemon.pushed] == [
            Op.INSERT,
            Op.UPDATE,
            Op.MERGE,
            Op.MERGE,
            Op.DELETE,
        ]
        assert daemon.pushed[0].priority == Priority.URGENT
        assert daemon.feed.statistics().published == 5


NODE_ORIGIN = bytes(range(8)).hex()


async def test_key_names_and_binary_values(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_daemon, path, _server):
        blob = bytes(range(256)) * 3

        def scenario(c: Client) -> tuple[dict[str, Any], dict[str, Any], bytes]:
            put = c.put(blob, key="agent/7/scratch", tier=Tier.WORKING)
            got = c.get(key="agent/7/scratch", tier=Tier.WORKING)
            return put, got, c.get_bytes(put["item_id"], tier=Tier.WORKING)

        put, got, raw = await in_thread(path, scenario)
        # Since protocol 3 a key alone names an item in the root namespace (SPEC.md 2.1).
        block = b"\x00\x00\x0fagent/7/scratch"
        expected = hashlib.sha256(b"meshsyncd-name:" + block).digest()[:16]
        assert put["item_id"] == expected.hex() == key_item_id("agent/7/scratch").hex()
        assert (got["namespace"], got["key"]) == ("", "agent/7/scratch")
        assert "value" not in got  # not UTF-8: base64 only
        assert raw == blob and got["size"] == len(blob)


async def test_list_pages_with_after_cursor(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_daemon, path, _server):

        def scenario(c: Client) -> list[str]:
            for i in range(7):
                c.put(f"v{i}", item_id=bytes([i]) * 16)
            seen: list[str] = []
            after = None
            while True:
                page = c.list(limit=3, after=after)
                seen += [i["item_id"] for i in page["items"]]
                after = page["next"]
                if after is None:
                    return seen

        seen = await in_thread(path, scenario)
        assert seen == [(bytes([i]) * 16).hex() for i in range(7)]


async def test_status_peers_vectors_conflicts_sync(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        engine = daemon.engine.engine
        peer_short = int.from_bytes(PEER_ID[:8], "big")
        # A pulled batch from the peer moves its cursor; an older concurrent write conflicts.
        iid = b"c" * 16
        await daemon.engine.write(Tier.EPISODIC, iid, Op.INSERT, b"mine")
        mine = await daemon.engine.get(Tier.EPISODIC, iid)
        assert mine is not None
        from protocol import Batch, Item

        theirs = Item(
            item_id=iid,
            timestamp_ns=mine.key[0] - 1000,
            origin=peer_short,
            tier=Tier.EPISODIC,
            op=Op.INSERT,
            payload=b"theirs",
        )
        batch = Batch(
            batch_id=Batch.new_id(),
            source=peer_short,
            target=0,
            tier=Tier.EPISODIC,
            items=(theirs,),
        )
        await daemon.engine.run(lambda: engine.apply_sync_batch(batch, to_seq=42))
        daemon.unreachable.add(bytes(32))

        def scenario(c: Client) -> dict[str, Any]:
            return {
                "status": c.status(),
                "peers": c.peers(),
                "vectors": c.vectors(),
                "conflicts": c.conflicts(),
                "semantic_conflicts": c.conflicts(tier=Tier.SEMANTIC),
                "sync_all": c.sync(timeout=1.5),
                "sync_some": c.sync([node_id_text(PEER_ID), node_id_text(bytes(32))], 0.5),
            }

        out = await in_thread(path, scenario)
        status = out["status"]
        assert status["node_id"] == node_id_text(daemon.node_id)
        assert status["incarnation"] == engine.incarnation.hex()
        assert status["uptime"] >= 0
        assert status["tiers"]["episodic"] == {
            "items": 1,
            "tombstones": 0,
            "seq": engine.store.tier_seq(Tier.EPISODIC),
            "digest": engine.digest(Tier.EPISODIC).hex(),
        }
        assert out["peers"][0]["state"] == "connected"
        (vec,) = out["vectors"]["peers"]
        assert vec["peer"] == node_id_text(PEER_ID)
        assert vec["tiers"]["episodic"]["cursor"] == 42
        assert out["vectors"]["local_seq"]["episodic"] == 1
        (conflict,) = out["conflicts"]
        assert conflict["item_id"] == iid.hex()
        assert conflict["loser"]["origin"] == f"{peer_short:016x}"
        assert out["semantic_conflicts"] == []
        assert out["sync_all"]["synced"] == [node_id_text(PEER_ID)]
        assert out["sync_some"]["failed"] == [node_id_text(bytes(32))]
        assert daemon.sync_calls[0] == (None, 1.5)


# -- bad input ------------------------------------------------------------------------------


async def test_payload_too_large_and_unknown_tier(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        before = await _snapshot(daemon)

        def client_side(c: Client) -> list[str]:
            codes = []
            for call in (
                lambda: c.put(b"x" * (MAX_PAYLOAD + 1)),
                lambda: c.put("x", tier="L9"),
                lambda: c.get("nothex"),
            ):
                with pytest.raises(ClientError) as err:
                    call()
                codes.append(err.value.code)
            return codes

        assert await in_thread(path, client_side) == ["too_large", "unknown_tier", "bad_request"]
        conn = await RawConn.open(path)
        big = base64.b64encode(b"x" * (MAX_PAYLOAD + 1)).decode()
        reply = await conn.call({"id": 1, "op": "put", "value_b64": big})
        assert reply["error"]["code"] == "too_large" and reply["id"] == 1
        reply = await conn.call({"id": 2, "op": "put", "tier": "archive", "value": "x"})
        assert reply["error"]["code"] == "unknown_tier"
        reply = await conn.call({"id": 3, "op": "merge", "fields": [1, 2]})
        assert reply["error"]["code"] == "bad_request"
        reply = await conn.call({"id": 4, "op": "put", "value": "a", "value_b64": "YQ=="})
        assert reply["error"]["code"] == "bad_request"
        reply = await conn.call({"id": 5, "op": "put", "value_b64": "!!!"})
        assert reply["error"]["code"] == "bad_request"
        reply = await conn.call({"id": 6, "op": "list", "limit": 0})
        assert reply["error"]["code"] == "bad_request"
        reply = await conn.call({"id": 7, "op": "put", "value": "ok", "key": "fine"})
        assert reply["ok"] is True  # the connection is still usable
        await conn.aclose()
        after = await _snapshot(daemon)
        assert after[1][0] == before[1][0] + 1  # only the good put landed


async def test_bad_json_line_gets_an_error_and_the_connection_goes_on(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_daemon, path, _server):
        conn = await RawConn.open(path)
        for garbage in (b"{not json\n", b"[1,2]\n", b'{"op": 5}\n', b'{"id": [1], "op": "get"}\n'):
            await conn.send(garbage)
            reply = await conn.recv()
            assert reply is not None and reply["ok"] is False
            assert reply["error"]["code"] == "bad_request"
        await conn.send(b"\n\n")  # blank lines are ignored
        reply = await conn.call({"id": "s", "op": "status"})
        assert reply["ok"] is True and reply["id"] == "s"
        await conn.aclose()


async def test_oversized_line_closes_only_that_connection(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        before = await _snapshot(daemon)
        conn = await RawConn.open(path)
        with contextlib.suppress(trio.BrokenResourceError):  # it may hang up on us first
            await conn.send(b'{"op": "put", "value": "' + b"a" * (3 << 20))
        reply = await conn.recv()
        assert reply is not None and reply["error"]["code"] == "too_large"
        with contextlib.suppress(trio.BrokenResourceError):  # reset: our data went unread
            assert await conn.recv() is None
        await conn.aclose()
        other = await RawConn.open(path)
        assert (await other.call({"id": 1, "op": "status"}))["ok"] is True
        await other.aclose()
        assert await _snapshot(daemon) == before


async def test_flood_of_bad_requests(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, server):
        before = await _snapshot(daemon)
        conn = await RawConn.open(path)
        garbage = [b"\x00\xff\xfe garbage\n", b"{}\n", b'{"op": "drop_all"}\n', b"1e999999\n"]
        await conn.send(b"".join(garbage * 100))
        replies = []
        while (reply := await conn.recv()) is not None:
            replies.append(reply)
        # 256 errors, then a closing error: a flooding client is disconnected.
        assert len(replies) == 257
        assert all(r["ok"] is False for r in replies)
        assert "in a row" in replies[-1]["error"]["message"]
        await conn.aclose()

        async def flood_one(i: int) -> None:
            c = await RawConn.open(path)
            for _ in range(20):
                reply = await c.call({"id": i, "op": "put", "tier": i, "value": None})
                assert reply["ok"] is False
            await c.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(flood_one, i)
        assert await _snapshot(daemon) == before
        assert server.statistics().errors == 256 + 20 * 20
        good = await RawConn.open(path)
        assert (await good.call({"id": 1, "op": "put", "value": "still here"}))["ok"] is True
        await good.aclose()


async def test_too_many_clients_are_refused(tmp_path: Path) -> None:
    async with serving(tmp_path, max_clients=2) as (_daemon, path, server):
        held = [await RawConn.open(path) for _ in range(2)]
        for c in held:
            assert (await c.call({"id": 1, "op": "status"}))["ok"] is True
        extra = await RawConn.open(path)
        reply = await extra.recv()
        assert reply is not None and reply["error"]["code"] == "unavailable"
        assert await extra.recv() is None
        await extra.aclose()
        assert server.statistics().refused == 1
        for c in held:
            await c.aclose()
        await wait_until(lambda: server.statistics().clients == 0)
        again = await RawConn.open(path)
        assert (await again.call({"id": 1, "op": "status"}))["ok"] is True
        await again.aclose()


# -- watch ----------------------------------------------------------------------------------


async def test_watch_receives_local_and_replicated_changes(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        events: list[dict[str, Any]] = []

        def watcher() -> None:
            with Client(path) as c:
                for event in c.watch(tier="working", timeout=10):
                    events.append(event)
                    if len(events) == 3:
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, watcher)
            await wait_until(lambda: daemon.feed.statistics().subscribers >= 1)
            await in_thread(path, lambda c: c.put('{"a": 1}', tier="working", key="k"))
            await in_thread(path, lambda c: c.put("skip", tier="semantic"))  # other tier
            await in_thread(path, lambda c: c.merge({"x": 1}, tier="working", key="k"))
            daemon.feed.publish(
                {
                    "tier": Tier.WORKING,
                    "item_id": b"p" * 16,
                    "op": Op.UPDATE,
                    "origin": 7,
                    "timestamp_ns": 123,
                    "source": node_id_text(PEER_ID),
                }
            )
        assert [e["op"] for e in events] == ["insert", "merge", "update"]
        assert all(e["event"] == "change" and e["tier"] == "working" for e in events)
        assert events[0]["item_id"] == key_item_id("k").hex()
        assert events[0]["source"] == "local"
        assert events[2] == {
            "event": "change",
            "tier": "working",
            "item_id": (b"p" * 16).hex(),
            "op": "update",
            "origin": f"{7:016x}",
            "timestamp_ns": 123,
            "source": node_id_text(PEER_ID),
        }
        await wait_until(lambda: daemon.feed.statistics().subscribers == 0)


async def test_slow_watcher_is_dropped_with_a_final_error(tmp_path: Path) -> None:
    async with serving(tmp_path, feed_buffer=4) as (daemon, path, server):
        conn = await RawConn.open(path)
        ack = await conn.call({"id": 9, "op": "watch"})
        assert ack == {"id": 9, "ok": True, "result": {"watching": None}}
        await wait_until(lambda: daemon.feed.statistics().subscribers >= 1)
        # The node publishes faster than this watcher reads: publish never blocks.
        for i in range(1000):
            daemon.feed.publish({"tier": 1, "item_id": bytes(16), "op": 1, "origin": i})
        stats = daemon.feed.statistics()
        assert stats.dropped == 1 and stats.delivered <= 5  # buffer + one taken by a waiter
        lines = []
        while (line := await conn.recv()) is not None:
            lines.append(line)
        assert 0 <= len(lines) - 1 <= 5
        assert lines[-1]["ok"] is False and lines[-1]["error"]["code"] == "unavailable"
        assert "dropped" in lines[-1]["error"]["message"]
        await conn.aclose()
        await wait_until(lambda: server.statistics().watchers == 0)
        assert daemon.feed.statistics().subscribers == 0


def test_change_feed_filters_by_tier_and_counts() -> None:
    feed = ChangeFeed(buffer=2)
    drops: list[str] = []
    with (
        feed.subscribe(Tier.SEMANTIC) as semantic,
        feed.subscribe(None, on_drop=lambda: drops.append("all")) as everything,
    ):
        feed.publish({"tier": 2, "op": "INSERT"})
        feed.publish({"tier": Tier.WORKING, "op": 3})
        feed.publish({"tier": "semantic", "op": Op.MERGE})
        assert drops == ["all"]
        assert [semantic.receive_nowait()["op"] for _ in range(2)] == ["insert", "merge"]
        assert [everything.receive_nowait()["tier"] for _ in range(2)] == ["semantic", "working"]
        with pytest.raises(trio.EndOfChannel):
            everything.receive_nowait()
    stats = feed.statistics()
    assert (stats.subscribers, stats.published, stats.dropped) == (0, 3, 1)


# -- the socket file ------------------------------------------------------------------------


async def test_socket_mode_stale_file_live_daemon_and_cleanup(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(ControlSocketError, match="already serving"):
            await ControlServer(daemon, path).serve()
        assert path.exists()
    assert not path.exists()  # removed on exit


async def test_stale_socket_file_is_replaced_but_a_regular_file_is_not(tmp_path: Path) -> None:
    sockdir = short_socket_dir()
    try:
        stale = sockdir / "c.sock"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(stale))
        dead.close()  # a crashed daemon leaves the file behind
        async with serving(tmp_path) as (daemon, _path, _server):
            async with trio.open_nursery() as nursery:
                await nursery.start(ControlServer(daemon, stale).serve)
                reply = await in_thread(stale, lambda c: c.status())
                assert reply["node_id"] == node_id_text(daemon.node_id)
                nursery.cancel_scope.cancel()
            assert not stale.exists()
            stale.write_text("not a socket")
            with pytest.raises(ControlSocketError, match="not a socket"):
                await ControlServer(daemon, stale).serve()
        assert stale.read_text() == "not a socket"
    finally:
        for p in sockdir.iterdir():
            p.unlink()
        sockdir.rmdir()


def test_daemon_not_running() -> None:
    sockdir = short_socket_dir()
    try:
        path = sockdir / "c.sock"
        with pytest.raises(DaemonNotRunning) as err, Client(path) as c:
            c.status()
        assert str(err.value) == f"daemon not running: no control socket at {path}"
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()
        with pytest.raises(DaemonNotRunning), Client(path) as c:
            c.status()  # a stale file: connection refused
    finally:
        for p in sockdir.iterdir():
            p.unlink()
        sockdir.rmdir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores socket permissions (chmod 000)")
async def test_permission_denied(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_daemon, path, _server):
        os.chmod(path, 0)

        def attempt() -> ClientError:
            with pytest.raises(PermissionDenied) as err, Client(path) as c:
                c.status()
            return err.value

        error = await trio.to_thread.run_sync(attempt)
        assert str(error).startswith(f"permission denied on the control socket {path}")


async def test_check_and_the_repair_counters_in_status(tmp_path: Path) -> None:
    async with serving(tmp_path) as (daemon, path, _server):
        await daemon.engine.write(Tier.SEMANTIC, b"k" * 16, Op.INSERT, b"fact")

        def scenario(c: Client) -> dict[str, Any]:
            return {"check": c.check(), "status": c.status()}

        out = await in_thread(path, scenario)
        check = out["check"]
        assert check["agree"] and check["unreachable"] == []
        here = node_id_text(daemon.node_id)
        assert check["tiers"]["semantic"]["nodes"] == {
            here: {
                "digest": daemon.engine.engine.digest(Tier.SEMANTIC).hex(),
                "seq": 1,
            }
        }
        repair = out["status"]["repair"]
        assert repair["repairs"] == repair["cursor_rewinds"] == repair["running"] == 0
        assert repair["last_verify"] is None  # the fake daemon runs no self-check
