"""``meshsyncd mcp`` tested with the MCP SDK's own client over stdio, against a real daemon:
the tools are listed with descriptions, each is called, results and tool errors checked.

The server is the real command (``meshsyncd mcp --socket ...``) spawned by the SDK's
``stdio_client``, as an MCP host would spawn it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp.client.stdio", reason="the mcp extra is not installed")

from conftest import count_items
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from meshnodes import Node, free_port, wait_for

EXE = str(Path(sys.executable).with_name("meshsyncd"))
TOOLS = {
    "remember",
    "recall",
    "list_memories",
    "search",
    "list_namespaces",
    "forget",
    "sync_now",
    "conflicts",
    "history",
}


def with_session(socket: Path, body: Callable[[ClientSession], Awaitable[None]]) -> None:
    async def main() -> None:
        params = StdioServerParameters(command=EXE, args=["mcp", "--socket", str(socket)])
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                await body(s)

    anyio.run(main)


async def call(s: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    """A successful call's structured result."""
    result = await s.call_tool(tool, args)
    assert not result.is_error, (tool, args, result.content)
    out = result.structured_content
    assert isinstance(out, dict), result
    return out


async def error(s: ClientSession, tool: str, **args: Any) -> str:
    """A call that must fail as a tool error (not a protocol error, not a crash)."""
    result = await s.call_tool(tool, args)
    assert result.is_error, (tool, args, result)
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_tools_listed_and_called(node: Node, ns: str) -> None:
    async def body(s: ClientSession) -> None:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40, tool.name
        assert "namespace" in tools["remember"].input_schema["required"]

        w = await call(s, "remember", namespace=f"{ns}/alden", key="units", value={"u": "SI"})
        assert (w["namespace"], w["key"], w["op"], w["tier"]) == (
            f"{ns}/alden",
            "units",
            "insert",
            "episodic",
        )
        await call(s, "remember", namespace=f"{ns}/alden", key="tz", value="UTC", tier="semantic")
        await call(s, "remember", namespace=f"{ns}/bob", key="score", value={"score": 4})

        got = await call(s, "recall", namespace=f"{ns}/alden", key="units")
        assert got["value"] == {"u": "SI"} and got["origin"] == w["origin"]
        text = await call(s, "recall", namespace=f"{ns}/alden", key="tz", tier="semantic")
        assert text["value"] == "UTC"

        listed = await call(s, "list_memories", namespace=ns)
        assert [(i["namespace"], i["key"]) for i in listed["items"]] == [
            (f"{ns}/alden", "units"),
            (f"{ns}/bob", "score"),
        ]
        assert listed["next"] is None
        found = await call(s, "search", namespace=ns, filter={"score": {"$gte": 3}})
        assert [i["key"] for i in found["items"]] == ["score"]
        everywhere = await call(s, "search", namespace=f"{ns}/alden")
        assert sorted(i["key"] for i in everywhere["items"]) == ["tz", "units"]

        spaces = await call(s, "list_namespaces", prefix=ns)
        assert spaces["namespaces"] == [
            {"namespace": f"{ns}/alden", "items": 2, "tiers": {"episodic": 1, "semantic": 1}},
            {"namespace": f"{ns}/bob", "items": 1, "tiers": {"episodic": 1}},
        ]
        await call(s, "remember", namespace=f"{ns}/bob", key="score", value="five")
        gone = await call(s, "forget", namespace=f"{ns}/bob", key="score")
        assert gone["op"] == "delete"
        past = await call(s, "history", namespace=f"{ns}/bob", key="score")
        assert (past["namespace"], past["key"], past["tier"]) == (f"{ns}/bob", "score", "episodic")
        assert [(v["op"], v["value"], v["current"]) for v in past["versions"]] == [
            ("delete", None, True),
            ("update", "five", False),
            ("insert", {"score": 4}, False),
        ]
        assert past["versions"][0]["timestamp_ns"] == gone["timestamp_ns"]
        assert past["versions"][0]["origin"] == gone["origin"]
        assert "no such memory" in await error(s, "recall", namespace=f"{ns}/bob", key="score")
        synced = await call(s, "sync_now", timeout=2)
        assert synced["ok"] is True and synced["failed"] == []
        assert (await call(s, "conflicts"))["conflicts"] == []

    with_session(node.socket, body)


