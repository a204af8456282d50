"""The control-socket client: what local programs (agents, tools, the CLI) use.

Plain blocking ``socket``, no trio, so any program can call it from any thread. One
:class:`Client` holds one connection and sends one request at a time; :meth:`Client.watch`
opens a connection of its own, because a watching connection only streams events. The
protocol is described in ``docs/control.md``.

Example::

    from meshsyncd.client import Client
    from protocol import Priority, Tier

    with Client(Path("/run/meshsyncd/control.sock")) as c:
        c.put("the build is green", key="ci/status", tier=Tier.WORKING,
              priority=Priority.URGENT)
        print(c.get(key="ci/status", tier=Tier.WORKING)["value"])
        c.sync(timeout=2.0)          # wait until the connected peers have it
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import itertools
import json
import socket
from collections.abc import Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from protocol import MAX_PAYLOAD, Priority, Tier

from . import calls
from .calls import (
    ClientError,
    ConnectionLost,
    DaemonNotRunning,
    Namespace,
    NotFound,
    PermissionDenied,
    Unreachable,
    error_for,
)

if TYPE_CHECKING:
    from .aclient import AsyncClient

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionLost",
    "DaemonNotRunning",
    "NotFound",
    "PermissionDenied",
    "Unreachable",
]

MAX_RESPONSE = 64 << 20


def __getattr__(name: str) -> Any:
    """``AsyncClient`` and the typed results load on first use: they import anyio, which a
    program using only the blocking client (or ``meshsyncd put``) should not pay for."""
    if name == "AsyncClient":
        from .aclient import AsyncClient

        return AsyncClient
    if name in _RESULTS:
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_RESULTS = frozenset({"Change", "Conflict", "Item", "NamespaceInfo", "Page", "Version", "Written"})


def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonNotRunning(
            "daemon_not_running", f"daemon not running: no control socket at {path}"
        ) from exc
    except PermissionError as exc:
        sock.close()
        raise PermissionDenied(
            "permission_denied",
            f"permission denied on the control socket {path}: {exc.strerror or exc}",
        ) from exc
    except OSError as exc:
        sock.close()
        raise Unreachable("unavailable", f"cannot connect to {path}: {exc}") from exc
    return sock


class _Lines:
    """Newline-delimited JSON reads from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def read(self) -> dict[str, Any]:
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise ClientError("internal", f"daemon sent bad JSON: {exc}") from None
                if not isinstance(obj, dict):
                    raise ClientError("internal", "daemon sent a non-object line")
                return obj
            if len(self._buf) > MAX_RESPONSE:
                raise ClientError("internal", "daemon response line too long")
            start = len(self._buf)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                raise ClientError("timeout", "no answer from the daemon in time") from None
            except OSError as exc:
                raise ConnectionLost("unavailable", f"control connection failed: {exc}") from exc
            if not data:
                raise ConnectionLost("unavailable", "the daemon closed the control connection")
            self._buf += data


