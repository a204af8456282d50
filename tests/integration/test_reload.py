"""SIGHUP reload on real daemons: peers added, removed, and a broken config refused."""

from __future__ import annotations

import signal
from pathlib import Path

from meshnodes import Node, cli, wait_for


def _row(node: Node, other: Node) -> dict[str, object] | None:
    with node.client() as c:
        return next((r for r in c.peers() if r["id"] == other.node_id), None)


def test_peers_added_and_removed_at_runtime(tmp_path: Path) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    a.start()
    b.start()
    try:
        with a.client() as c:
            c.put("hello", tier="semantic", key="x")
        # `peers add` edits the config and sends SIGHUP to the running daemon
        out = cli("peers", "add", b.node_id, f"127.0.0.1:{b.port}", "--config", str(a.config))
        assert "reload" in (out.stdout + out.stderr).lower()
        cli("peers", "add", a.node_id, f"127.0.0.1:{a.port}", "--config", str(b.config))
        wait_for(lambda: a.digests() == b.digests(), 30, "a and b to sync after the reload")
        assert (row := _row(a, b)) is not None and row["state"] == "connected"
        # a broken config is refused; the old one stays in force and a keeps serving
        good = a.config.read_text()
        a.config.write_text(good + "\nnot valid toml [[[\n")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: any(e.get("event", "").startswith("reload refused") for e in a.logs()),
            10,
            "a to refuse the broken config",
        )
        assert _row(a, b) is not None
        a.config.write_text(good)
        # removing b disconnects it
        cli("peers", "remove", b.node_id, "--config", str(a.config))
        wait_for(lambda: _row(a, b) is None, 10, "b to leave a's peers table")
        with b.client() as c:
            wait_for(
                lambda: next(r for r in c.peers() if r["id"] == a.node_id)["state"] != "connected",
                15,
                "b to see the session closed",
            )
    finally:
        for n in (a, b):
            if n.proc is not None:
                n.stop()