def test_bad_arguments_are_tool_errors_and_store_nothing(node: Node, ns: str) -> None:
    before = count_items(node)

    async def body(s: ClientSession) -> None:
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("remember", {"key": "k", "value": 1}, "namespace"),  # missing argument
            ("remember", {"namespace": ns, "value": 1}, "key"),
            ("remember", {"namespace": ns, "key": "k"}, "value"),
            ("remember", {"namespace": 7, "key": "k", "value": 1}, "namespace"),  # wrong type
            ("remember", {"namespace": ns, "key": "k", "value": 1, "tier": "L7"}, "tier"),
            ("remember", {"namespace": ns, "key": "k", "value": 1, "priority": "asap"}, "prio"),
            ("remember", {"namespace": f"{ns}//x", "key": "k", "value": 1}, "empty label"),
            ("remember", {"namespace": ns, "key": "", "value": 1}, "key"),
            ("remember", {"namespace": ns, "key": "k", "value": "x" * (1 << 20 | 1)}, "limit"),
            ("recall", {"namespace": ns}, "key"),
            ("list_memories", {"limit": 0}, "limit"),
            ("list_memories", {"namespace": ns, "after": "garbage!"}, "cursor"),
            ("search", {"namespace": ns, "filter": "score > 3"}, "filter"),
            ("search", {"namespace": ns, "tiers": ["nowhere"]}, "tiers"),
            ("forget", {"namespace": ns, "key": "never"}, "no such memory"),
            ("sync_now", {"timeout": -1}, "timeout"),
            ("sync_now", {"timeout": "soon"}, "timeout"),
            ("conflicts", {"limit": "many"}, "limit"),
            ("history", {"namespace": ns}, "key"),
            ("history", {"namespace": ns, "key": ""}, "key"),
            ("history", {"namespace": f"{ns}//x", "key": "k"}, "empty label"),
            ("history", {"namespace": ns, "key": "k", "tier": "L7"}, "tier"),
            ("history", {"namespace": ns, "key": "never"}, "no such memory"),
        ]
        for tool, args, words in cases:
            text = await error(s, tool, **args)
            assert words in text, (tool, args, text)
        # The server is still up and answering after all of that.
        assert (await call(s, "list_namespaces", prefix=ns))["namespaces"] == []

    with_session(node.socket, body)
    assert count_items(node) == before


def test_a_daemon_that_is_not_running(tmp_path: Path) -> None:
    async def body(s: ClientSession) -> None:
        text = await error(s, "recall", namespace="a", key="k")
        assert "daemon not running" in text and "meshsyncd run" in text
        assert len((await s.list_tools()).tools) == len(TOOLS)

    with_session(tmp_path / "none.sock", body)


def test_http_only_on_loopback() -> None:
    out = subprocess.run(
        [EXE, "mcp", "--socket", "/nonexistent", "--http", "0.0.0.0:8765"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "only loopback" in out.stderr


def test_streamable_http_on_loopback(node: Node, ns: str) -> None:
    """The same tools over streamable HTTP (``--http``), with the SDK's HTTP client."""
    port = free_port()
    proc = subprocess.Popen(
        [EXE, "mcp", "--socket", str(node.socket), "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        assert proc.poll() is None, "meshsyncd mcp --http exited"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    async def main() -> None:
        url = f"http://127.0.0.1:{port}/mcp"
        with anyio.fail_after(60):
            async with (
                streamable_http_client(url) as (read, write),
                ClientSession(read, write) as s,
            ):
                await s.initialize()
                assert {t.name for t in (await s.list_tools()).tools} == TOOLS
                await call(s, "remember", namespace=ns, key="via", value={"http": True})
                assert (await call(s, "recall", namespace=ns, key="via"))["value"] == {"http": True}
                assert "key" in await error(s, "recall", namespace=ns)

    try:
        wait_for(listening, 30, "the MCP HTTP endpoint")
        anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
