"""Test kit for the control socket: a fake daemon over a real store, served for real.

``FakeDaemon`` is a fake (it does what a daemon does, minus peers): a real SQLite store, a
real :class:`Engine` on its writer thread, a real :class:`ChangeFeed`. ``serving`` runs a
:class:`ControlServer` in the current trio loop; ``BackgroundNode`` runs one in a thread of
its own (``trio.run``) for code that blocks, such as click's CliRunner.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from meshsyncd.aengine import AsyncEngine
from meshsyncd.control.server import ChangeFeed, ControlServer
from meshsyncd.engine import Engine
from meshsyncd.mesh.repair import Repair
from meshsyncd.store import Store
from protocol import Item

NODE_ID = bytes(range(32))
PEER_ID = bytes(range(100, 132))


class FakeDaemon:
    """Implements ``DaemonView`` for one node with no live peers."""

    def __init__(self, engine: AsyncEngine, *, feed_buffer: int = 256) -> None:
        self.engine = engine
        self.node_id = NODE_ID
        self.started_at = time.time()
        self.feed = ChangeFeed(feed_buffer)
        self.pushed: list[Item] = []
        self.sync_calls: list[tuple[list[bytes] | None, float]] = []
        self.unreachable: set[bytes] = set()
        self.repair = Repair(verify_interval=3600.0, announce_every=30.0)

    async def check_mesh(self) -> dict[str, Any]:
        return await self.repair.check(self.engine, [], [], self.node_id)

    def peers_table(self) -> list[dict[str, Any]]:
        from meshsyncd.control.proto import node_id_text

        return [
            {
                "id": node_id_text(PEER_ID),
                "address": "127.0.0.1:7411",
                "state": "connected",
                "rtt_ms": 0.4,
                "last_seen": time.time(),
                "clock_offset_ms": -0.2,
                "items_in": 3,
                "items_out": 5,
                "cursors": {"working": 4, "episodic": 9, "semantic": 0},
                "lag": {"working": 0, "episodic": 2, "semantic": 0},
            }
        ]

    def on_local_write(self, item: Item) -> None:
        self.pushed.append(item)

    async def sync_now(
        self,
        peers: list[bytes] | None,
        timeout: float,  # noqa: ASYNC109
    ) -> dict[str, list[str]]:
        from meshsyncd.control.proto import node_id_text

        self.sync_calls.append((peers, timeout))
        wanted = [PEER_ID] if peers is None else peers
        return {
            "synced": [node_id_text(p) for p in wanted if p not in self.unreachable],
            "failed": [node_id_text(p) for p in wanted if p in self.unreachable],
        }


async def wait_until(predicate: Any) -> None:
    """Poll ``predicate`` (state another thread or task changes) until it holds."""
    with trio.fail_after(10):
        for _ in iter(int, 1):
            if predicate():
                return
            await trio.sleep(0.005)


def short_socket_dir() -> Path:
    """A fresh directory under /tmp: AF_UNIX paths are limited to 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="msc", dir="/tmp"))


@asynccontextmanager
async def serving(
    tmp_path: Path, *, feed_buffer: int = 256, **server_kw: Any
) -> AsyncIterator[tuple[FakeDaemon, Path, ControlServer]]:
    """A fake daemon over a fresh store and a ControlServer on a real socket."""
    store = Store.open(tmp_path / "node.db")
    sockdir = short_socket_dir()
    try:
        daemon = FakeDaemon(AsyncEngine(Engine(store, node_id=NODE_ID)), feed_buffer=feed_buffer)
        path = sockdir / "c.sock"
        server = ControlServer(daemon, path, **server_kw)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            yield daemon, path, server
            nursery.cancel_scope.cancel()
    finally:
        store.close()
        shutil.rmtree(sockdir, ignore_errors=True)


class RawConn:
    """A raw trio connection speaking newline-delimited JSON (for malformed input)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def open(cls, path: Path) -> RawConn:
        return cls(await trio.open_unix_socket(str(path)))

    async def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        await self.stream.send_all(data)

    async def recv(self) -> dict[str, Any] | None:
        """The next line as JSON; None at end of stream."""
        while b"\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buf += data
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        obj: dict[str, Any] = json.loads(line)
        return obj

    async def call(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.send(req)
        reply = await self.recv()
        assert reply is not None
        return reply

    async def aclose(self) -> None:
        await self.stream.aclose()


class BackgroundNode:
    """A served fake daemon in its own thread and trio loop (for blocking callers)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.path = short_socket_dir() / "c.sock"
        self.daemon: FakeDaemon | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        store = Store.open(self.tmp_path / "node.db")
        try:
            self.daemon = FakeDaemon(AsyncEngine(Engine(store, node_id=NODE_ID)))
            server = ControlServer(self.daemon, self.path)
            async with trio.open_nursery() as nursery:
                self._token = trio.lowlevel.current_trio_token()
                self._scope = nursery.cancel_scope
                await nursery.start(server.serve)
                self._ready.set()
        finally:
            store.close()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a sync function in the server's trio thread (e.g. feed.publish)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def __enter__(self) -> BackgroundNode:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._scope is not None and self._token is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)
        shutil.rmtree(self.path.parent, ignore_errors=True)
