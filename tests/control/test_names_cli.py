"""The named-memory CLI: --namespace, list by prefix, namespaces, watch --since; bad names
are one-line usage errors (exit 2) naming the part."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from controlkit import BackgroundNode

from meshsyncd.commands.cli import main


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BackgroundNode]:
    with BackgroundNode(tmp_path) as served:
        yield served


def cli(node: BackgroundNode, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--socket", str(node.path)])


def ok_json(node: BackgroundNode, *args: str) -> Any:
    result = cli(node, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_named_put_get_list_namespaces_and_watch(node: BackgroundNode) -> None:
    put = ok_json(
        node, "put", '{"u":"metric"}', "--namespace", "agents/alden/prefs", "--key", "units"
    )
    assert (put["namespace"], put["key"]) == ("agents/alden/prefs", "units")
    ok_json(node, "merge", '{"mood":"ok"}', "--namespace", "agents/alden", "--key", "state")
    ok_json(node, "put", "x", "--namespace", "agents/alice", "--key", "units")
    table = cli(node, "get", "--namespace", "agents/alden/prefs", "--key", "units")
    assert table.exit_code == 0 and "namespace  agents/alden/prefs" in table.output
    listed = cli(node, "list", "--namespace", "agents/alden", "--limit", "1")
    assert listed.exit_code == 0
    assert "agents/alden  state" in listed.output and "(more: --after " in listed.output
    after = listed.output.split("--after ")[1].strip(" )\n")
    rest = ok_json(node, "list", "--namespace", "agents/alden", "--after", after)
    assert [i["key"] for i in rest["items"]] == ["units"] and rest["next"] is None
    spaces = ok_json(node, "namespaces", "--max-depth", "1")
    assert spaces == [{"namespace": "agents", "items": 3, "tiers": {"episodic": 3}}]
    watched = cli(node, "watch", "--since", "episodic:0", "--count", "3", "--values", "--json")
    events = [json.loads(line) for line in watched.output.splitlines()]
    assert [e["key"] for e in events] == ["units", "state", "units"]
    assert events[0]["value"] == '{"u":"metric"}' and "episodic:3" in events[-1]["cursor"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["put", "v", "--namespace", "a//b", "--key", "k"], "namespace label 2 of 'a//b'"),
        (["put", "v", "--namespace", "a/b"], "give --key too"),
        (["list", "--namespace", "x" * 300], "namespace label 1"),
        (["watch", "--since", "7"], "needs a tier"),
    ],
)
def test_bad_names_are_usage_errors(node: BackgroundNode, args: list[str], message: str) -> None:
    result = cli(node, *args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("meshsyncd: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
