"""``meshsyncd mcp``: the node's memory as MCP tools, for any MCP-capable model.

Built on the official MCP Python SDK (``mcp`` 2.x, ``MCPServer``); each tool is a thin
call of :class:`~meshsyncd.client.AsyncClient`, so the tools do what the socket does and
nothing else. Served over stdio (what MCP hosts spawn) or streamable HTTP on loopback.

Tools: ``remember`` (put), ``recall`` (get), ``list_memories`` (one namespace prefix,
paged), ``search`` (namespace prefix plus a filter on value fields, all tiers),
``list_namespaces``, ``forget`` (delete), ``sync_now`` (the mesh barrier), ``conflicts``
(concurrent writes the node saw) and ``history`` (the last versions this node has seen of
one memory, newest first, with their values).

Errors: arguments the schema refuses (missing, wrong type, an unknown tier) and every
refusal of the node (a bad name, a value over 1 MiB, no such memory, the daemon not
running) come back as a tool error (``isError``) whose text says what to fix; a tool
never crashes the server, and a refused write stores nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from . import results
from .aclient import AsyncClient
from .client import ClientError, DaemonNotRunning, NotFound
from .filters import matches

__all__ = ["build_server", "check_loopback"]

TierName = Literal["working", "episodic", "semantic"]
PriorityName = Literal["background", "low", "normal", "high", "urgent"]
NamespaceArg = Annotated[
    str,
    Field(
        description="Namespace labels separated by '/', e.g. 'agents/alden/prefs' "
        "(labels are non-empty and contain no '/').",
    ),
]
KeyArg = Annotated[str, Field(min_length=1, description="The memory's key in its namespace.")]
TierArg = Annotated[
    TierName,
    Field(
        description="working: short-lived (about a day); episodic: events, conversations, "
        "findings; semantic: lasting knowledge, facts, preferences.",
    ),
]

INSTRUCTIONS = """\
Long-term memory shared by a mesh of meshsyncd nodes: what you remember here is
replicated to the other nodes, and other agents' memories arrive here. A memory is a
value under a namespace ('agents/alden/prefs') and a key ('units'), in a tier (working,
episodic, semantic). Use remember to save, recall to read one memory, search or
list_memories to find memories under a namespace, forget to delete, sync_now to make sure
the whole mesh has the same memories before you rely on them."""


def _item(item: results.Item) -> dict[str, Any]:
    return {
        "namespace": "/".join(item.namespace or ()),
        "key": item.key,
        "tier": item.tier.name.lower(),
        "value": item.value if item.is_json or isinstance(item.value, str) else None,
        "updated_at": item.updated_at.isoformat(),
        "origin": item.origin,
    }


def _version(v: dict[str, Any]) -> dict[str, Any]:
    """One version of ``history``: its value parsed like ``recall``'s (JSON, else text;
    ``None`` for a delete or a binary value)."""
    value: Any = None
    text = v.get("value")
    if isinstance(text, str):
        value = text
        with contextlib.suppress(ValueError, RecursionError):
            value = json.loads(text)
    ts = int(v.get("timestamp_ns", 0))
    return {
        "op": v.get("op"),
        "value": value,
        "current": bool(v.get("current")),
        "updated_at": results.Version(ts, str(v.get("origin"))).at.isoformat(),
        "timestamp_ns": ts,
        "origin": v.get("origin"),
    }


def _written(w: results.Written) -> dict[str, Any]:
    return {
        "namespace": "/".join(w.namespace or ()),
        "key": w.key,
        "tier": w.tier.name.lower(),
        "op": w.op,
        "timestamp_ns": w.version.timestamp_ns,
        "origin": w.origin,
    }


def _tool_error(exc: ClientError) -> ToolError:
    """The node's refusal as a tool error a model can act on."""
    if isinstance(exc, DaemonNotRunning):
        return ToolError(f"{exc.message} (start the node with 'meshsyncd run')")
    if isinstance(exc, NotFound):
        return ToolError(f"no such memory: {exc.message}")
    return ToolError(f"{exc.code}: {exc.message}")


