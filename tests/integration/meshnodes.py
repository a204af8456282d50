"""Real meshsyncd nodes for integration tests: separate processes, real TLS, real stores.

Each node is made with ``meshsyncd init`` and ``peers add`` (the CLI a user runs), started
with ``meshsyncd run`` as a child process, and driven through the control client.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshsyncd.client import Client, ClientError

EXE = str(Path(sys.executable).with_name("meshsyncd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"meshsyncd {' '.join(args)} failed: {proc.stderr}")
    return proc


class Node:
    """One node directory plus, while started, its daemon process."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        # AF_UNIX paths are short: keep the node directory under a short temp dir.
        self.dir = Path(tempfile.mkdtemp(prefix=f"ms{name}-", dir="/tmp"))
        self.port = free_port()
        out = cli(
            "init", "--dir", str(self.dir / "n"), "--listen", f"127.0.0.1:{self.port}", "--json"
        )
        info = json.loads(out.stdout)
        self.node_id: str = info["node_id"]
        self.config = Path(info["config"])
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = os.environ | {"MESHSYNCD_CONFIG": str(self.config)}

    @property
    def socket(self) -> Path:
        return self.config.parent / "control.sock"

    def add_peer(self, other: Node, *extra: str) -> None:
        cli(
            "peers",
            "add",
            other.node_id,
            f"127.0.0.1:{other.port}",
            "--config",
            str(self.config),
            *extra,
        )

    def set_sync_interval(self, text: str) -> None:
        body = self.config.read_text()
        new = re.sub(r"(?m)^sync_interval = .*$", f'sync_interval = "{text}"', body)
        assert new != body, "no sync_interval line to change"
        self.config.write_text(new)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [EXE, "run", "--config", str(self.config), "--log-format", "json"],
            stdout=log,
            stderr=log,
            env=self.env,
        )
        log.close()
        wait_for(lambda: self._answers(), 20, f"node {self.name} control socket")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"node {self.name} exited: {self.log_path.read_text()[-2000:]}")
        try:
            with Client(self.socket, timeout=2) as c:
                c.status()
            return True
        except (ClientError, OSError):
            return False

    def client(self) -> Client:
        return Client(self.socket, timeout=30)

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            return c.status()

    def digests(self) -> dict[str, str]:
        return {t: v["digest"] for t, v in self.status()["tiers"].items()}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"raw": raw})
        return lines


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mesh(root: Path, names: list[str]) -> list[Node]:
    nodes = [Node(root, n) for n in names]
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.add_peer(b)
    return nodes


def graph(root: Path, names: list[str], edges: list[tuple[str, str]]) -> dict[str, Node]:
    """Nodes linked only along ``edges`` (both ends list each other): a chain, ring, star..."""
    nodes = {n: Node(root, n) for n in names}
    for a, b in edges:
        nodes[a].add_peer(nodes[b])
        nodes[b].add_peer(nodes[a])
    return nodes


def chain(names: list[str]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(names))