def _check(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        result = reply.get("result")
        return result if isinstance(result, dict) else {}
    err = reply.get("error") or {}
    raise error_for(str(err.get("code", "internal")), str(err.get("message", "failed")))


class Client:
    """A connection to a node's control socket (connects on first use).

    Raises (from every request method):
        DaemonNotRunning: no daemon on ``path``.
        PermissionDenied: the socket refuses this user.
        ClientError: the daemon refused the request (``code`` from docs/control.md), or
            the connection failed or timed out (``unavailable``, ``timeout``).
    """

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lines: _Lines | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._lines = None

    def request(
        self, op: str, params: dict[str, Any] | None = None, *, deadline: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return its ``result``; ``None`` parameters are left out.

        ``deadline`` overrides the client's timeout for this answer (``sync`` waits long).
        """
        if self._sock is None:
            self._sock = _connect(self.path, self.timeout)
            self._lines = _Lines(self._sock)
        assert self._lines is not None
        req_id = next(self._ids)
        body = {"id": req_id, "op": op}
        body.update({k: v for k, v in (params or {}).items() if v is not None})
        try:
            self._sock.settimeout(self.timeout if deadline is None else deadline)
            self._sock.sendall(json.dumps(body, separators=(",", ":")).encode() + b"\n")
            while True:
                reply = self._lines.read()
                if reply.get("id") in (req_id, None):
                    break
        except OSError as exc:
            self.close()
            raise ConnectionLost("unavailable", f"control connection failed: {exc}") from exc
        except ClientError:
            self.close()
            raise
        return _check(reply)

    # -- data -------------------------------------------------------------------------------

    def put(
        self,
        value: bytes | str,
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        priority: Priority | int | str = Priority.NORMAL,
        item_id: bytes | str | None = None,
        key: str | None = None,
        namespace: Namespace = None,
        if_version: str | tuple[int, int] | None = None,
        if_absent: bool = False,
    ) -> dict[str, Any]:
        """Write a whole value (INSERT if the item is absent, else UPDATE); a random id
        unless ``item_id`` or ``key`` (in ``namespace``: ``"a/b"`` or ``("a", "b")``, default
        the root) is given. Returns ``item_id``, ``timestamp_ns``, ``origin``, ``op``, and
        for a named item ``namespace`` and ``key``.

        Raises:
            ClientError: ``too_large`` (checked before sending), ``unknown_tier``, ...
        """
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(data) > MAX_PAYLOAD:
            raise ClientError(
                "too_large", f"value is {len(data)} bytes; the limit is {MAX_PAYLOAD} (1 MiB)"
            )
        if isinstance(value, str):
            field = {"value": value}
        else:
            field = {"value_b64": base64.b64encode(data).decode("ascii")}
        params = calls.write(
            item_id, key, tier, namespace, priority, if_version, if_absent, **field
        )
        return self.request("put", params)

    def get(
        self,
        item_id: bytes | str | None = None,
        *,
        key: str | None = None,
        tier: Tier | int | str = Tier.EPISODIC,
        include_deleted: bool = False,
        namespace: Namespace = None,
        snapshot: str | None = None,
    ) -> dict[str, Any]:
        """The stored item: ``value`` (if UTF-8), ``value_json`` (if that is JSON),
        ``value_b64``, ``timestamp_ns``, ``namespace`` and ``key`` (if named), ...
        With ``snapshot``: the item as it was when that snapshot was made.

        Raises:
            NotFound: absent or deleted (a ``KeyError``, and a ``ClientError`` with code
                ``not_found``).
        """
        params = calls.target(item_id, key, tier, namespace)
        params.update(include_deleted=include_deleted or None, snapshot=snapshot)
        return _parsed(self.request("get", params))

    def get_bytes(self, item_id: bytes | str | None = None, **kw: Any) -> bytes:
        """Just the value's bytes."""
        return base64.b64decode(str(self.get(item_id, **kw)["value_b64"]))

    def delete(
        self,
        item_id: bytes | str | None = None,
        *,
        key: str | None = None,
        tier: Tier | int | str = Tier.EPISODIC,
        priority: Priority | int | str = Priority.NORMAL,
        namespace: Namespace = None,
        if_version: str | tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Write a tombstone. Raises :class:`NotFound` if there is no live item."""
        params = calls.write(item_id, key, tier, namespace, priority, if_version)
        return self.request("delete", params)

    def merge(
        self,
        fields: dict[str, Any],
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        priority: Priority | int | str = Priority.NORMAL,
        item_id: bytes | str | None = None,
        key: str | None = None,
        namespace: Namespace = None,
        if_version: str | tuple[int, int] | None = None,
        if_absent: bool = False,
    ) -> dict[str, Any]:
        """Per-field last-write-wins update of a JSON object item (created if needed)."""
        if not isinstance(fields, dict):
            raise ClientError("bad_request", "merge fields must be a dict")
        params = calls.write(
            item_id, key, tier, namespace, priority, if_version, if_absent, fields=fields
        )
        return self.request("merge", params)

    def list(
        self,
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        limit: int = 100,
        after: bytes | str | None = None,
        include_deleted: bool = False,
        values: bool = True,
        namespace: Namespace = None,
        snapshot: str | None = None,
    ) -> dict[str, Any]:
        """One page of items: ``{"items": [...], "next": cursor or None}``.

        With ``snapshot``: the live items of that snapshot, in id order.

        Without ``namespace``: every item in id order, ``after`` an item id. With it: the
        named items under that namespace prefix (``""``: all named items) in name order,
        ``after`` the ``next`` of the previous page (stable while writes go on).
        """
        params = calls.list_page(tier, limit, after, include_deleted, values, namespace, snapshot)
        page = self.request("list", params)
        page["items"] = [_parsed(item) for item in page.get("items", [])]
        return page

    def namespaces(
        self,
        *,
        prefix: Namespace = None,
        max_depth: int | None = None,
        tier: Tier | int | str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Namespaces under ``prefix`` with live item counts: ``[{"namespace", "items",
        "tiers": {tier: n}}]``; ``max_depth`` folds deeper ones into their ancestor."""
        params = calls.namespaces(prefix, max_depth, tier)
        rows = self.request("namespaces", params).get("namespaces", [])
        return rows if isinstance(rows, builtins.list) else []

    # -- node -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def check(self) -> dict[str, Any]:
        """Per tier: this node's digest, each connected peer's, and which nodes differ."""
        return self.request("check")

    def peers(self) -> builtins.list[dict[str, Any]]:
        rows = self.request("peers").get("peers", [])
        return rows if isinstance(rows, builtins.list) else []

    def vectors(self) -> dict[str, Any]:
        return self.request("vectors")

    def conflicts(
        self,
        *,
        limit: int = 100,
        tier: Tier | int | str | None = None,
        namespace: str | None = None,
        since_ns: int | None = None,
        values: bool = False,
        open_only: bool = False,
    ) -> builtins.list[dict[str, Any]]:
        """Logged conflicts (SPEC.md section 2.2), newest first: name or id, both versions'
        keys and ops, with ``values`` their values, and ``resolved_by`` once resolved."""
        params = calls.conflicts(limit, tier, namespace, since_ns, values, open_only)
        rows = self.request("conflicts", params).get("conflicts", [])
        return rows if isinstance(rows, builtins.list) else []

    def history(
        self,
        item_id: bytes | str | None = None,
        *,
        tier: Tier | int | str = Tier.EPISODIC,
        key: str | None = None,
        namespace: Namespace = None,
    ) -> builtins.list[dict[str, Any]]:
        """The last versions this node has seen of an item (winners and losers), newest
        first: ``version``, ``timestamp_ns``, ``origin``, ``op``, ``current`` and the value."""
        params = calls.target(item_id, key, tier, namespace)
        rows = self.request("history", params).get("versions", [])
        return rows if isinstance(rows, builtins.list) else []

    def snapshot_create(
        self, name: str, *, namespace: str | None = None, ttl: float = 3600.0
    ) -> dict[str, Any]:
        """Freeze what this node holds now (under ``namespace``) as snapshot ``name`` for
        ``ttl`` seconds: ``name``, ``items``, ``bytes``, ``expires_ns``. Writes and
        replication go on meanwhile.

        Raises:
            ClientError: a name in use or malformed (``bad_request``), too large.
        """
        return self.request("snapshot_create", {"name": name, "namespace": namespace, "ttl": ttl})

    def snapshots(self) -> builtins.list[dict[str, Any]]:
        """Live snapshots of this node, by name, with their size and expiry."""
        rows = self.request("snapshot_list").get("snapshots", [])
        return rows if isinstance(rows, builtins.list) else []

    def snapshot_drop(self, name: str) -> dict[str, Any]:
        return self.request("snapshot_drop", {"name": name})

    def freeze(self, namespace: str, seconds: float) -> dict[str, Any]:
        """Refuse local writes under ``namespace`` (``""``: every write) on this node for
        ``seconds`` (code ``frozen``); versions from peers still apply."""
        return self.request("freeze", {"namespace": namespace, "seconds": seconds})

    def unfreeze(self, namespace: str) -> dict[str, Any]:
        """End a freeze early (``not_found`` if there is none on exactly that namespace)."""
        return self.request("unfreeze", {"namespace": namespace})

    def resolve_conflict(
        self, conflict_id: int, *, keep: str | None = None, value: bytes | str | None = None
    ) -> dict[str, Any]:
        """Resolve a conflict: keep ``"winner"`` or ``"loser"``, or write ``value``. The
        resolution spreads like any write and marks the entry resolved where it arrives.

        Raises:
            ClientError: ``not_found`` (unknown id), ``bad_request`` (already resolved,
                dropped from the log, neither or both of keep and value).
        """
        params: dict[str, Any] = {"conflict": conflict_id}
        if keep is not None:
            params["keep"] = keep
        if isinstance(value, str):
            params["value"] = value
        elif value is not None:
            params["value_b64"] = base64.b64encode(bytes(value)).decode("ascii")
        return self.request("conflicts_resolve", params)

    def sync(self, peers: builtins.list[str] | None = None, timeout: float = 2.0) -> dict[str, Any]:
        """Block until a bidirectional sync with ``peers`` (default: all connected) is
        applied, or ``timeout`` seconds pass: ``{"synced": [...], "failed": [...]}``."""
        body = calls.sync(peers, timeout)
        return self.request("sync", body, deadline=max(self.timeout, timeout + 10.0))

    def watch(
        self,
        tier: Tier | int | str | None = None,
        *,
        timeout: float | None = None,
        since: str | int | None = None,
        namespace: Namespace = None,
        values: bool = False,
        started: Callable[[dict[str, Any]], None] | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Yield change events (``{"event": "change", "tier", "item_id", "op", "origin",
        "timestamp_ns", "source"}``) on a connection of its own until the caller stops.

        With ``since`` (a ``cursor`` of an earlier event, ``"now"``), ``namespace`` or
        ``values`` the watch is resumable: it first replays every change after ``since``
        from the store, then follows live, and each event also has ``seq``, ``cursor``,
        ``namespace``/``key`` (named items) and, with ``values``, the value. Keep the last
        ``cursor`` and pass it back to miss nothing. ``started`` gets the first reply
        (its ``cursor`` is where the watch starts). ``timeout`` bounds the wait for each
        event (``None``: wait forever).

        Raises:
            ClientError: ``unavailable`` when the daemon drops this watcher for being slow
                or closes the connection; ``timeout`` when no event came in time;
                ``bad_request`` for a ``since`` the node cannot resume from (re-list).
        """
        sock = _connect(self.path, self.timeout)
        try:
            lines = _Lines(sock)
            # Without since, namespace or values: the plain live watch (no replay, no seq).
            if since is not None or namespace is not None or values:
                params = calls.watch(tier, since or "now", namespace, values)
            else:
                params = {"tier": None if tier is None else calls.tier_name(tier)}
            body = {"id": 1, "op": "watch"} | {k: v for k, v in params.items() if v is not None}
            sock.sendall(json.dumps(body).encode() + b"\n")
            first = _check(lines.read())
            if started is not None:
                started(first.get("result", {}))
            sock.settimeout(timeout)
            while True:
                event = lines.read()
                if event.get("event") is None:
                    _check(event)
                    continue
                yield _parsed(event)
        finally:
            sock.close()


def _parsed(item: dict[str, Any]) -> dict[str, Any]:
    """Add ``value_json``, the value parsed, when the value is JSON text.

    A page by namespace carries a UTF-8 value once, as ``value`` (the daemon saves the
    bytes and the time on its writer thread); ``value_b64`` is added back here, so an item
    of every page has the shape ``get`` returns.
    """
    text = item.get("value")
    if isinstance(text, str):
        if "value_b64" not in item:
            raw = text.encode("utf-8", "surrogatepass")
            item["value_b64"] = base64.b64encode(raw).decode("ascii")
        with contextlib.suppress(ValueError, RecursionError):
            item["value_json"] = json.loads(text)
    return item
