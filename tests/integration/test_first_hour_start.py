"""Issue 12, an operator's first hour: starting a daemon, on real processes and real files.

Every startup failure is one line on stderr naming the thing, exit status 2, and leaves
nothing behind; a second ``run`` on a running node directory touches nothing the running
daemon owns; a ``kill -9``-ed daemon's lock and socket are recovered by the next start.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshnodes import EXE, Node, cli, free_port, wait_for

from meshsyncd.client import Client


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def make(nodes: list[Node], tmp_path: Path, name: str) -> Node:
    node = Node(tmp_path, name)
    nodes.append(node)
    return node


def run_once(node: Node) -> subprocess.CompletedProcess[str]:
    """``meshsyncd run`` that is expected to fail at once (a failure here ends the test)."""
    return subprocess.run(
        [EXE, "run", "--config", str(node.config), "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_start_failure(proc: subprocess.CompletedProcess[str], line: str) -> None:
    """Exit 2; the message is on stderr exactly once, as one line; no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "ExceptionGroup" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("meshsyncd: ")]
    assert errors == [f"meshsyncd: {line}"], proc.stderr
    # logged once: the reason is not repeated as a log event next to the line
    assert sum(line.split(": ")[0] in x for x in proc.stderr.splitlines()) == 1


def set_key(config: Path, pattern: str, replacement: str) -> None:
    text = config.read_text()
    new = re.sub(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert new != text, pattern
    config.write_text(new)


def left_behind(node: Node) -> set[str]:
    """Files a failed start must not leave: pid file, socket."""
    return {p.name for p in node.config.parent.iterdir()} & {"meshsyncd.pid", "control.sock"}


def test_listen_port_taken_is_one_line_naming_the_address(
    nodes: list[Node], tmp_path: Path
) -> None:
    node = make(nodes, tmp_path, "a")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", node.port))
        squatter.listen()
        proc = run_once(node)
    assert_start_failure(
        proc, f"cannot listen on 127.0.0.1:{node.port} (peer listener): address already in use"
    )
    assert left_behind(node) == set()
    node.start()  # nothing is left that blocks the next start (lock, socket)
    assert node.status()["node_id"] == node.node_id


def test_metrics_port_taken_names_the_metrics_endpoint(nodes: list[Node], tmp_path: Path) -> None:
    node = make(nodes, tmp_path, "a")
    port = free_port()
    set_key(node.config, r'^listen = ""', f'listen = "127.0.0.1:{port}"')
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        proc = run_once(node)
    assert_start_failure(
        proc, f"cannot listen on 127.0.0.1:{port} (metrics endpoint): address already in use"
    )
    # the control socket had been bound before the metrics failed: it is gone again
    assert left_behind(node) == set()


def test_store_path_not_openable_names_path_and_os_error(nodes: list[Node], tmp_path: Path) -> None:
    node = make(nodes, tmp_path, "a")
    blocker = node.config.parent / "blocker"
    blocker.write_text("a file where the store's directory should be\n")
    set_key(node.config, r"^store = .*$", 'store = "blocker/store.db"')
    assert_start_failure(
        run_once(node), f"cannot open the store {blocker}/store.db: not a directory"
    )
    set_key(node.config, r"^store = .*$", 'store = "junk.db"')
    (node.config.parent / "junk.db").write_bytes(b"this is not SQLite" * 512)
    store = node.config.parent / "junk.db"
    assert_start_failure(run_once(node), f"cannot open the store {store}: file is not a database")
    assert left_behind(node) == set()


def test_store_directory_not_writable_for_the_daemon_user(
    nodes: list[Node], tmp_path: Path
) -> None:
    """As a user without write access (root writes everywhere): the OS error is named."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the daemon as another user")
    node = make(nodes, tmp_path, "a")
    node_dir = node.config.parent
    data = node_dir / "data"
    data.mkdir()
    set_key(node.config, r"^store = .*$", 'store = "data/store.db"')
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*nobody, EXE, "--version"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run {EXE} (a parent directory is not searchable)")
    for path in (node_dir.parent, node_dir, *node_dir.iterdir()):
        os.chown(path, 65534, 65534)
    data.chmod(0o555)
    proc = subprocess.run(
        [*nobody, EXE, "run", "--config", str(node.config), "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_start_failure(proc, f"cannot open the store {data}/store.db: permission denied")


def test_second_run_refuses_and_changes_nothing(nodes: list[Node], tmp_path: Path) -> None:
    a, b = make(nodes, tmp_path, "a"), make(nodes, tmp_path, "b")
    a.start()
    assert a.proc is not None
    node_dir = a.config.parent
    pid_file = node_dir / "meshsyncd.pid"
    before = (pid_file.read_text(), os.stat(a.socket).st_ino)
    assert before[0] == f"{a.proc.pid}\n"

    second = run_once(a)
    assert_start_failure(second, f"node {node_dir} is already running (pid {a.proc.pid})")

    # the running daemon's pid file and socket are untouched, and it still answers
    assert (pid_file.read_text(), os.stat(a.socket).st_ino) == before
    assert a.status()["node_id"] == a.node_id
    # `peers add` still finds and reloads it: the new peer is dialled without a manual HUP
    b.start()
    added = cli("peers", "add", b.node_id, f"127.0.0.1:{b.port}", "--config", str(a.config))
    assert f"sent SIGHUP to the daemon (pid {a.proc.pid})" in added.stdout
    with a.client() as c:
        assert any(r["id"] == b.node_id for r in c.peers())


def test_kill_9_leaves_nothing_that_blocks_the_next_start(
    nodes: list[Node], tmp_path: Path
) -> None:
    node = make(nodes, tmp_path, "a")
    node.start()
    with node.client() as c:
        c.put("survives", key="k", tier="semantic")
    node.stop(signal.SIGKILL)
    assert node.socket.exists() and (node.config.parent / "meshsyncd.lock").exists()
    node.start()  # stale lock file and stale socket: no manual step
    with node.client() as c:
        assert c.get(key="k", tier="semantic")["value"] == "survives"
    assert node.proc is not None
    assert (node.config.parent / "meshsyncd.pid").read_text() == f"{node.proc.pid}\n"


def test_control_socket_from_an_absolute_config_path_without_flags(tmp_path: Path) -> None:
    """Where a systemd service has its socket (/run/meshsyncd): said once, in the config."""
    root = Path(os.path.realpath(tmp_path))
    sockdir = Path("/tmp") / f"ms-run-{os.getpid()}"
    sockdir.mkdir()
    port = free_port()
    try:
        sock = sockdir / "control.sock"
        cli(
            "init", "--dir", str(root / "n"), "--listen", f"127.0.0.1:{port}",
            "--control-socket", str(sock),
        )  # fmt: skip
        config = root / "n" / "meshsyncd.toml"
        assert f'control_socket = "{sock}"' in config.read_text()
        proc = subprocess.Popen(
            [EXE, "run", "--config", str(config), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(sock.exists, 20, "the control socket in its own directory")
            env = {k: v for k, v in os.environ.items() if not k.startswith("MESHSYNCD_")}
            shown = subprocess.run(
                [EXE, "status", "--json"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env | {"MESHSYNCD_CONFIG": str(config)},
            )
            assert shown.returncode == 0, shown.stderr
            with Client(sock) as c:
                assert c.status()["node_id"] in shown.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    finally:
        for leftover in sockdir.iterdir():
            leftover.unlink()
        sockdir.rmdir()
