"""Reviewing and resolving the conflict log over the socket, the client and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from controlkit import PEER_ID, BackgroundNode

import protocol as P
from meshsyncd.client import Client, ClientError
from meshsyncd.commands.cli import main
from protocol import Item, Op, Tier

PEER = int.from_bytes(PEER_ID[:8], "big")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BackgroundNode]:
    with BackgroundNode(tmp_path) as served:
        yield served


def cli(node: BackgroundNode, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--socket", str(node.path)])


def concurrent_write(node: BackgroundNode, mine: dict[str, object]) -> None:
    """The peer's write of the same item, made without seeing ours, arrives and wins."""
    block = P.name_block(("agents", "alden"), "units")
    flags, payload = P.with_base(P.NAMED, block + b'"theirs"', (0, 0))
    theirs = Item(
        item_id=P.name_id(block),
        timestamp_ns=int(str(mine["timestamp_ns"])) + 1000,
        origin=PEER,
        tier=Tier.EPISODIC,
        op=Op.UPDATE,
        flags=flags,
        payload=payload,
    )
    assert node.daemon is not None
    store = node.daemon.engine.engine.store
    node.call(lambda: store.apply(Tier.EPISODIC, [theirs]))


def test_review_and_resolve_through_the_client(node: BackgroundNode) -> None:
    with Client(node.path) as c:
        mine = c.put('"mine"', namespace="agents/alden", key="units")
        concurrent_write(node, mine)
        (entry,) = c.conflicts(values=True, namespace="agents")
        assert entry["namespace"] == "agents/alden" and entry["key"] == "units"
        assert entry["loser"]["value"] == '"mine"' and entry["winner"]["value"] == '"theirs"'
        assert entry["loser"]["op"] == "insert" and entry["winner"]["origin"] == f"{PEER:016x}"
        assert entry["resolved_by"] is None
        assert c.conflicts(namespace="other") == [] and c.conflicts(since_ns=2**62) == []
        done = c.resolve_conflict(entry["id"], keep="loser")
        assert c.get(namespace="agents/alden", key="units")["value"] == '"mine"'
        (entry,) = c.conflicts()
        assert entry["resolved_by"]["timestamp_ns"] == done["timestamp_ns"]
        assert c.conflicts(open_only=True) == []
        with pytest.raises(ClientError, match=f"conflict {entry['id']} is already resolved"):
            c.resolve_conflict(entry["id"], keep="winner")
        with pytest.raises(ClientError, match="no conflict 77") as info:
            c.resolve_conflict(77, value="x")
        assert info.value.code == "not_found"
        assert c.get(namespace="agents/alden", key="units")["value"] == '"mine"'


def test_the_cli_lists_and_resolves_in_one_line_errors(node: BackgroundNode) -> None:
    with Client(node.path) as c:
        mine = c.put('"mine"', namespace="agents/alden", key="units")
    concurrent_write(node, mine)
    table = cli(node, "conflicts", "--values", "--since", "1h")
    assert table.exit_code == 0, table.output
    assert "agents/alden/units" in table.output and '"mine"' in table.output
    (entry,) = json.loads(cli(node, "conflicts", "--json", "--open").output)
    bad = cli(node, "conflicts", "resolve", str(entry["id"]))
    assert bad.exit_code == 2 and bad.output.strip().startswith("meshsyncd: ")
    assert len(bad.output.strip().splitlines()) == 1
    since = cli(node, "conflicts", "--since", "yesterday")
    assert since.exit_code == 2 and "bad --since 'yesterday'" in since.output
    ok = cli(node, "conflicts", "resolve", str(entry["id"]), "--value", '"both"')
    assert ok.exit_code == 0, ok.output
    again = cli(node, "conflicts", "resolve", str(entry["id"]), "--keep", "winner")
    assert again.exit_code != 0 and "already resolved" in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert json.loads(cli(node, "conflicts", "--json", "--open").output) == []
