"""Snapshots (``store/snapshots.py``): what the node held at one instant, readable while
1,000 writes go on and after a restart; names, expiry and size errors name the snapshot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from controlkit import BackgroundNode

from meshsyncd.client import Client, ClientError
from meshsyncd.commands.cli import main
from meshsyncd.store import Store
from meshsyncd.store.snapshots import SnapshotError, Snapshots
from protocol import Item, Op, Tier


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BackgroundNode]:
    with BackgroundNode(tmp_path) as served:
        yield served


def cli(node: BackgroundNode, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--socket", str(node.path)])


def _read(c: Client, snapshot: str) -> tuple[list[tuple[str, str]], dict[str, object]]:
    items, after = [], None
    while True:
        page = c.list(snapshot=snapshot, limit=7, after=after)
        items += [(i["item_id"], i["value"]) for i in page["items"]]
        if page["next"] is None:
            return items, c.get(namespace="debate", key="k3", snapshot=snapshot)
        after = page["next"]


def test_a_snapshot_reads_the_same_before_and_after_1000_writes_and_a_restart(
    tmp_path: Path,
) -> None:
    node = BackgroundNode(tmp_path)
    with node, Client(node.path) as c:
        for i in range(20):
            c.put(f'"fact {i}"', namespace="debate", key=f"k{i}")
        c.put('"elsewhere"', namespace="other", key="x")
        info = c.snapshot_create("round1", namespace="debate", ttl=3600)
        assert info["items"] == 20 and info["bytes"] > 0
        before = _read(c, "round1")
        assert len(before[0]) == 20 and before[1]["value"] == '"fact 3"'
        for i in range(1000):
            c.put(f'"changed {i}"', namespace="debate", key=f"k{i % 25}")
        c.delete(namespace="debate", key="k3")
        assert _read(c, "round1") == before
        assert c.get(namespace="debate", key="k0")["value"] != '"fact 0"'
        with pytest.raises(ClientError, match="snapshot name 'round1' is in use"):
            c.snapshot_create("round1")
    node = BackgroundNode(tmp_path)  # the same store file: a restart
    with node, Client(node.path) as c:
        assert _read(c, "round1") == before
        assert [s["name"] for s in c.snapshots()] == ["round1"]
        c.snapshot_drop("round1")
        with pytest.raises(ClientError, match="no snapshot 'round1'"):
            c.get(namespace="debate", key="k3", snapshot="round1")


def test_expiry_size_and_bad_names(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    with Store.open(store) as s:
        s.apply(
            Tier.EPISODIC,
            [
                Item(
                    item_id=bytes(16),
                    timestamp_ns=1,
                    origin=1,
                    tier=1,
                    op=Op.INSERT,
                    payload=b"x" * 5000,
                )
            ],
        )
    snaps = Snapshots(store, max_bytes=1000)
    with pytest.raises(SnapshotError, match=r"would hold \d+ bytes, the limit is 1000"):
        snaps.create("big", namespace=None, ttl_s=60)
    snaps = Snapshots(store)
    with pytest.raises(SnapshotError, match=r"bad snapshot name '\.\./x'"):
        snaps.create("../x", namespace=None, ttl_s=60)
    snaps.create("short", namespace=None, ttl_s=1e-9)  # expires at once
    with pytest.raises(SnapshotError, match="snapshot 'short' expired"):
        snaps.items("short", Tier.EPISODIC)
    assert snaps.list() == []
    snaps.create("short", namespace=None, ttl_s=60)  # the name is free again
    assert [i.name for i in snaps.list()] == ["short"]


def test_snapshot_cli(node: BackgroundNode) -> None:
    assert cli(node, "put", '"a"', "--namespace", "d", "--key", "k").exit_code == 0
    made = cli(node, "snapshot", "create", "s1", "--namespace", "d", "--ttl", "1h", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["items"] == 1
    assert cli(node, "put", '"b"', "--namespace", "d", "--key", "k").exit_code == 0
    got = cli(node, "get", "--namespace", "d", "--key", "k", "--snapshot", "s1", "--json")
    assert json.loads(got.output)["value"] == '"a"'
    listed = cli(node, "list", "--snapshot", "s1", "--json")
    assert [i["value"] for i in json.loads(listed.output)["items"]] == ['"a"']
    assert "s1" in cli(node, "snapshot", "list").output
    again = cli(node, "snapshot", "create", "s1")
    assert again.exit_code != 0 and "in use" in again.output
    assert len(again.output.strip().splitlines()) == 1
    bad = cli(node, "snapshot", "create", "s2", "--ttl", "forever")
    assert bad.exit_code == 2 and "bad --ttl" in bad.output
    assert cli(node, "snapshot", "drop", "s1").exit_code == 0
    gone = cli(node, "get", "--namespace", "d", "--key", "k", "--snapshot", "s1")
    assert gone.exit_code != 0 and "no snapshot 's1'" in gone.output
