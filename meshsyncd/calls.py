"""The parameters of each control request, built once for both clients.

Why a module of its own: :class:`meshsyncd.client.Client` (blocking) and
:class:`meshsyncd.aclient.AsyncClient` send the same requests (``docs/control.md``) and
differ only in how they wait and what they return. Each request's fields, the checks made
before anything is sent (an id that is not 32 hex digits, a namespace without a key, an
unknown tier) and the errors both raise live here, so that the two cannot drift apart.
``None`` fields are left out of the request by both clients.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from protocol import Priority, Tier

from .control.proto import ControlError, parse_priority, parse_tier

__all__ = [
    "ClientError",
    "ConnectionLost",
    "DaemonNotRunning",
    "Namespace",
    "NotFound",
    "PermissionDenied",
    "Unreachable",
    "condition",
    "conflicts",
    "error_for",
    "id_hex",
    "list_page",
    "namespace_param",
    "namespaces",
    "prio_name",
    "sync",
    "target",
    "tier_name",
    "watch",
    "write",
]

Namespace = str | Sequence[str] | None  # "agents/alden" or ("agents", "alden")
TierLike = Tier | int | str
PrioLike = Priority | int | str


class ClientError(Exception):
    """A refused request or a broken connection; ``code`` says which (see docs/control.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Unreachable(ClientError):
    """No daemon could be reached on the control socket (the CLI's exit status 3)."""


class DaemonNotRunning(Unreachable):
    """No daemon listens on the control socket (file missing or connection refused)."""


class PermissionDenied(Unreachable):
    """The control socket exists but this user may not connect to it."""


class NotFound(ClientError, KeyError):
    """The item does not exist, or is deleted (code ``not_found``).

    The one missing-item convention of every client (``Client``, ``AsyncClient``): ``get``
    and ``delete`` of an absent item raise it. It is a :class:`KeyError` so that code
    written for mappings (``except KeyError``) works, and a :class:`ClientError` with code
    ``not_found`` so that code written before it existed keeps working.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class ConnectionLost(ClientError):
    """The control connection broke or the daemon closed it (code ``unavailable``).

    A request in flight when it happened may or may not have been applied; the client
    reconnects on the next request.
    """


def error_for(code: str, message: str) -> ClientError:
    """The most specific ``ClientError`` for a daemon's error code."""
    return NotFound(code, message) if code == "not_found" else ClientError(code, message)


def id_hex(item_id: bytes | str | None) -> str | None:
    if item_id is None:
        return None
    if isinstance(item_id, bytes):
        if len(item_id) != 16:
            raise ClientError("bad_request", "an item id is 16 bytes")
        return item_id.hex()
    text = item_id.strip().lower()
    if len(text) != 32 or any(ch not in "0123456789abcdef" for ch in text):
        raise ClientError("bad_request", f"bad item id {item_id!r}: expected 32 hex digits")
    return text


def tier_name(tier: TierLike) -> str:
    try:
        return parse_tier(tier).name.lower()
    except ControlError as exc:
        raise ClientError(exc.code, exc.message) from None


def prio_name(priority: PrioLike) -> str:
    try:
        return parse_priority(priority).name.lower()
    except ControlError as exc:
        raise ClientError(exc.code, exc.message) from None


def namespace_param(namespace: Namespace) -> str | builtins.list[str] | None:
    """A namespace for the socket: text as given, a tuple of labels as a list."""
    if namespace is None or isinstance(namespace, str):
        return namespace
    return builtins.list(namespace)


def target(
    item_id: bytes | str | None, key: str | None, tier: TierLike, namespace: Namespace = None
) -> dict[str, Any]:
    """Which item a request is about: an id, or a name (``key`` in ``namespace``)."""
    if item_id is not None and key is not None:
        raise ClientError("bad_request", "give either item_id or key, not both")
    if namespace is not None and key is None:
        raise ClientError("bad_request", "a namespace needs a key")
    return {
        "tier": tier_name(tier),
        "item_id": id_hex(item_id),
        "key": key,
        "namespace": namespace_param(namespace),
    }


def condition(if_version: Any, if_absent: bool) -> dict[str, Any]:
    """Request fields of a conditional write (``conditions.py``): succeed only if the item's
    current version on the node is ``if_version`` (``"TS:ORIGIN"`` as ``get`` returns it in
    ``version``, a ``(timestamp_ns, origin)`` pair, or a ``results.Version``), or with
    ``if_absent`` it has no value. A failed condition raises ``ClientError`` with code
    ``precondition_failed``."""
    out: dict[str, Any] = {}
    if isinstance(if_version, tuple):
        out["if_version"] = f"{if_version[0]}:{if_version[1]:016x}"
    elif isinstance(if_version, str):
        out["if_version"] = if_version
    elif if_version is not None:  # a results.Version (AsyncClient's Item.version)
        out["if_version"] = f"{if_version.timestamp_ns}:{if_version.origin}"
    if if_absent:
        out["if_absent"] = True
    return out


def write(
    item_id: bytes | str | None,
    key: str | None,
    tier: TierLike,
    namespace: Namespace,
    priority: PrioLike,
    if_version: Any = None,
    if_absent: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A ``put``, ``delete`` or ``merge``: the target, its priority, its condition, and
    the op's own ``fields`` (the value, or the fields to merge)."""
    params = target(item_id, key, tier, namespace)
    params.update(fields, priority=prio_name(priority))
    params.update(condition(if_version, if_absent))
    return params


def list_page(
    tier: TierLike,
    limit: int,
    after: bytes | str | None,
    include_deleted: bool,
    values: bool,
    namespace: Namespace,
    snapshot: str | None,
) -> dict[str, Any]:
    """One page: ``after`` is an item id in id order, or the ``next`` of a named page."""
    return {
        "tier": tier_name(tier),
        "limit": limit,
        "after": id_hex(after) if namespace is None else after,
        "include_deleted": include_deleted or None,
        "values": values,
        "namespace": namespace_param(namespace),
        "snapshot": snapshot,
    }


def namespaces(prefix: Namespace, max_depth: int | None, tier: TierLike | None) -> dict[str, Any]:
    return {
        "prefix": namespace_param(prefix),
        "max_depth": max_depth,
        "tier": None if tier is None else tier_name(tier),
    }


def conflicts(
    limit: int,
    tier: TierLike | None,
    namespace: str | None,
    since_ns: int | None,
    values: bool,
    open_only: bool,
) -> dict[str, Any]:
    return {
        "limit": limit,
        "tier": None if tier is None else tier_name(tier),
        "namespace": namespace,
        "since_ns": since_ns,
        "values": values,
        "open": open_only,
    }


def sync(peers: Sequence[str] | None, timeout: float) -> dict[str, Any]:
    """The mesh-wide barrier, or two-node syncs with ``peers``."""
    return {"timeout": timeout, "peers": builtins.list(peers) if peers else None}


def watch(
    tier: TierLike | None, since: str | int | None, namespace: Namespace, values: bool
) -> dict[str, Any]:
    """A resumable watch (``since`` defaults to now)."""
    return {
        "tier": None if tier is None else tier_name(tier),
        "since": "now" if since is None else since,
        "namespace": namespace_param(namespace),
        "values": values,
    }
