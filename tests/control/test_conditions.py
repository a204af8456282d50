"""Conditional writes and freezes through the client and the CLI (``conditions.py``).

The race: several clients of one node read the same version and each writes with
``--if-version`` set to it; exactly one wins, every other gets a precondition error naming
the version that is current now (a hypothesis test over racers, values and ops).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from controlkit import PEER_ID, BackgroundNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol as P
from meshsyncd.client import Client, ClientError
from meshsyncd.commands.cli import main
from protocol import Item, Op, Tier

NS, KEY = "agents/shared", "plan"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BackgroundNode]:
    with BackgroundNode(tmp_path) as served:
        yield served


def cli(node: BackgroundNode, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--socket", str(node.path)])


def test_if_version_and_if_absent(node: BackgroundNode) -> None:
    with Client(node.path) as c:
        first = c.put('{"v": 1}', namespace=NS, key=KEY, if_absent=True)
        with pytest.raises(ClientError, match="is not absent: it is at version") as info:
            c.put('{"v": "again"}', namespace=NS, key=KEY, if_absent=True)
        assert info.value.code == "precondition_failed"
        assert c.get(namespace=NS, key=KEY)["version"] == first["version"]
        second = c.put("{}", namespace=NS, key=KEY, if_version=first["version"])
        with pytest.raises(ClientError, match=f"not at version {first['version']}") as info:
            c.put('{"v": "stale"}', namespace=NS, key=KEY, if_version=first["version"])
        assert second["version"] in str(info.value)
        merged = c.merge({"step": 2}, namespace=NS, key=KEY, if_version=second["version"])
        current = c.get(namespace=NS, key=KEY)
        assert current["version"] == merged["version"] and current["value_json"] == {"step": 2}
        with pytest.raises(ClientError, match="not at version"):
            c.delete(namespace=NS, key=KEY, if_version=second["version"])
        c.delete(namespace=NS, key=KEY, if_version=merged["version"])
        with pytest.raises(ClientError, match="malformed version 'yesterday'"):
            c.put("x", namespace=NS, key=KEY, if_version="yesterday")
        with pytest.raises(ClientError, match="needs a key or an item id"):
            c.put("x", if_absent=True)
        c.put('"back"', namespace=NS, key=KEY, if_absent=True)  # deleted counts as absent


def test_cli_conditions_fail_in_one_line_and_change_nothing(node: BackgroundNode) -> None:
    ok = cli(node, "put", '"v1"', "--namespace", NS, "--key", KEY, "--json")
    assert ok.exit_code == 0, ok.output
    before = cli(node, "get", "--namespace", NS, "--key", KEY, "--json").output
    for args, status, text in [
        (["--if-version", "12:zz"], 2, "--if-version: malformed version '12:zz'"),
        (["--if-version", "12:ab"], 1, "is at version"),
        (["--if-absent"], 1, "is not absent"),
    ]:
        bad = cli(node, "put", '"v2"', "--namespace", NS, "--key", KEY, *args)
        assert bad.exit_code == status and text in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
    assert cli(node, "get", "--namespace", NS, "--key", KEY, "--json").output == before


def test_freeze_refuses_local_writes_but_replicated_ones_apply(node: BackgroundNode) -> None:
    with Client(node.path) as c:
        c.put('"v1"', namespace=NS, key=KEY)
        c.freeze("agents", 600)
        with pytest.raises(ClientError, match="local writes under agents are frozen") as info:
            c.put('"v2"', namespace=NS, key=KEY)
        assert info.value.code == "frozen"
        with pytest.raises(ClientError, match="frozen"):
            c.merge({"a": 1}, namespace="agents/x", key="k")
        c.put("elsewhere", namespace="agentsmith", key="k")  # not under agents/
        block = P.name_block(tuple(NS.split("/")), KEY)
        flags, payload = P.with_base(P.NAMED, block + b'"from a peer"', (0, 0))
        peer = Item(
            item_id=P.name_id(block),
            timestamp_ns=2**62,
            origin=int.from_bytes(PEER_ID[:8], "big"),
            tier=Tier.EPISODIC,
            op=Op.UPDATE,
            flags=flags,
            payload=payload,
        )
        assert node.daemon is not None
        store = node.daemon.engine.engine.store
        node.call(lambda: store.apply(Tier.EPISODIC, [peer]))
        assert c.get(namespace=NS, key=KEY)["value"] == '"from a peer"'
        with pytest.raises(ClientError, match="no freeze on namespace 'kb'"):
            c.unfreeze("kb")
        c.unfreeze("agents/")
    out = cli(node, "freeze", "--namespace", "kb", "--for", "soon")
    assert out.exit_code == 2 and "bad --for 'soon'" in out.output
    assert cli(node, "freeze", "--namespace", "kb", "--for", "30m").exit_code == 0
    frozen = cli(node, "put", "x", "--namespace", "kb/facts", "--key", "k")
    assert frozen.exit_code == 1 and "frozen" in frozen.output
    assert cli(node, "unfreeze", "--namespace", "kb").exit_code == 0
    assert cli(node, "put", "x", "--namespace", "kb/facts", "--key", "k").exit_code == 0


def test_if_version_races_let_exactly_one_win(node: BackgroundNode) -> None:
    with Client(node.path) as c:
        c.put('{"at": "start"}', namespace=NS, key="race")

    @settings(
        max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        racers=st.integers(2, 6),
        ops=st.lists(st.sampled_from(["put", "merge"]), min_size=6, max_size=6),
    )
    def race(racers: int, ops: list[str]) -> None:
        with Client(node.path) as c:
            seen = c.get(namespace=NS, key="race")["version"]
        gate = threading.Barrier(racers)
        results: list[str] = []

        def racer(i: int) -> None:
            with Client(node.path) as client:
                gate.wait()
                try:
                    if ops[i] == "put":
                        client.put(f'{{"by": {i}}}', namespace=NS, key="race", if_version=seen)
                    else:
                        client.merge({"by": i}, namespace=NS, key="race", if_version=seen)
                    results.append(f"won {i}")
                except ClientError as exc:
                    assert exc.code == "precondition_failed", exc.message
                    results.append("lost")

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r.startswith("won")]
        assert len(results) == racers and len(winners) == 1
        with Client(node.path) as c:
            assert c.get(namespace=NS, key="race")["version"] != seen

    race()


def test_history_through_the_client_and_the_cli(node: BackgroundNode) -> None:
    with Client(node.path) as c:
        for value in ('{"v":"one"}', '{"v":"two"}', '{"v":"three"}'):
            c.put(value, namespace=NS, key="h")
        c.merge({"f": 1}, namespace=NS, key="h")
        rows = c.history(namespace=NS, key="h")
        assert [r["op"] for r in rows] == ["merge", "update", "update", "insert"]
        assert [r.get("value") for r in rows[1:]] == ['{"v":"three"}', '{"v":"two"}', '{"v":"one"}']
        assert [r["current"] for r in rows] == [False, True, False, False]
        with pytest.raises(ClientError, match="no item"):
            c.history(namespace=NS, key="never")
    table = cli(node, "history", "--namespace", NS, "--key", "h")
    assert table.exit_code == 0 and '{"v":"two"}' in table.output and " *" in table.output
