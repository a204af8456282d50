"""Issue 12, an operator's first hour: peers, identities, tables, exit statuses and the small
ones, through the real CLI against real daemons (separate processes, real TLS and SQLite)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meshnodes import EXE, Node, cli, mesh, wait_for

REPO = Path(__file__).resolve().parents[2]
ADMIT = "meshsyncd peers add {id} 127.0.0.1:PORT"


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def run(*args: str, node: Node | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--config", str(node.config)] if node is not None else []
    return cli(*args, *extra, check=False)


def row(node: Node, other: Node) -> dict[str, Any]:
    with node.client() as c:
        return next(r for r in c.peers() if r["id"] == other.node_id)


def assert_fits(text: str) -> None:
    assert max((len(line) for line in text.splitlines()), default=0) <= 100, text


def one_line(proc: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("meshsyncd: ")
    assert text in proc.stderr, proc.stderr


def test_a_one_sided_peer_is_explained_on_both_sides(nodes: list[Node], tmp_path: Path) -> None:
    x, y = Node(tmp_path, "x"), Node(tmp_path, "y")
    nodes += [x, y]
    x.add_peer(y)  # y does not list x
    x.start()
    y.start()
    wait_for(
        lambda: row(x, y)["reason"] == "refused by peer: our id is not in its config",
        30,
        "x to say why y refuses it",
    )
    table = run("peers", node=x)
    assert table.returncode == 0 and "refused by peer: our id is not in its config" in table.stdout
    assert_fits(table.stdout)
    # y names x in full with the command that would admit it, as a warning
    admit = ADMIT.format(id=x.node_id)
    wait_for(
        lambda: any(e.get("admit") == admit and e.get("level") == "warning" for e in y.logs()),
        30,
        "y to log the command that admits x",
    )
    cli("peers", "add", x.node_id, f"127.0.0.1:{x.port}", "--config", str(y.config))
    wait_for(lambda: row(x, y)["state"] == "connected", 30, "x and y to connect once admitted")
    assert row(x, y)["reason"] == ""


def test_another_node_at_the_address_is_named_a_certificate_mismatch(
    nodes: list[Node], tmp_path: Path
) -> None:
    x, y, z = Node(tmp_path, "x"), Node(tmp_path, "y"), Node(tmp_path, "z")
    nodes += [x, y, z]
    cli("peers", "add", z.node_id, f"127.0.0.1:{y.port}", "--config", str(x.config))
    x.start()
    y.start()  # y answers where x expects z
    wait_for(
        lambda: row(x, z)["reason"].startswith("TLS: certificate does not match the configured id"),
        30,
        "x to say the certificate at the address is not z's",
    )


def test_first_contact_refusals_are_not_warnings(nodes: list[Node], tmp_path: Path) -> None:
    pair = mesh(tmp_path, ["p", "q"])
    nodes += pair
    for node in pair:
        node.start()
    p, q = pair
    wait_for(lambda: row(p, q)["state"] == row(q, p)["state"] == "connected", 30, "p and q")
    refused = [e for n in pair for e in n.logs() if e.get("event") == "connection refused"]
    assert refused, "a first dial probes the peer's certificate: refused once at least"
    assert all(e["level"] == "info" and e.get("note") for e in refused), refused


def test_a_stopped_peer_keeps_last_seen_and_cursors(nodes: list[Node], tmp_path: Path) -> None:
    a, b = mesh(tmp_path, ["a", "b"])
    nodes += [a, b]
    a.start()
    b.start()
    with b.client() as c:
        c.put("from b", key="k", tier="episodic")
    wait_for(lambda: a.digests() == b.digests(), 30, "a to pull b's write")
    wait_for(lambda: (row(a, b).get("cursors") or {}).get("episodic", 0) > 0, 30, "a's cursor")
    cursors = row(a, b)["cursors"]
    b.stop()
    wait_for(
        lambda: row(a, b)["reason"] == f"connection refused at 127.0.0.1:{b.port}",
        60,
        "a to find b gone",
    )
    gone = row(a, b)
    assert gone["state"] != "connected"
    assert gone["last_seen"] and gone["cursors"] == cursors
    table = run("peers", node=a).stdout
    line = next(x for x in table.splitlines() if x.startswith(b.node_id[:12]))
    assert " s ago" in line and f"connection refused at 127.0.0.1:{b.port}" in line
    wide = run("peers", "-o", "wide", node=a).stdout
    assert b.node_id in wide and "episodic:" in wide


def test_one_identity_form_for_origins_conflicts_and_prefixes(
    nodes: list[Node], tmp_path: Path
) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    nodes += [a, b]
    a.start()
    b.start()
    for node, value in ((a, "from a"), (b, "from b")):  # concurrent writes: a conflict
        with node.client() as c:
            c.put(value, key="shared", tier="semantic")
    a.add_peer(b)  # `peers add` reloads each running daemon
    b.add_peer(a)
    wait_for(lambda: a.digests() == b.digests(), 30, "a and b to converge")
    shorts = {json.loads(run("id", "--json", node=n).stdout)["short"] for n in (a, b)}
    assert shorts == {a.node_id[:12], b.node_id[:12]}
    conflicts = ""
    for node in (a, b):
        conflicts += run("conflicts", "--tier", "semantic", node=node).stdout
    assert a.node_id[:12] in conflicts and b.node_id[:12] in conflicts
    assert_fits(conflicts)
    listing = run("list", "--tier", "semantic", node=a)
    assert_fits(listing.stdout)
    got = json.loads(run("get", "--key", "shared", "--tier", "semantic", "--json", node=a).stdout)
    winner = a if got["value"] == "from a" else b
    assert winner.node_id[:12] in listing.stdout
    shown = run("get", "--key", "shared", "--tier", "semantic", node=b).stdout.splitlines()
    assert ["origin", winner.node_id[:12]] in [line.split() for line in shown]
    # --json keeps full ids; a unique prefix is accepted where an id is typed
    assert json.loads(run("peers", "--json", node=a).stdout)[0]["id"] == b.node_id
    synced = run("sync", "--now", "--peer", b.node_id[:6], "--timeout", "20s", node=a)
    assert synced.returncode == 0, synced.stderr
    assert b.node_id[:12] in synced.stdout
    removed = run("peers", "remove", b.node_id[:6], node=a)
    assert removed.returncode == 0 and f"removed peer {b.node_id}" in removed.stdout
    assert "sent SIGHUP" in removed.stdout
    wait_for(lambda: not json.loads(run("peers", "--json", node=a).stdout), 30, "b removed")


def test_merge_onto_text_is_refused_and_changes_nothing(nodes: list[Node], tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    nodes.append(a)
    a.start()
    assert run("put", "plain text", "--key", "note", node=a).returncode == 0
    merged = run("merge", '{"a": 1}', "--key", "note", node=a)
    one_line(merged, 1, 'item with key "note" holds a value that is not a JSON object')
    assert run("get", "--key", "note", "--raw", node=a).stdout == "plain text"
    assert run("put", '{"x": 0}', "--key", "obj", node=a).returncode == 0
    assert run("merge", '{"a": 1}', "--key", "obj", node=a).returncode == 0
    got = run("get", "--key", "obj", "--raw", node=a).stdout
    assert json.loads(got) == {"x": 0, "a": 1}


def test_exit_statuses_are_uniform(nodes: list[Node], tmp_path: Path) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    nodes += [a, b]
    missing = str(tmp_path / "missing.toml")
    for command in (["id"], ["status"], ["peers"], ["peers", "add", b.node_id, "h:1"]):
        one_line(cli(*command, "--config", missing, check=False), 2, "missing.toml")
    one_line(run("peers", "add", "not-an-id", "h:1", node=a), 2, "NODE_ID:")
    assert run("peers", "add", b.node_id, "h:1", node=a).returncode == 0
    one_line(run("peers", "add", b.node_id, "h:1", node=a), 1, "already")
    for command in (["status"], ["peers"], ["put", "x"], ["list"]):  # a is not running
        one_line(run(*command, node=a), 3, "daemon not running")
    one_line(run("peer"), 2, "no such command 'peer'; did you mean peers?")
    for command in ("status", "put", "get", "list", "conflicts", "vectors", "sync", "peers"):
        shown = run(command, "--help").stdout
        assert "Exit status: 0 ok; 1 the operation failed" in shown, command
        assert "--socket" in shown and "MESHSYNCD_SOCKET" in shown, command
        assert "-o, --output [table|wide|json]" in shown, command
    for command in ("id", "init", "run", "decode"):
        assert "Exit status" in run(command, "--help").stdout, command


def test_the_small_ones(nodes: list[Node], tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    nodes.append(a)
    a.start()
    one_line(run("put", "--key", "k", node=a), 2, "put needs a value")
    assert run("put", "v", "--key", "ci/status", "--tier", "working", node=a).returncode == 0
    one_line(
        run("get", "--key", "ci/status", node=a),
        1,
        'no item with key "ci/status" in tier episodic; it is in tier working: add --tier working',
    )
    bad = tmp_path / "bad-batch.bin"
    good = (REPO / "protocol" / "vectors" / "batch-zstd.bin").read_bytes()
    bad.write_bytes(b"m" + good[1:])
    one_line(cli("decode", str(bad), check=False), 2, "batch.magic at offset 0")
    readme = (REPO / "README.md").read_text()
    for mention in ("systemd/", "docs/operations.md", "meshsyncd.pid"):
        assert mention in readme, mention
    ignored = (REPO / ".gitignore").read_text().split()
    assert "/node-a/" in ignored and "/node-b/" in ignored
    assert a.proc is not None
    a.proc.send_signal(signal.SIGHUP)  # still serving after all of the above
    assert a.status()["node_id"] == a.node_id


def test_run_help_lists_the_exit_status() -> None:
    shown = subprocess.run([EXE, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert "2 it could not start" in " ".join(shown.stdout.split())
