"""Helpers for the service tests: a real NOTIFY_SOCKET, real daemons, the shipped unit.

The nodes come from ``tests/integration/meshnodes.py`` (``meshsyncd init`` + ``run`` as child
processes); this module adds what systemd would give them: a datagram socket collecting
sd_notify messages, and the environment variables pointing at it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from meshnodes import Node, cli, free_port, mesh, wait_for

from meshsyncd.bench import nodeproc

__all__ = [
    "UNIT",
    "Node",
    "NotifySocket",
    "cli",
    "free_port",
    "mesh",
    "preload",
    "stop_timeout",
    "wait_for",
]

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "meshsyncd.service"


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's notification socket.

    ``abstract=True`` binds ``@name`` in the abstract namespace instead of a path.
    """

    def __init__(self, *, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"meshsyncd-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="msn-", dir="/tmp")
            path = os.path.join(self._dir, "notify")
            self.sock.bind(path)
            self.env_value = path
        self.messages: list[dict[str, str]] = []

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        out = {"NOTIFY_SOCKET": self.env_value}
        if watchdog_usec is not None:
            out["WATCHDOG_USEC"] = str(watchdog_usec)
        return out

    def drain(self, timeout: float = 0.05) -> list[dict[str, str]]:
        """Receive everything that arrives within ``timeout``; returns all messages so far."""
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def wait(self, key: str, *, count: int = 1, timeout: float = 20) -> list[dict[str, str]]:
        """Wait until ``count`` messages carrying ``key`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(key in m for m in self.drain()) >= count:
                return self.messages
        raise AssertionError(f"no {count}x {key} within {timeout}s; got {self.messages}")

    def events(self) -> list[str]:
        """The lifecycle messages in order (READY, RELOADING, STOPPING), pings left out."""
        names = ("READY", "RELOADING", "STOPPING")
        return [n for m in self.messages for n in names if m.get(n) == "1"]

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def stop_timeout() -> float:
    """``TimeoutStopSec=`` of the shipped unit, in seconds."""
    found = re.search(r"(?m)^TimeoutStopSec=(\d+)s?$", UNIT.read_text())
    assert found, "the unit sets TimeoutStopSec= in seconds"
    return float(found.group(1))


def preload(node: Node, count: int) -> None:
    """Write ``count`` EPISODIC items straight into a stopped node's store, 1000 per txn."""
    nodeproc.preload(node.config.parent / "store.db", node.node_id, count)
