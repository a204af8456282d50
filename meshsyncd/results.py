"""Typed results of the control socket, for :class:`meshsyncd.client.AsyncClient` and the
agent adapters (``meshsyncd.langgraph``, ``meshsyncd mcp``).

The socket answers with JSON objects (``docs/control.md``); these frozen dataclasses are
those answers with their types restored, so an agent gets a namespace as a tuple, a value
parsed when it is JSON, the conflict key as one comparable :class:`Version`, and
timestamps as ``datetime``. They are built only from what a daemon sent; a field the
daemon did not send is ``None`` rather than a guess. Pure: no I/O, no anyio, no trio.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from protocol import SEPARATOR, Tier

__all__ = [
    "Change",
    "Conflict",
    "Item",
    "NamespaceInfo",
    "Page",
    "SyncResult",
    "Version",
    "Written",
    "namespace_tuple",
]


def namespace_tuple(text: Any) -> tuple[str, ...] | None:
    """``"agents/alden"`` -> ``("agents", "alden")``; ``""`` -> ``()``; None for nameless."""
    if not isinstance(text, str):
        return None
    return tuple(text.split(SEPARATOR)) if text else ()


def _tier(value: Any) -> Tier:
    for tier in Tier:
        if tier.name.lower() == value:
            return tier
    raise ValueError(f"daemon sent unknown tier {value!r}")


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """The conflict key of a version: ``(timestamp_ns, origin)``; the greater one wins.

    ``origin`` is the writer's short node id (16 hex digits); comparing two versions
    compares what the daemon compares (the ids have equal length, so text order is
    numeric order).
    """

    timestamp_ns: int
    origin: str

    @property
    def at(self) -> datetime:
        """The hybrid-logical-clock timestamp as an aware UTC datetime (microseconds)."""
        return datetime.fromtimestamp(self.timestamp_ns / 1e9, tz=UTC)

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Version:
        return cls(int(obj["timestamp_ns"]), str(obj["origin"]))


def _value(obj: dict[str, Any]) -> tuple[bytes | None, Any, bool]:
    """(raw bytes, value, is_json) of a result carrying ``value_b64`` and/or ``value``.

    ``get`` sends both (``value`` only for UTF-8); a ``list`` page sends the value once:
    ``value`` when it is UTF-8 (its bytes are the text's UTF-8), else ``value_b64``.
    """
    b64, text = obj.get("value_b64"), obj.get("value")
    if b64 is None:
        if not isinstance(text, str):
            return None, None, False
        raw = text.encode("utf-8", "surrogatepass")
    else:
        try:
            raw = base64.b64decode(str(b64))
        except (binascii.Error, ValueError):
            raw = b""
    if not isinstance(text, str):
        return raw, raw, False
    with contextlib.suppress(ValueError, RecursionError):
        return raw, json.loads(text), True
    return raw, text, False


@dataclass(frozen=True, slots=True)
class Item:
    """A stored item as ``get``, ``list`` and ``namespaces`` see it.

    ``value`` is the parsed JSON when the stored bytes are JSON text, else the text when
    they are UTF-8, else the bytes; ``is_json`` says which, and ``raw`` is always the bytes
    (``None`` when the listing left values out). ``namespace``/``key`` are ``None`` for an
    item written by id alone. ``version`` is the newest write that made this state (a
    newer MERGE field counts), so ``updated_at`` is when that write happened.
    """

    tier: Tier
    item_id: str
    namespace: tuple[str, ...] | None
    key: str | None
    value: Any
    raw: bytes | None
    is_json: bool
    version: Version
    seq: int
    op: str
    deleted: bool
    size: int

    @property
    def origin(self) -> str:
        """The short node id (16 hex digits) of the node that wrote this state."""
        return self.version.origin

    @property
    def timestamp_ns(self) -> int:
        return self.version.timestamp_ns

    @property
    def updated_at(self) -> datetime:
        return self.version.at

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Item:
        raw, value, is_json = _value(obj)
        return cls(
            tier=_tier(obj["tier"]),
            item_id=str(obj["item_id"]),
            namespace=namespace_tuple(obj.get("namespace")),
            key=obj.get("key"),
            value=value,
            raw=raw,
            is_json=is_json,
            version=Version.of(obj),
            seq=int(obj.get("seq", 0)),
            op=str(obj.get("op", "")),
            deleted=bool(obj.get("deleted", False)),
            size=int(obj.get("size", 0)),
        )


@dataclass(frozen=True, slots=True)
class Written:
    """What ``put``, ``delete`` and ``merge`` report: the version they wrote."""

    tier: Tier
    item_id: str
    namespace: tuple[str, ...] | None
    key: str | None
    op: str
    priority: str
    version: Version

    @property
    def origin(self) -> str:
        return self.version.origin

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Written:
        return cls(
            tier=_tier(obj["tier"]),
            item_id=str(obj["item_id"]),
            namespace=namespace_tuple(obj.get("namespace")),
            key=obj.get("key"),
            op=str(obj["op"]),
            priority=str(obj["priority"]),
            version=Version.of(obj),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``list``: pass ``next`` back as ``after`` for the following page."""

    tier: Tier
    items: tuple[Item, ...]
    next: str | None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Page:
        return cls(
            tier=_tier(obj["tier"]),
            items=tuple(Item.of(i) for i in obj.get("items", [])),
            next=obj.get("next"),
        )


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """A namespace and its live item count, in total and per tier."""

    namespace: tuple[str, ...]
    items: int
    tiers: dict[str, int] = field(hash=False)

    @classmethod
    def of(cls, obj: dict[str, Any]) -> NamespaceInfo:
        return cls(
            namespace=namespace_tuple(obj["namespace"]) or (),
            items=int(obj["items"]),
            tiers={str(k): int(v) for k, v in dict(obj.get("tiers", {})).items()},
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two writers that had not seen each other's write; ``winner`` is what is stored."""

    at_ns: int
    tier: Tier
    item_id: str
    winner: Version
    loser: Version
    id: int | None = None
    """The entry's id, for ``resolve_conflict``."""
    resolved_by: Version | None = None
    """The version that resolved it, once resolved."""

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Conflict:
        resolved = obj.get("resolved_by")
        return cls(
            at_ns=int(obj["at_ns"]),
            tier=_tier(obj["tier"]),
            item_id=str(obj["item_id"]),
            winner=Version.of(obj["winner"]),
            loser=Version.of(obj["loser"]),
            id=None if obj.get("id") is None else int(obj["id"]),
            resolved_by=None if resolved is None else Version.of(resolved),
        )


@dataclass(frozen=True, slots=True)
class SyncResult:
    """A ``sync``: nodes covered (``synced``), those that failed, and per-node states."""

    synced: tuple[str, ...]
    failed: tuple[str, ...]
    seconds: float
    nodes: dict[str, str] = field(hash=False)

    @property
    def ok(self) -> bool:
        return not self.failed

    @classmethod
    def of(cls, obj: dict[str, Any]) -> SyncResult:
        return cls(
            synced=tuple(obj.get("synced", ())),
            failed=tuple(obj.get("failed", ())),
            seconds=float(obj.get("seconds", 0.0)),
            nodes={str(k): str(v) for k, v in dict(obj.get("nodes", {})).items()},
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the resumable change feed (``watch``).

    ``cursor`` is where the feed stands after this event: pass it back as ``since`` to
    resume exactly after it. ``value``/``raw``/``is_json`` are set when the watch asked for
    values and the item is not deleted.
    """

    seq: int
    tier: Tier
    item_id: str
    namespace: tuple[str, ...] | None
    key: str | None
    op: str
    version: Version
    source: str
    cursor: str
    value: Any
    raw: bytes | None
    is_json: bool

    @property
    def origin(self) -> str:
        return self.version.origin

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Change:
        raw, value, is_json = _value(obj)
        return cls(
            seq=int(obj.get("seq", 0)),
            tier=_tier(obj["tier"]),
            item_id=str(obj["item_id"]),
            namespace=namespace_tuple(obj.get("namespace")),
            key=obj.get("key"),
            op=str(obj["op"]),
            version=Version.of(obj),
            source=str(obj.get("source", "")),
            cursor=str(obj.get("cursor", "")),
            value=value,
            raw=raw,
            is_json=is_json,
        )
