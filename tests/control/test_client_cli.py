"""The data/operator CLI through click's CliRunner against a live control server.

The server (fake daemon, real store, real socket) runs in its own thread and trio loop,
because CliRunner blocks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from controlkit import PEER_ID, BackgroundNode, short_socket_dir

from meshsyncd.commands.cli import main
from meshsyncd.commands.operator import parse_duration
from meshsyncd.control.proto import key_item_id, node_id_text
from protocol import MAX_PAYLOAD

SCRIPT = str(Path(sys.executable).with_name("meshsyncd"))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BackgroundNode]:
    with BackgroundNode(tmp_path) as served:
        yield served


def cli(node: BackgroundNode | Path, *args: str, input: bytes | None = None) -> Result:
    path = node.path if isinstance(node, BackgroundNode) else node
    runner = CliRunner()
    return runner.invoke(main, [*args, "--socket", str(path)], input=input)


def ok_json(node: BackgroundNode, *args: str) -> Any:
    result = cli(node, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_put_get_merge_delete_list_as_json(node: BackgroundNode) -> None:
    put = ok_json(node, "put", "hello world", "--key", "greeting", "--tier", "semantic")
    assert put["item_id"] == key_item_id("greeting").hex() and put["op"] == "insert"
    got = ok_json(node, "get", "--key", "greeting", "--tier", "L3")
    assert got["value"] == "hello world"
    # A named item is written by its name; by its id alone it is refused, naming it.
    by_id = cli(node, "put", "hi", "--id", put["item_id"], "--tier", "2")
    assert by_id.exit_code == 2 and "is named (namespace '', key 'greeting')" in by_id.output
    again = ok_json(node, "put", "hi", "--key", "greeting", "--tier", "2", "--priority", "urgent")
    assert again["op"] == "update" and again["priority"] == "urgent"
    merged = ok_json(node, "merge", '{"status": "done"}', "--key", "task")
    assert merged["op"] == "merge"
    assert json.loads(ok_json(node, "get", "--key", "task")["value"]) == {"status": "done"}
    listed = ok_json(node, "list", "--tier", "semantic")
    assert [i["value"] for i in listed["items"]] == ["hi"]
    refused = cli(node, "delete", put["item_id"], "--tier", "semantic")
    assert refused.exit_code == 2 and put["item_id"] in refused.output
    deleted = ok_json(node, "delete", "--key", "greeting", "--tier", "semantic")
    assert deleted["op"] == "delete"
    missing = cli(node, "get", put["item_id"], "--tier", "semantic")
    assert missing.exit_code == 1
    assert missing.output.strip().startswith("meshsyncd: no item")


def test_tables_and_raw_output(node: BackgroundNode, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01binary\xff")
    result = cli(node, "put", "--file", str(blob), "--key", "bin")
    assert result.exit_code == 0 and "item_id" in result.output and "insert" in result.output
    raw = cli(node, "get", "--key", "bin", "--raw")
    assert raw.exit_code == 0 and raw.stdout_bytes == b"\x00\x01binary\xff"
    table = cli(node, "get", "--key", "bin")
    assert "binary, 9 bytes" in table.output
    stdin = cli(node, "put", "--file", "-", "--key", "piped", input=b"from stdin")
    assert stdin.exit_code == 0
    assert cli(node, "get", "--key", "piped", "--raw").output == "from stdin"
    listing = cli(node, "list")
    assert listing.exit_code == 0
    assert listing.output.splitlines()[0].split() == [
        "item_id",
        "seq",
        "op",
        "origin",
        "size",
        "value",
    ]
    assert "from stdin" in listing.output
    # the origin is the writer's short node id, the same characters `id` starts with
    assert node_id_text(bytes(range(32)))[:12] in listing.output
    wide = cli(node, "list", "-o", "wide")
    assert wide.output.splitlines()[0].split()[3] == "timestamp"
    status = cli(node, "status")
    assert status.exit_code == 0
    assert node_id_text(bytes(range(32))) in status.output
    assert "episodic" in status.output and "tombstones" in status.output


def test_status_vectors_conflicts_peers_json(node: BackgroundNode) -> None:
    status = ok_json(node, "status")
    assert set(status["tiers"]) == {"working", "episodic", "semantic"}
    assert ok_json(node, "vectors")["peers"][0]["peer"] == node_id_text(PEER_ID)
    assert ok_json(node, "conflicts", "--tier", "working") == []
    result = CliRunner().invoke(main, ["peers", "--json"], env={"MESHSYNCD_SOCKET": str(node.path)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["state"] == "connected"
    table = CliRunner().invoke(main, ["peers"], env={"MESHSYNCD_SOCKET": str(node.path)})
    assert table.exit_code == 0, table.output
    header, row = table.output.splitlines()
    assert header.split()[:3] == ["peer", "address", "state"]
    assert row.split()[0] == node_id_text(PEER_ID)[:12]
    for cell in ("connected", "s ago"):
        assert cell in row
    wide = CliRunner().invoke(main, ["peers", "-o", "wide", "--socket", str(node.path)])
    assert wide.exit_code == 0, wide.output
    header, row = wide.output.splitlines()
    assert row.split()[0] == node_id_text(PEER_ID)
    for cell in ("connected", "0.4 ms", "-0.2 ms", "episodic:9/2", "3/5", "s ago"):
        assert cell in row


def test_sync_now(node: BackgroundNode) -> None:
    assert node.daemon is not None
    done = ok_json(node, "sync", "--now", "--timeout", "1500ms")
    assert done["synced"] == [node_id_text(PEER_ID)] and done["failed"] == []
    assert node.daemon.sync_calls[-1] == (None, 1.5)
    node.daemon.unreachable.add(PEER_ID)
    failed = cli(node, "sync", "--now", "--peer", node_id_text(PEER_ID))
    assert failed.exit_code == 1
    assert "FAILED" in failed.output
    assert f"sync did not complete with: {node_id_text(PEER_ID)}" in failed.output
    assert node.daemon.sync_calls[-1] == ([PEER_ID], 2.0)
    assert cli(node, "sync").exit_code == 2
    assert cli(node, "sync", "--now", "--timeout", "soon").exit_code == 2
    assert cli(node, "sync", "--now", "--peer", "nope").exit_code == 2


def test_watch_prints_events(node: BackgroundNode) -> None:
    # A real process: CliRunner swaps sys.stdout globally, so two runners cannot overlap.
    assert node.daemon is not None
    daemon = node.daemon
    env = {**os.environ, "MESHSYNCD_SOCKET": str(node.path)}
    args = [SCRIPT, "watch", "--tier", "working", "--count", "2", "--json"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        for _ in range(2000):
            if node.call(lambda: daemon.feed.statistics().subscribers):
                break
            threading.Event().wait(0.005)
        assert cli(node, "put", "a", "--tier", "working").exit_code == 0
        assert cli(node, "put", "b", "--tier", "episodic").exit_code == 0
        assert cli(node, "delete", "--key", "nothing", "--tier", "working").exit_code == 1
        assert cli(node, "merge", '{"x": 1}', "--tier", "working").exit_code == 0
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["op"] for e in events] == ["insert", "merge"]
    assert all(e["tier"] == "working" and e["source"] == "local" for e in events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "xyz"], "bad item id"),
        (["put", "v", "--tier", "archive"], "unknown tier"),
        (["put", "v", "--priority", "asap"], "unknown priority"),
        (["put", "v", "--id", "00" * 16, "--key", "k"], "not both"),
        (["put"], "put needs a value: give it as an argument or with --file"),
        (["put", "--key", "k"], "put needs a value: give it as an argument or with --file"),
        (["merge", "[1]"], "JSON object"),
        (["merge", "{nope"], "bad JSON"),
        (["delete"], "give an item id"),
        (["list", "--after", "zz"], "bad item id"),
        (["get", "00" * 16, "--tier", "9"], "unknown tier"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(
    node: BackgroundNode, args: list[str], message: str
) -> None:
    result = cli(node, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshsyncd: ") and message in lines[0]


def test_payload_too_large_is_refused_before_sending(node: BackgroundNode, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_PAYLOAD + 1))
    result = cli(node, "put", "--file", str(big))
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"meshsyncd: payload too large: more than {MAX_PAYLOAD} bytes (1 MiB)"
    )
    assert ok_json(node, "status")["tiers"]["episodic"]["items"] == 0


def test_daemon_not_running_and_config_lookup(tmp_path: Path) -> None:
    sockdir = short_socket_dir()
    try:
        path = sockdir / "c.sock"
        for args in (["status"], ["put", "x"], ["watch"], ["sync", "--now"]):
            result = cli(path, *args)
            assert result.exit_code == 3
            assert result.output == f"meshsyncd: daemon not running: no control socket at {path}\n"
        bad = CliRunner().invoke(
            main,
            ["status", "--config", str(tmp_path / "missing.toml")],
            env={"MESHSYNCD_SOCKET": ""},
        )
        assert bad.exit_code == 2 and bad.output.startswith("meshsyncd: cannot load the config")
    finally:
        sockdir.rmdir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores socket permissions (chmod 000)")
def test_permission_denied_message(node: BackgroundNode) -> None:
    os.chmod(node.path, 0)
    result = cli(node, "status")
    assert result.exit_code == 3
    assert result.output.startswith(
        f"meshsyncd: permission denied on the control socket {node.path}"
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the CLI as another user",
)
def _nobody_cannot_run(nobody: list[str]) -> str | None:
    """Why ``nobody`` cannot run this checkout's CLI, or None if it can.

    The CLI lives in the checkout's venv, so ``nobody`` must traverse every directory above
    it: not so for a clone under a 0700 temporary directory. Nothing here may loosen the
    modes of directories the test did not make, so the test is skipped there, saying why.
    """
    probe = subprocess.run(
        [*nobody, SCRIPT, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode == 0:
        return None
    blocked = next(
        (p for p in Path(SCRIPT).parents if p.exists() and not (p.stat().st_mode & 0o001)),
        None,
    )
    where = f" ({blocked} is not searchable by others)" if blocked else ""
    return f"user nobody cannot run {SCRIPT}{where}: {probe.stderr.strip()[:200]}"


def test_permission_denied_for_another_user(node: BackgroundNode) -> None:
    # Root is never denied, so run the real CLI as nobody against the 0660 root socket.
    # The socket's directory is the test's own (under /tmp); open it to others.
    os.chmod(node.path.parent, 0o755)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    reason = _nobody_cannot_run(nobody)
    if reason is not None:
        pytest.skip(reason)
    result = subprocess.run(
        [*nobody, SCRIPT, "status", "--socket", str(node.path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(
        f"meshsyncd: permission denied on the control socket {node.path}: "
    )


def test_every_command_has_help_with_examples() -> None:
    runner = CliRunner()
    for name in (
        "status",
        "put",
        "get",
        "delete",
        "merge",
        "list",
        "vectors",
        "conflicts",
        "import",
        "export",
    ):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output, name
        assert "--json" in result.output and "--socket" in result.output
    for name in ("watch", "sync"):
        assert "Examples:" in runner.invoke(main, [name, "--help"]).output


def test_parse_duration() -> None:
    assert parse_duration("2") == 2.0
    assert parse_duration("2s") == 2.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1m") == 60.0


def test_real_process_against_live_server(node: BackgroundNode) -> None:
    env = {**os.environ, "MESHSYNCD_SOCKET": str(node.path)}
    put = subprocess.run(
        [SCRIPT, "put", "from a process", "--key", "p", "--json"],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert put.returncode == 0, put.stderr
    got = subprocess.run(
        [SCRIPT, "get", "--key", "p", "--raw"],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert got.returncode == 0 and got.stdout == b"from a process"
