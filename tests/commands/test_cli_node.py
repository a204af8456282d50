"""``meshsyncd init``, ``id``, ``peers add/remove``: files on disk, one-line errors, SIGHUP."""

from __future__ import annotations

import importlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from meshsyncd.commands import node as node_commands
from meshsyncd.commands.cli import main
from meshsyncd.config import load_config
from meshsyncd.identity import load_identity, node_id_text
from meshsyncd.store import Store
from protocol import Tier

ENV = ("MESHSYNCD_CONFIG", "CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY")
OTHER = node_id_text(bytes(range(32)))

# A stand-in daemon: writes its pid file, records SIGHUP, exits once it got one. The extra
# "fake-meshsyncd" argument puts "meshsyncd" in its command line, as the real daemon has.
FAKE_DAEMON = """
import os, signal, sys, time
from pathlib import Path
node_dir = Path(sys.argv[1])
got = node_dir / "got-sighup"
signal.signal(signal.SIGHUP, lambda *_: got.write_text("reload"))
(node_dir / "pid.tmp").write_text(f"{os.getpid()}\\n")
os.replace(node_dir / "pid.tmp", node_dir / "meshsyncd.pid")
deadline = time.monotonic() + 30
while not got.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
sys.exit(0 if got.exists() else 3)
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_one_line_error(result: Result, status: int, text: str) -> None:
    assert result.exit_code == status, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith("meshsyncd: ")
    assert result.stderr.count("\n") == 1
    assert text in result.stderr


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "node"
    result = run("init", "--dir", str(directory), "--listen", "127.0.0.1:7711")
    assert result.exit_code == 0, result.output
    return directory


def config_of(node_dir: Path) -> str:
    return str(node_dir / "meshsyncd.toml")


def test_init_creates_a_private_node(node_dir: Path) -> None:
    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((node_dir / "node.key").stat().st_mode) == 0o600
    config = load_config(node_dir / "meshsyncd.toml")
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 7711)
    with Store.open(config.store_path) as store:
        assert len(store.incarnation) > 0
    assert load_identity(node_dir).text == run("id", "--config", config_of(node_dir)).stdout.strip()


def test_init_json(tmp_path: Path) -> None:
    result = run("init", "--dir", str(tmp_path / "n"), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == {
        "node_id": load_identity(tmp_path / "n").text,
        "config": str(tmp_path / "n" / "meshsyncd.toml"),
    }
    assert load_config(Path(document["config"])).listen_port == 7700


def test_init_refuses_an_existing_node(node_dir: Path) -> None:
    key = (node_dir / "node.key").read_bytes()
    result = run("init", "--dir", str(node_dir))
    assert_one_line_error(result, 1, "already holds a node (node.key); refusing to overwrite")
    assert (node_dir / "node.key").read_bytes() == key


def test_init_bad_listen_is_a_usage_error(tmp_path: Path) -> None:
    result = run("init", "--dir", str(tmp_path / "n"), "--listen", "nohost")
    assert_one_line_error(result, 2, '--listen: "nohost" is not host:port')
    assert not (tmp_path / "n").exists()
    assert_one_line_error(run("init"), 2, "Missing option '--dir'")


def test_id_uses_config_option_then_environment(node_dir: Path, tmp_path: Path) -> None:
    identity = load_identity(node_dir)
    result = run("id", "--json", env={"MESHSYNCD_CONFIG": config_of(node_dir)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "node_id": identity.text,
        "short": identity.text[:12],
        "origin": f"{identity.short:016x}",
    }
    missing = str(tmp_path / "missing.toml")
    result = run("id", "--config", missing, env={"MESHSYNCD_CONFIG": config_of(node_dir)})
    assert_one_line_error(result, 2, f"{missing}: no such file")


def test_peers_add_introducer(node_dir: Path) -> None:
    config = config_of(node_dir)
    result = run("peers", "add", OTHER, "hub.lan:7700", "--introducer", "--config", config)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith("writes working, episodic, semantic, introducer)")
    assert load_config(Path(config)).peers[0].introducer


def test_id_names_an_unsafe_key(node_dir: Path) -> None:
    (node_dir / "node.key").chmod(0o644)
    result = run("id", "--config", config_of(node_dir))
    assert_one_line_error(result, 2, "node.key: mode 0644")


def test_peers_add_and_remove_round_trip(node_dir: Path) -> None:
    config = config_of(node_dir)
    result = run(
        "peers", "add", OTHER.upper(), "[::1]:7712", "--tiers", "semantic,episodic",
        "--write-tiers", "", "--config", config,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"added peer {OTHER} at [::1]:7712 (receives episodic, semantic; writes nothing)",
        "daemon not running; the change applies at next start",
    ]
    peer = load_config(Path(config)).peers[0]
    assert (peer.host, peer.port, peer.write_tiers) == ("::1", 7712, frozenset())
    assert peer.tiers == {Tier.SEMANTIC, Tier.EPISODIC}
    result = run("peers", "remove", OTHER, env={"MESHSYNCD_CONFIG": config})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"removed peer {OTHER}\n")
    assert load_config(Path(config)).peers == ()


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        (
            ["add", "abcdefghijkl", "h:1"],
            2,
            "NODE_ID: node id must be 52 base32 characters, got 12",
        ),
        (["add", OTHER, "nohost"], 2, 'HOST:PORT: "nohost" is not host:port'),
        (["add", OTHER, "h:1", "--tiers", "working,L9"], 2, '--tiers: unknown tier "L9"'),
        (["add", OTHER, "h:1", "--write-tiers", "x"], 2, '--write-tiers: unknown tier "x"'),
        (["add", OTHER], 2, "Missing argument 'HOST:PORT'"),
        (["add", OTHER, "h:1", "--bogus"], 2, "No such option"),
        (["remove", "!"], 2, "NODE_ID: '!' is not a node id (base32 characters: a-z, 2-7)"),
        (["remove", "6xz"], 2, "NODE_ID: '6xz' is too short to name a peer"),
        (["remove", "7777"], 2, "NODE_ID: no peer id starts with '7777'"),
        (["remove", OTHER], 1, f"no peer {OTHER} is listed"),
        (["frobnicate"], 2, "No such command 'frobnicate'"),
    ],
)
def test_peers_errors_are_one_line(node_dir: Path, args: list[str], status: int, text: str) -> None:
    before = (node_dir / "meshsyncd.toml").read_text()
    result = run("peers", *args, env={"MESHSYNCD_CONFIG": config_of(node_dir)})
    assert_one_line_error(result, status, text)
    assert (node_dir / "meshsyncd.toml").read_text() == before


def test_peers_add_refuses_a_duplicate_and_our_own_id(node_dir: Path) -> None:
    env = {"MESHSYNCD_CONFIG": config_of(node_dir)}
    assert run("peers", "add", OTHER, "h:1", env=env).exit_code == 0
    assert_one_line_error(run("peers", "add", OTHER, "h:2", env=env), 1, "already listed")
    own = load_identity(node_dir).text
    assert_one_line_error(run("peers", "add", own, "h:2", env=env), 2, "this node's own id")


def test_bad_config_file_is_named(node_dir: Path) -> None:
    path = node_dir / "meshsyncd.toml"
    path.write_text(path.read_text().replace("log_level", "log_levle"))
    result = run("peers", "add", OTHER, "h:1", "--config", str(path))
    assert_one_line_error(result, 2, f'{path}: log_levle: unknown key (did you mean "log_level"?)')


def test_bare_peers_calls_the_hook(node_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The control-socket CLI installs its own hook on import (the CLI imports it lazily,
    # on the first ``peers``); import it now, then check the default one here.
    importlib.import_module("meshsyncd.commands.operator")
    monkeypatch.setattr(node_commands, "show_peers_hook", node_commands._default_show_peers)
    assert_one_line_error(
        run("peers"), 1, "peers table needs the daemon's control socket (not available yet)"
    )
    calls: list[tuple[Path | None, Path | None, str]] = []
    monkeypatch.setattr(node_commands, "show_peers_hook", lambda c, s, f: calls.append((c, s, f)))
    assert run("peers", "--json", "--config", config_of(node_dir)).exit_code == 0
    assert run("peers", "-o", "wide", "--socket", "/run/x.sock").exit_code == 0
    assert calls == [
        (Path(config_of(node_dir)), None, "json"),
        (None, Path("/run/x.sock"), "wide"),
    ]


@pytest.mark.parametrize(
    "command", [["init"], ["id"], ["peers"], ["peers", "add"], ["peers", "remove"]]
)
def test_every_command_has_examples(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Examples:\n    meshsyncd " in result.stdout


def test_sighup_reaches_a_running_daemon(node_dir: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", FAKE_DAEMON, str(node_dir), "fake-meshsyncd"])
    try:
        deadline = time.monotonic() + 10
        while not (node_dir / "meshsyncd.pid").exists():
            assert time.monotonic() < deadline, "fake daemon did not write its pid file"
            assert child.poll() is None
            time.sleep(0.01)
        result = run("peers", "add", OTHER, "h:1", "--config", config_of(node_dir))
        assert result.exit_code == 0, result.output
        assert f"sent SIGHUP to the daemon (pid {child.pid})" in result.stdout
        assert child.wait(timeout=10) == 0
        assert (node_dir / "got-sighup").read_text() == "reload"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_stale_pid_file_is_not_signalled(node_dir: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (node_dir / "meshsyncd.pid").write_text(f"{bystander.pid}\n")
        result = run("peers", "add", OTHER, "h:1", "--config", config_of(node_dir))
        assert result.exit_code == 0, result.output
        assert "daemon not running" in result.stdout
        assert bystander.poll() is None
        for junk in ("", "0\n", "-1\n", "not a pid\n", f"{os.getpid()}\n"):
            (node_dir / "meshsyncd.pid").write_text(junk)
            assert node_commands.signal_reload(node_dir / "meshsyncd.pid") is None
    finally:
        bystander.kill()
        bystander.wait()


def test_console_script_in_a_real_process(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("meshsyncd")
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    made = subprocess.run(
        [script, "init", "--dir", tmp_path / "n", "--listen", "127.0.0.1:7713", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    node_id = json.loads(made.stdout)["node_id"]
    env["MESHSYNCD_CONFIG"] = str(tmp_path / "n" / "meshsyncd.toml")
    shown = subprocess.run(
        [script, "id"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert (shown.returncode, shown.stdout) == (0, node_id + "\n")
    bad = subprocess.run(
        [script, "peers", "add", "abc", "h:1"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == "meshsyncd: NODE_ID: node id must be 52 base32 characters, got 3\n"


def test_subcommands_fall_back_to_the_group_config_option(node_dir: Path) -> None:
    result = run("peers", "--config", config_of(node_dir), "add", OTHER, "h:1")
    assert result.exit_code == 0, result.output
    assert load_config(Path(config_of(node_dir))).peers[0].text == OTHER
