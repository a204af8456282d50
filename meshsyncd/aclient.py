"""The async control-socket client, for agents written on asyncio or on trio.

It runs on anyio, which gives one implementation for both event loops (an agent framework
picks the loop, not us), is pure Python and well maintained, and is what the MCP SDK runs
on too. Same operations as the blocking :class:`meshsyncd.client.Client`, the same
requests on the wire (``docs/control.md``), typed results (``meshsyncd/results.py``).

- A missing item raises :class:`NotFound` (a ``KeyError``), from ``get`` and ``delete``,
  as the blocking client does.
- A broken connection raises :class:`ConnectionLost` naming the socket; a request in
  flight may or may not have been applied (a write is durable once acknowledged, and
  nothing is retried behind the caller's back). The next request reconnects.
- :meth:`AsyncClient.watch` is an async iterator over the resumable change feed: when the
  connection breaks (a daemon restart), it reconnects and resumes after the last
  ``cursor`` it yielded, so the caller sees every change once, with no gap.

Example (asyncio or trio)::

    async with AsyncClient(Path("node-a/control.sock")) as c:
        await c.put({"units": "metric"}, namespace=("agents", "alden"), key="prefs")
        item = await c.get(namespace=("agents", "alden"), key="prefs")
        print(item.value["units"], item.version, item.updated_at)
"""

from __future__ import annotations

import base64
import builtins
import itertools
import json
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from protocol import MAX_PAYLOAD, Priority, Tier

from . import calls
from .aconn import Conn, connect, result_of
from .calls import ClientError, Namespace
from .client import ConnectionLost, DaemonNotRunning
from .results import Change, Conflict, Item, NamespaceInfo, Page, SyncResult, Version, Written

IfVersion = Version | str | tuple[int, int] | None

__all__ = ["AsyncClient", "Watch", "encode_value"]