def build_server(socket: Path) -> MCPServer:
    """An MCP server whose tools act on the node at ``socket`` (connected per call)."""
    server: MCPServer = MCPServer("meshsyncd", instructions=INSTRUCTIONS)
    client = AsyncClient(socket)

    async def call(op: Any) -> Any:
        try:
            return await op
        except ClientError as exc:
            raise _tool_error(exc) from None

    @server.tool()
    async def remember(
        namespace: NamespaceArg,
        key: KeyArg,
        value: Annotated[
            Any,
            Field(description="The memory: a JSON object, list, number or text (<= 1 MiB)."),
        ],
        tier: TierArg = "episodic",
        priority: Annotated[
            PriorityName,
            Field(description="urgent/high reach the other nodes at once; low/background lazily."),
        ] = "normal",
    ) -> dict[str, Any]:
        """Save a memory under namespace/key (replacing what was there), replicated to every
        node of the mesh. Returns the version written."""
        written = await call(
            client.put(value, namespace=namespace, key=key, tier=tier, priority=priority)
        )
        return _written(written)

    @server.tool()
    async def recall(
        namespace: NamespaceArg, key: KeyArg, tier: TierArg = "episodic"
    ) -> dict[str, Any]:
        """Read one memory by namespace/key in a tier. Fails with 'no such memory' when
        there is none (then try search)."""
        return _item(await call(client.get(namespace=namespace, key=key, tier=tier)))

    @server.tool()
    async def list_memories(
        namespace: Annotated[
            str, Field(description="Namespace prefix ('agents/alden'); '' lists every memory.")
        ] = "",
        tier: TierArg = "episodic",
        limit: Annotated[int, Field(ge=1, le=1000)] = 50,
        after: Annotated[
            str | None, Field(description="The 'next' of the previous page, to continue.")
        ] = None,
    ) -> dict[str, Any]:
        """List the memories under a namespace prefix in one tier, by name, a page at a time
        ('next' is set when more follow)."""
        page = await call(client.list(namespace=namespace, tier=tier, limit=limit, after=after))
        return {"items": [_item(i) for i in page.items], "next": page.next}

    @server.tool()
    async def search(
        namespace: Annotated[
            str, Field(description="Namespace prefix to search under; '' searches everything.")
        ] = "",
        filter: Annotated[
            dict[str, Any] | None,
            Field(
                description="Fields the memory's JSON value must have, e.g. "
                '{"topic": "units"} or {"score": {"$gte": 3}} ($eq $ne $gt $gte $lt $lte).',
            ),
        ] = None,
        tiers: Annotated[
            list[TierName] | None, Field(description="Tiers to search (default: all).")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 20,
    ) -> dict[str, Any]:
        """Find memories under a namespace prefix whose JSON value matches a filter, across
        tiers. No free-text or semantic search: filter on value fields."""
        found: list[dict[str, Any]] = []
        for tier in tiers or ["working", "episodic", "semantic"]:
            after = None
            while len(found) < limit:
                page = await call(
                    client.list(namespace=namespace, tier=tier, limit=1000, after=after)
                )
                for item in page.items:
                    if filter and not (item.is_json and isinstance(item.value, dict)):
                        continue
                    try:
                        ok = matches(item.value, filter) if filter else True
                    except ValueError as exc:
                        raise ToolError(f"bad filter: {exc}") from None
                    if ok and len(found) < limit:
                        found.append(_item(item))
                after = page.next
                if after is None:
                    break
        return {"items": found, "truncated": len(found) >= limit}

    @server.tool()
    async def list_namespaces(
        prefix: Annotated[str, Field(description="Only namespaces under this prefix.")] = "",
        max_depth: Annotated[
            int | None, Field(ge=1, description="Fold deeper namespaces into their ancestor.")
        ] = None,
    ) -> dict[str, Any]:
        """The namespaces that hold memories, with how many each holds (per tier)."""
        rows = await call(client.namespaces(prefix=prefix, max_depth=max_depth))
        return {
            "namespaces": [
                {"namespace": "/".join(r.namespace), "items": r.items, "tiers": r.tiers}
                for r in rows
            ]
        }

    @server.tool()
    async def forget(
        namespace: NamespaceArg,
        key: KeyArg,
        tier: TierArg = "episodic",
        priority: PriorityName = "normal",
    ) -> dict[str, Any]:
        """Delete a memory on every node of the mesh. Fails with 'no such memory' when there
        is none."""
        written = await call(
            client.delete(namespace=namespace, key=key, tier=tier, priority=priority)
        )
        return _written(written)

    @server.tool()
    async def sync_now(
        timeout: Annotated[  # noqa: ASYNC109 (the daemon's barrier timeout, sent with it)
            float, Field(gt=0, le=60, description="Seconds to wait for the mesh.")
        ] = 5.0,
    ) -> dict[str, Any]:
        """Wait until every node reachable from here has this node's memories and this node
        has theirs. 'ok' is false, with the nodes named, when some could not be reached."""
        result = await call(client.sync(timeout=timeout))
        return {
            "ok": result.ok,
            "synced": list(result.synced),
            "failed": list(result.failed),
            "seconds": result.seconds,
        }

    @server.tool()
    async def conflicts(
        limit: Annotated[int, Field(ge=1, le=1000)] = 20,
        tier: TierName | None = None,
    ) -> dict[str, Any]:
        """Recent conflicts, newest first: two nodes wrote the same memory without seeing
        each other's write; the later write (winner) is what is stored."""
        rows = await call(client.conflicts(limit=limit, tier=tier))
        return {
            "conflicts": [
                {
                    "tier": c.tier.name.lower(),
                    "item_id": c.item_id,
                    "winner": {"timestamp_ns": c.winner.timestamp_ns, "origin": c.winner.origin},
                    "loser": {"timestamp_ns": c.loser.timestamp_ns, "origin": c.loser.origin},
                }
                for c in rows
            ]
        }

    @server.tool()
    async def history(
        namespace: NamespaceArg, key: KeyArg, tier: TierArg = "episodic"
    ) -> dict[str, Any]:
        """The last versions this node has seen of one memory, newest first: each with its
        op (insert, update, merge, delete), value, time and writing node; 'current' marks
        the one stored now. Losing concurrent writes are included. Fails with 'no such
        memory' when the node has none."""
        rows = await call(client.history(namespace=namespace, key=key, tier=tier))
        return {
            "namespace": namespace.strip("/"),
            "key": key,
            "tier": tier,
            "versions": [_version(v) for v in rows],
        }

    return server


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback address (the HTTP transport has no authentication).

    Raises:
        ValueError: any other address.
    """
    name = "127.0.0.1" if host == "localhost" else host
    try:
        if ipaddress.ip_address(name).is_loopback:
            return name
    except ValueError:
        pass
    raise ValueError(
        f"refusing to serve MCP over HTTP on {host}: only loopback (127.0.0.1, ::1), "
        "since the endpoint has no authentication"
    )
