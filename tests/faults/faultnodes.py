"""Real meshsyncd daemons for the fault suite: made with the CLI, run as child processes.

Every node is made the way an operator makes one (``meshsyncd init``, ``peers add``) and runs
as its own ``meshsyncd run`` process with real TLS and a real SQLite store; tests drive it
through the control client and read its JSON log. Unlike ``tests/integration/meshnodes.py``
a node here can be given any address for a peer (a fault proxy), killed with SIGKILL, run
under a command prefix (``faketime``) and measured (``VmRSS``).

Cleanup: :class:`Fleet` (the ``fleet`` fixture in ``conftest.py``) owns every node a test
makes and stops them all at teardown (SIGTERM, then SIGKILL), whatever the test did.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import protocol as P
from meshsyncd.bench import nodeproc
from meshsyncd.client import Client, ClientError
from meshsyncd.identity import parse_node_id
from meshsyncd.store.rows import to_db

EXE = str(Path(sys.executable).with_name("meshsyncd"))
TIERS = ("working", "episodic", "semantic")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> str:
    """Run one ``meshsyncd`` command; its stdout.

    Raises:
        AssertionError: the command failed (its stderr is in the message).
    """
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"meshsyncd {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll ``cond`` until it holds.

    Raises:
        AssertionError: it did not hold within ``timeout`` seconds (naming ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class FaultNode:
    """One node directory (under a short ``/tmp`` path: AF_UNIX paths are short) and,
    while started, its daemon process."""

    def __init__(self, log_dir: Path, name: str) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"msf{name}-", dir="/tmp"))
        self.port = free_port()
        info = json.loads(
            cli(
                "init", "--dir", str(self.dir / "n"), "--listen", f"127.0.0.1:{self.port}", "--json"
            )
        )
        self.node_id: str = info["node_id"]
        self.config = Path(info["config"])
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration --------------------------------------------------------------------

    @property
    def short(self) -> str:
        """The ``peer`` value the daemon's log uses for this node."""
        return self.node_id[:12]

    @property
    def origin(self) -> int:
        return int.from_bytes(parse_node_id(self.node_id)[:8], "big")

    @property
    def socket(self) -> Path:
        return self.config.parent / "control.sock"

    @property
    def store_path(self) -> Path:
        return self.config.parent / "store.db"

    def add_peer(self, other: FaultNode, address: str | None = None, *extra: str) -> None:
        """List ``other`` in this node's config at ``address`` (default: its real port)."""
        where = address or f"127.0.0.1:{other.port}"
        cli("peers", "add", other.node_id, where, "--config", str(self.config), *extra)

    def set_option(self, key: str, value: str) -> None:
        """Change one top-level ``key = "..."`` line of the config."""
        body = self.config.read_text()
        new, found = re.subn(rf'(?m)^{key} = "[^"]*"', f'{key} = "{value}"', body)
        assert found == 1, f"no {key} line to change in {self.config}"
        self.config.write_text(new)

    # -- process --------------------------------------------------------------------------

    def start(self, env: dict[str, str] | None = None, wait: bool = True) -> None:
        """Spawn ``meshsyncd run`` (JSON log appended to ``log_path``) in a process group of
        its own, with ``env`` added to the environment; by default wait until the control
        socket answers."""
        assert self.proc is None, f"node {self.name} is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [EXE, "run", "--config", str(self.config), "--log-format", "json"],
                stdout=log,
                stderr=log,
                env=os.environ | (env or {}),
                start_new_session=True,
            )
        if wait:
            wait_for(self._answers, 30, f"node {self.name} to answer on its control socket")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"node {self.name} exited: {self.tail()}")
        try:
            with Client(self.socket, timeout=2) as c:
                c.status()
            return True
        except (ClientError, OSError):
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ProcessLookupError):  # anything it left in its group
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def kill9(self) -> None:
        """SIGKILL, as ``kill -9`` does: no BYE, no store close."""
        proc, self.proc = self.proc, None
        assert proc is not None and proc.poll() is None, f"node {self.name} is not running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=15)

    def rss_kib(self) -> int:
        """The daemon's resident set size (``VmRSS`` of /proc/PID/status), in KiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    # -- control client -------------------------------------------------------------------

    def client(self, timeout: float = 30) -> Client:
        return Client(self.socket, timeout=timeout)

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            return c.status()

    def digests(self) -> dict[str, str]:
        return {t: v["digest"] for t, v in self.status()["tiers"].items()}

    def items(self, tier: str) -> int:
        return int(self.status()["tiers"][tier]["items"])

    def peer_row(self, other: FaultNode) -> dict[str, Any] | None:
        with self.client() as c:
            return next((r for r in c.peers() if r["id"] == other.node_id), None)

    def connected_to(self, other: FaultNode) -> bool:
        row = self.peer_row(other)
        return row is not None and row["state"] == "connected"

    def vectors(self) -> dict[str, Any]:
        with self.client() as c:
            return c.vectors()

    def cursor_on(self, other: FaultNode, tier: str) -> int:
        """Our committed cursor on ``other``'s sequence for ``tier`` (0 if none yet)."""
        for row in self.vectors()["peers"]:
            if row["origin"] == f"{other.origin:016x}":
                return int(row["tiers"][tier]["cursor"])
        return 0

    # -- log ------------------------------------------------------------------------------

    def logs(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return out
        for raw in text.splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"raw": raw}
            out.append(event if isinstance(event, dict) else {"raw": raw})
        return out

    def log_events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.logs()
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


class Fleet:
    """Every node a test made; :meth:`close` stops them all and removes their directories."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.nodes: list[FaultNode] = []

    def node(self, name: str) -> FaultNode:
        n = FaultNode(self.log_dir, name)
        self.nodes.append(n)
        return n

    def mesh(self, names: Sequence[str], sync_interval: str = "2s") -> list[FaultNode]:
        """Nodes that all list each other at their real addresses."""
        nodes = [self.node(n) for n in names]
        for a in nodes:
            a.set_option("sync_interval", sync_interval)
            for b in nodes:
                if a is not b:
                    a.add_peer(b)
        return nodes

    def close(self) -> None:
        for n in self.nodes:
            try:
                n.stop(timeout=10)
            finally:
                shutil.rmtree(n.dir, ignore_errors=True)


def converged(nodes: Sequence[FaultNode]) -> bool:
    return len({tuple(sorted(n.digests().items())) for n in nodes}) == 1


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` on a stopped node's store, opened read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


def committed_cursors(path: Path, peer: FaultNode) -> dict[str, int]:
    """A stopped node's committed cursors on ``peer``'s sequences, read-only from its store."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT tier, applied FROM cursors WHERE peer = ?", (to_db(peer.origin),)
        ).fetchall()
    finally:
        conn.close()
    found = {P.Tier(t).name.lower(): int(applied) for t, applied in rows}
    return {t: found.get(t, 0) for t in TIERS}


def preload(
    node: FaultNode,
    count: int,
    *,
    tier: P.Tier = P.Tier.EPISODIC,
    payload: Callable[[int], bytes] | None = None,
) -> None:
    """Write ``count`` items of ``tier`` straight into a stopped node's store as its own
    local writes, 1000 per transaction (much faster than the control socket)."""
    nodeproc.preload(node.store_path, node.node_id, count, tier=tier, payload=payload)