def encode_value(value: Any) -> dict[str, str]:
    """Request fields for a value: text as is, bytes as base64, anything else as JSON.

    Raises:
        ClientError: ``bad_request`` when the value is not JSON-serialisable (a set, an
            object, NaN), ``too_large`` over 1 MiB; both before anything is sent.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out = {"value_b64": base64.b64encode(data).decode("ascii")}
    else:
        if not isinstance(value, str):
            try:
                value = json.dumps(value, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as exc:
                raise ClientError("bad_request", f"value is not JSON-serialisable: {exc}") from None
        data = value.encode("utf-8", "surrogatepass")
        out = {"value": value}
    if len(data) > MAX_PAYLOAD:
        raise ClientError(
            "too_large", f"value is {len(data)} bytes; the limit is {MAX_PAYLOAD} (1 MiB)"
        )
    return out


class AsyncClient:
    """A connection to a node's control socket (connects on first use), for asyncio or trio.

    Requests from concurrent tasks take turns on the one connection. Use it as an async
    context manager, or call :meth:`aclose`.

    Raises (from every request method):
        DaemonNotRunning: no daemon on ``path``.
        PermissionDenied: the socket refuses this user.
        NotFound: ``get``/``delete`` of an absent or deleted item.
        ConnectionLost: the connection broke while the request was out.
        ClientError: the daemon refused the request (``code`` from docs/control.md) or
            did not answer within ``timeout`` seconds (``timeout``).
    """

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._conn: Conn | None = None
        self._lock = anyio.Lock()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    async def request(
        self, op: str, params: dict[str, Any] | None = None, *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return its ``result``; ``None`` parameters are left out.

        ``deadline`` overrides the client's timeout for this answer (``sync`` waits long).
        """
        body: dict[str, Any] = {"op": op}
        body.update({k: v for k, v in (params or {}).items() if v is not None})
        async with self._lock:
            if self._conn is None:
                self._conn = Conn(self.path, await connect(self.path))
            conn = self._conn
            body["id"] = req_id = next(self._ids)
            try:
                with anyio.fail_after(self.timeout if deadline is None else deadline):
                    await conn.send(body)
                    while True:
                        reply = await conn.read()
                        if reply.get("id") in (req_id, None):
                            break
            except TimeoutError:
                await self._drop(conn)
                raise ClientError("timeout", "no answer from the daemon in time") from None
            except BaseException:  # lost, cancelled: the connection's state is unknown
                await self._drop(conn)
                raise
        return result_of(reply)

    async def _drop(self, conn: Conn) -> None:
        if self._conn is conn:
            self._conn = None
        await conn.aclose()

    # -- data -------------------------------------------------------------------------------

    async def put(
        self,
        value: Any,
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        priority: Priority | int | str = Priority.NORMAL,
        item_id: bytes | str | None = None,
        key: str | None = None,
        namespace: Namespace = None,
        if_version: IfVersion = None,
        if_absent: bool = False,
    ) -> Written:
        """Write a whole value: ``str`` as its UTF-8 text, ``bytes`` as they are, anything
        else as JSON (``{"units": "metric"}``). INSERT if the item is absent, else UPDATE;
        a random id unless ``item_id`` or ``key`` (in ``namespace``) is given. Only if the
        current version is ``if_version`` (an ``item.version``), or ``if_absent``.

        Raises:
            ClientError: ``bad_request`` (not JSON-serialisable, a bad name), ``too_large``
                (checked before sending), ``unknown_tier``, ``precondition_failed``, ``frozen``.
        """
        params = calls.write(
            item_id, key, tier, namespace, priority, if_version, if_absent, **encode_value(value)
        )
        return Written.of(await self.request("put", params))

    async def get(
        self,
        item_id: bytes | str | None = None,
        *,
        key: str | None = None,
        tier: Tier | int | str = Tier.EPISODIC,
        include_deleted: bool = False,
        namespace: Namespace = None,
        snapshot: str | None = None,
    ) -> Item:
        """The stored item (with ``snapshot``: as it was when that snapshot was made).

        Raises:
            NotFound: absent, or deleted (unless ``include_deleted``).
        """
        params = calls.target(item_id, key, tier, namespace)
        params.update(include_deleted=include_deleted or None, snapshot=snapshot)
        return Item.of(await self.request("get", params))

    async def delete(
        self,
        item_id: bytes | str | None = None,
        *,
        key: str | None = None,
        tier: Tier | int | str = Tier.EPISODIC,
        priority: Priority | int | str = Priority.NORMAL,
        namespace: Namespace = None,
        if_version: IfVersion = None,
    ) -> Written:
        """Write a tombstone (only if the current version is ``if_version``, if given).

        Raises:
            NotFound: there is no live item.
        """
        params = calls.write(item_id, key, tier, namespace, priority, if_version)
        return Written.of(await self.request("delete", params))

    async def merge(
        self,
        fields: dict[str, Any],
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        priority: Priority | int | str = Priority.NORMAL,
        item_id: bytes | str | None = None,
        key: str | None = None,
        namespace: Namespace = None,
        if_version: IfVersion = None,
        if_absent: bool = False,
    ) -> Written:
        """Per-field last-write-wins update of a JSON object item (created if needed),
        conditional like :meth:`put`.

        Raises:
            ClientError: ``bad_request`` if ``fields`` is not a dict of JSON values.
        """
        if not isinstance(fields, dict):
            raise ClientError("bad_request", "merge fields must be a dict")
        encode_value(fields)  # JSON-serialisable and within the limit, before sending
        params = calls.write(
            item_id, key, tier, namespace, priority, if_version, if_absent, fields=fields
        )
        return Written.of(await self.request("merge", params))

    async def list(
        self,
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        limit: int = 100,
        after: bytes | str | None = None,
        include_deleted: bool = False,
        values: bool = True,
        namespace: Namespace = None,
        snapshot: str | None = None,
    ) -> Page:
        """One page of items; pass ``page.next`` as ``after`` for the next one.

        Without ``namespace``: every item in id order. With it: the named items under that
        namespace prefix (``""`` or ``()``: all named items) in name order, stable while
        writes go on.
        """
        params = calls.list_page(tier, limit, after, include_deleted, values, namespace, snapshot)
        return Page.of(await self.request("list", params))

    async def namespaces(
        self,
        *,
        prefix: Namespace = None,
        max_depth: int | None = None,
        tier: Tier | int | str | None = None,
    ) -> builtins.list[NamespaceInfo]:
        """Namespaces under ``prefix`` with live item counts, in name order; ``max_depth``
        folds deeper ones into their ancestor."""
        params = calls.namespaces(prefix, max_depth, tier)
        rows = (await self.request("namespaces", params)).get("namespaces", [])
        return [NamespaceInfo.of(r) for r in rows]

    # -- node -------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await self.request("status")

    async def peers(self) -> builtins.list[dict[str, Any]]:
        rows = (await self.request("peers")).get("peers", [])
        return rows if isinstance(rows, builtins.list) else []

    async def vectors(self) -> dict[str, Any]:
        return await self.request("vectors")

    async def conflicts(
        self,
        *,
        limit: int = 100,
        tier: Tier | int | str | None = None,
        namespace: str | None = None,
        since_ns: int | None = None,
        values: bool = False,
        open_only: bool = False,
    ) -> builtins.list[Conflict]:
        """Logged conflicts, newest first (two writers that had not seen each other); with
        ``values`` both values, with ``open_only`` the unresolved ones only."""
        params = calls.conflicts(limit, tier, namespace, since_ns, values, open_only)
        rows = (await self.request("conflicts", params)).get("conflicts", [])
        return [Conflict.of(r) for r in rows]

    async def resolve_conflict(
        self, conflict_id: int, *, keep: str | None = None, value: Any = None
    ) -> dict[str, Any]:
        """Keep ``"winner"`` or ``"loser"``, or write ``value``, on top of both versions."""
        params: dict[str, Any] = {"conflict": conflict_id, "keep": keep}
        if value is not None:
            params.update(encode_value(value))
        return await self.request("conflicts_resolve", params)

    async def history(
        self,
        item_id: bytes | str | None = None,
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        key: str | None = None,
        namespace: Namespace = None,
    ) -> builtins.list[dict[str, Any]]:
        """The last versions seen here of an item (winners and losers), newest first."""
        params = calls.target(item_id, key, tier, namespace)
        rows = (await self.request("history", params)).get("versions", [])
        return rows if isinstance(rows, builtins.list) else []

    async def freeze(self, namespace: str, seconds: float) -> dict[str, Any]:
        """Refuse local writes under ``namespace`` here for ``seconds`` (code ``frozen``)."""
        return await self.request("freeze", {"namespace": namespace, "seconds": seconds})

    async def unfreeze(self, namespace: str) -> dict[str, Any]:
        return await self.request("unfreeze", {"namespace": namespace})

    async def snapshot_create(
        self, name: str, *, namespace: str | None = None, ttl: float = 3600
    ) -> dict[str, Any]:
        """Freeze what this node holds now (under ``namespace``) as snapshot ``name``."""
        params = {"name": name, "namespace": namespace, "ttl": ttl}
        return await self.request("snapshot_create", params)

    async def snapshots(self) -> builtins.list[dict[str, Any]]:
        rows = (await self.request("snapshot_list")).get("snapshots", [])
        return rows if isinstance(rows, builtins.list) else []

    async def snapshot_drop(self, name: str) -> dict[str, Any]:
        return await self.request("snapshot_drop", {"name": name})

    async def sync(
        self,
        peers: builtins.list[str] | None = None,
        timeout: float = 2.0,  # noqa: ASYNC109 (sent to the daemon, which enforces it)
    ) -> SyncResult:
        """The mesh-wide barrier (default) or two-node syncs with ``peers``; see
        ``Client.sync``. ``result.ok`` is false when some node was not covered."""
        body = calls.sync(peers, timeout)
        reply = await self.request("sync", body, deadline=max(self.timeout, timeout + 10.0))
        return SyncResult.of(reply)

    def watch(
        self,
        *,
        tier: Tier | int | str | None = None,
        since: str | int | None = None,
        namespace: Namespace = None,
        values: bool = False,
        reconnect_for: float = 30.0,
    ) -> Watch:
        """The resumable change feed as an async iterator of :class:`Change` events, on a
        connection of its own::

            async with client.watch(namespace="agents", values=True) as feed:
                async for change in feed:
                    save(change.cursor)

        The feed starts when the ``async with`` is entered (without it: at the first
        iteration). ``since``: a ``cursor`` of an earlier event (default: now). When the connection
        breaks, the watch reconnects for up to ``reconnect_for`` seconds and resumes after
        the last event it yielded.

        Raises (while iterating):
            ConnectionLost: the daemon did not come back within ``reconnect_for``.
            ClientError: ``bad_request`` for a ``since`` the node cannot resume from
                (re-list, then watch again).
        """
        return Watch(self.path, calls.watch(tier, since, namespace, values), reconnect_for)


