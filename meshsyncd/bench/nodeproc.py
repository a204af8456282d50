"""Real meshsyncd nodes as child processes, for ``meshsyncd demo`` and the mesh benches.

Why real processes: the demo and the benches show what a user gets, so every node is made
the way a user makes one (``meshsyncd init``, ``peers add``), runs as its own ``meshsyncd
run`` process with real TLS and a real SQLite file, and is driven only through the control
client. Errors are :class:`NodeError`, a ``click.ClickException``, so a command that uses
this module fails with one line naming the node and its log file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError

__all__ = ["Node", "NodeError", "free_port", "run_cli"]


class NodeError(click.ClickException):
    """A node could not be made, started or reached."""


def _exe() -> list[str]:
    # The running interpreter, not whatever ``meshsyncd`` is first on PATH.
    return [sys.executable, "-c", "from meshsyncd.commands.cli import main; main()"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (good enough for a local mesh)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str) -> str:
    """Run one ``meshsyncd`` command in a child process and return its stdout.

    Raises:
        NodeError: the command exited non-zero (its stderr is in the message).
    """
    proc = subprocess.run([*_exe(), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise NodeError(f"meshsyncd {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


class Node:
    """One node directory ``root/name`` made by ``meshsyncd init``; a daemon while started.

    ``root`` must be short (a ``/tmp`` directory): the control socket lives in the node
    directory and Unix socket paths are limited to about 100 bytes.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.port = free_port()
        info = json.loads(
            run_cli(
                "init", "--dir", str(root / name), "--listen", f"127.0.0.1:{self.port}", "--json"
            )
        )
        self.node_id: str = info["node_id"]
        self.config = Path(info["config"])
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.config.parent / "control.sock"

    @property
    def store_path(self) -> Path:
        from ..config import load_config  # the config decides (STATE_DIRECTORY may move it)

        return load_config(self.config).store_path

    def add_peer(self, other: Node) -> None:
        """``meshsyncd peers add`` the other node to this node's config."""
        run_cli(
            "peers", "add", other.node_id, f"127.0.0.1:{other.port}", "--config", str(self.config)
        )

    def start(self) -> None:
        """Spawn ``meshsyncd run`` (JSON logs into ``self.log``); see :meth:`wait_ready`."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*_exe(), "run", "--config", str(self.config), "--log-format", "json"],
                stdout=log,
                stderr=log,
            )

    def wait_ready(self, timeout: float = 20) -> None:
        """Wait until the control socket answers ``status``.

        Raises:
            NodeError: the process exited, or did not answer within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise NodeError(f"node {self.name} exited; see {self.log}")
            try:
                with Client(self.socket, timeout=2) as c:
                    c.status()
                return
            except (ClientError, OSError):
                time.sleep(0.05)
        raise NodeError(f"node {self.name} did not start in {timeout:.0f}s")

    def client(self, timeout: float = 30) -> Client:
        return Client(self.socket, timeout=timeout)

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            return c.status()

    def peers(self) -> list[dict[str, Any]]:
        with self.client() as c:
            return c.peers()

    def logs(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines so far (lines that are not JSON are skipped)."""
        out = []
        try:
            text = self.log.read_text()
        except OSError:
            return []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (graceful: BYE to peers, store closed), then SIGKILL after ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def preload(
    store_path: Path,
    node_id: str,
    count: int,
    *,
    tier: int = 1,
    payload: Callable[[int], bytes] | None = None,
    item_id: Callable[[int], bytes] | None = None,
    flags: int = 0,
) -> int:
    """Write ``count`` items into a *stopped* node's store as its own local writes.

    Why: benchmarks and fault tests need 100,000-item stores in seconds, and a durable
    control-socket put per item would take minutes. The items are real local writes
    (HLC-stamped, with the node's origin, 1000 per transaction), so they replicate exactly
    like written ones. ``payload(n)`` and ``item_id(n)`` choose the n-th item's bytes
    (default: ~200 bytes of JSON and a random id); ``flags`` are every item's flags (NAMED:
    the payloads start with name blocks). The store is left as the daemon's maintenance
    loop leaves it after a burst: no fold step due. Returns the raw item bytes written.

    Raises:
        sqlite3.Error: the store cannot be opened (is the daemon still running?).
    """
    from protocol import Item, Op, Tier

    from ..engine import Engine
    from ..identity import parse_node_id
    from ..store import Store

    make = payload or (lambda n: json.dumps({"n": n, "text": "bulk " * 36}).encode())
    new_id = item_id or (lambda _n: os.urandom(16))
    raw = 0
    store = Store.open(store_path)
    try:
        engine = Engine(store, node_id=parse_node_id(node_id))
        for start in range(0, count, 1000):
            items = [
                Item(
                    item_id=new_id(n),
                    timestamp_ns=engine.clock.now(),
                    origin=engine.origin,
                    tier=Tier(tier),
                    op=Op.INSERT,
                    flags=flags,
                    payload=make(n),
                )
                for n in range(start, min(start + 1000, count))
            ]
            raw += sum(item.wire_size for item in items)
            store.apply(Tier(tier), items, local=True, clock_hwm=engine.clock.last)
        # The fold steps that are due (ids, names, history), as the daemon's maintenance
        # loop runs them between writes: not left for a benchmark to pay on its clock.
        while store.maintenance_step():
            pass
    finally:
        store.close()
    return raw