class Watch:
    """An open resumable watch (see :meth:`AsyncClient.watch`).

    ``cursor`` is the position after the last event yielded (before any: where the watch
    started, once it has); pass it as ``since`` to a later watch to continue from there.
    """

    def __init__(self, path: Path, params: dict[str, Any], reconnect_for: float) -> None:
        self.path = path
        self.params = params
        self.reconnect_for = reconnect_for
        self.cursor: str | None = None
        self.reconnects = 0
        self._conn: Conn | None = None
        self._closed = False

    async def __aenter__(self) -> Watch:
        """Start the feed now (``since`` "now" means now, not at the first iteration)."""
        if self._conn is None and not self._closed:
            await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Watch:
        return self

    async def aclose(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    async def __anext__(self) -> Change:
        if self._closed:
            raise StopAsyncIteration
        while True:
            if self._conn is None:
                await self._open()
            assert self._conn is not None
            try:
                line = await self._conn.read()
            except ConnectionLost:
                await self._conn.aclose()
                self._conn = None
                self.reconnects += 1
                continue
            if line.get("event") is None:
                result_of(line)  # a final error line (e.g. unavailable) raises here
                continue
            change = Change.of(line)
            self.cursor = change.cursor
            return change

    async def _open(self) -> None:
        """Connect (retrying while the daemon restarts) and start the feed at ``cursor``."""
        delay = 0.02
        last = ClientError("timeout", "no answer from the daemon")
        with anyio.move_on_after(self.reconnect_for) as scope:
            while True:
                try:
                    conn = Conn(self.path, await connect(self.path))
                except (DaemonNotRunning, ClientError) as exc:
                    if self.reconnects == 0 and self.cursor is None:
                        raise  # the first connection: say so at once
                    last = exc
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                params = dict(self.params)
                if self.cursor is not None:
                    params["since"] = self.cursor
                body = {"id": 1, "op": "watch"}
                body.update({k: v for k, v in params.items() if v is not None})
                try:
                    await conn.send(body)
                    first = result_of(await conn.read())
                except ConnectionLost as exc:
                    await conn.aclose()
                    last = exc
                    continue
                except BaseException:
                    await conn.aclose()
                    raise
                if self.cursor is None:
                    self.cursor = str(first.get("cursor", "")) or None
                self._conn = conn
                return
        assert scope.cancelled_caught
        raise ConnectionLost(
            "unavailable",
            f"lost the watch on {self.path} and the daemon did not come back within "
            f"{self.reconnect_for} s ({last.message}); resume with since={self.cursor!r}",
        )
