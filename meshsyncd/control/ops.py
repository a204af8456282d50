"""Handlers of the control-socket operations (all but ``watch``, which streams).

Each handler takes the daemon view and the request's parameters and returns the JSON-able
``result``; a refused request raises :class:`ControlError`. Everything that touches the store
runs as one function on the node's writer thread (``AsyncEngine.run``), so a read-then-write
such as ``put`` (INSERT if absent, else UPDATE) is atomic and the trio thread never blocks on
SQLite.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from protocol import MAX_PAYLOAD, Item, Op, Priority, Tier

from ..aengine import AsyncEngine
from ..conditions import format_version
from ..engine import Engine, merge_payload
from ..store import StoredItem
from ..store.rows import from_db
from .feed import ChangeFeed, change_event
from .guard import op_freeze, op_unfreeze, write_condition
from .history import op_history
from .listing import op_list_named
from .names import name_fields, op_namespaces, refuse_nameless_write, request_name
from .proto import (
    ControlError,
    decode_value,
    encode_value,
    node_id_text,
    parse_item_id,
    parse_node_id,
    parse_priority,
    parse_tier,
)
from .review import op_conflicts, op_conflicts_resolve
from .snapshot import op_snapshot_create, op_snapshot_drop, op_snapshot_list, snapshot_read

__all__ = ["HANDLERS", "DaemonView"]

Params = dict[str, Any]
Handler = Callable[["DaemonView", Params], Awaitable[dict[str, Any]]]


MAX_LIST = 1000
LIST_VALUE_BUDGET = 4 << 20  # value bytes per list page, so a page stays a sane line
MAX_KEY = 4096
MAX_SYNC_TIMEOUT = 3600.0


class DaemonView(Protocol):
    """What the operations need from the daemon (the daemon implements it).

    It lives here, with its users, so that the server imports the ops and nothing imports
    the server back.
    """

    engine: AsyncEngine
    node_id: bytes
    started_at: float
    feed: ChangeFeed

    def peers_table(self) -> list[dict[str, Any]]: ...

    def sync_progress(self) -> dict[str, int]: ...

    def on_local_write(self, item: Item) -> None: ...

    @property
    def repair(self) -> Any: ...  # repair counters: ``repair.status()`` (mesh/repair.py)

    async def check_mesh(self) -> dict[str, Any]: ...

    # The timeout is part of the request (the daemon reports which peers missed it).
    async def sync_now(
        self,
        peers: list[bytes] | None,
        timeout: float,  # noqa: ASYNC109
    ) -> dict[str, Any]: ...


# -- parameters ---------------------------------------------------------------------------


def _tier(p: Params, default: Tier | None = Tier.EPISODIC) -> Tier:
    value = p.get("tier")
    if value is None:
        if default is None:
            raise ControlError("bad_request", "missing tier")
        return default
    return parse_tier(value)


def _int(p: Params, name: str, default: int, lo: int, hi: int) -> int:
    value = p.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ControlError("bad_request", f"{name} must be an integer from {lo} to {hi}")
    return value


def _target(p: Params, *, allow_new: bool) -> tuple[bytes, bytes]:
    """(item id, name block) from ``item_id`` (hex, nameless) or ``namespace``/``key``
    (a name, ``names.py``); a random nameless id if allowed."""
    iid, key = p.get("item_id"), p.get("key")
    if iid is not None and (key is not None or p.get("namespace") is not None):
        raise ControlError("bad_request", "give either item_id or key, not both")
    if iid is not None:
        return parse_item_id(iid), b""
    named = request_name(p)
    if named is not None:
        return named
    if allow_new:
        return os.urandom(16), b""
    raise ControlError("bad_request", "missing item_id or key")


# -- results ------------------------------------------------------------------------------


def _written(item: Item) -> dict[str, Any]:
    return {
        **name_fields(item.name),
        "item_id": item.item_id.hex(),
        "tier": Tier(item.tier).name.lower(),
        "op": Op(item.op).name.lower(),
        "priority": Priority(item.priority).name.lower(),
        "timestamp_ns": item.timestamp_ns,
        "origin": f"{item.origin:016x}",
        "version": format_version(item.key),  # what --if-version takes
    }


def _stored(found: StoredItem, *, with_value: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        **name_fields(found.name),
        "item_id": found.item_id.hex(),
        "tier": Tier(found.tier).name.lower(),
        "seq": found.seq,
        "op": Op(found.op).name.lower() if found.op in {int(o) for o in Op} else "merge",
        "timestamp_ns": found.key[0],
        "origin": f"{found.key[1]:016x}",
        "deleted": found.deleted,
        "size": 0 if found.value is None else len(found.value),
        "version": format_version(max([found.key, *((f[0], f[1]) for f in found.fields.values())])),
    }
    if with_value and found.value is not None:
        out.update(encode_value(found.value))
    return out


def _local_write(daemon: DaemonView, item: Item, *, announced: bool = False) -> dict[str, Any]:
    """Tell watchers (and peers, unless done) about a write we just made; describe it."""
    if not announced:
        daemon.on_local_write(item)
    daemon.feed.publish(change_event(item, "local"))
    return _written(item)


# -- data operations ----------------------------------------------------------------------


async def op_put(daemon: DaemonView, p: Params) -> dict[str, Any]:
    tier, prio = _tier(p), parse_priority(p.get("priority", "normal"))
    fresh = p.get("item_id") is None and p.get("key") is None
    expect, absent = write_condition(p, fresh)
    item_id, name = _target(p, allow_new=True)
    value = decode_value(p)
    assert value is not None
    if fresh:  # a new random id: INSERT without asking the store, so it may go out early
        item = await daemon.engine.write_early(
            tier,
            item_id,
            Op.INSERT,
            value,
            priority=prio,
            announce=daemon.on_local_write,
            base=(0, 0),
        )
        return _local_write(daemon, item, announced=True)

    def work(engine: Engine) -> Item:
        found = engine.store.get_row(tier, item_id)
        refuse_nameless_write(p, item_id, None if found is None else found[1].name)
        op = Op.INSERT if found is None or found[1].deleted else Op.UPDATE
        return engine.write(
            tier, item_id, op, value, priority=prio, name=name, expect=expect, absent=absent
        )

    item = await daemon.engine.run(work, daemon.engine.engine, urgent=prio >= Priority.HIGH)
    return _local_write(daemon, item)


async def op_get(daemon: DaemonView, p: Params) -> dict[str, Any]:
    tier, (item_id, _name) = _tier(p), _target(p, allow_new=False)
    if p.get("snapshot") is not None:  # snapshot.py: as it was when the snapshot was made
        found: StoredItem | None = await snapshot_read(daemon, p, item_id)
    else:
        found = await daemon.engine.get(tier, item_id)
    if found is None or (found.deleted and not p.get("include_deleted")):
        what = f'key "{p["key"]}" (id {item_id.hex()})' if p.get("key") else f"id {item_id.hex()}"
        raise ControlError("not_found", f"no item with {what} in tier {tier.name.lower()}")
    return _stored(found)


async def op_delete(daemon: DaemonView, p: Params) -> dict[str, Any]:
    tier, prio = _tier(p), parse_priority(p.get("priority", "normal"))
    item_id, name = _target(p, allow_new=False)
    expect, _absent = write_condition(p, False, absent_ok=False)
    engine = daemon.engine.engine

    def work() -> Item:
        if p.get("item_id") is not None:  # by id: the item may have a name
            found = engine.store.get_row(tier, item_id)
            refuse_nameless_write(p, item_id, None if found is None else found[1].name)
        return engine.delete(tier, item_id, priority=prio, name=name, expect=expect)

    item = await daemon.engine.run(work, urgent=prio >= Priority.HIGH)
    return _local_write(daemon, item)


async def op_merge(daemon: DaemonView, p: Params) -> dict[str, Any]:
    tier, prio = _tier(p), parse_priority(p.get("priority", "normal"))
    item_id, name = _target(p, allow_new=True)
    fields = p.get("fields")
    if not isinstance(fields, dict):
        raise ControlError("bad_request", "fields must be a JSON object")
    size = len(json.dumps(fields, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD:
        raise ControlError("too_large", f"fields are {size} bytes; the limit is {MAX_PAYLOAD}")
    if p.get("item_id") is not None or p.get("key") is not None:
        found = await daemon.engine.get(tier, item_id)
        refuse_nameless_write(p, item_id, None if found is None else found.name)
        _check_mergeable(found, p)
    expect, absent = write_condition(p, p.get("item_id") is None and p.get("key") is None)
    if expect is not None or absent:  # checked and written in one writer call
        item = await daemon.engine.run(
            lambda: daemon.engine.engine.write(
                tier,
                item_id,
                Op.MERGE,
                merge_payload(fields),
                priority=prio,
                name=name,
                expect=expect,
                absent=absent,
            ),
            urgent=prio >= Priority.HIGH,
        )
        return _local_write(daemon, item)
    item = await daemon.engine.write_early(
        tier,
        item_id,
        Op.MERGE,
        merge_payload(fields),
        priority=prio,
        announce=daemon.on_local_write,
        name=name,
    )
    return _local_write(daemon, item, announced=True)


def _check_mergeable(found: StoredItem | None, p: Params) -> None:
    """Refuse to merge fields into a live value that is not a JSON object.

    Why: merging ``{"a": 1}`` into plain text used to answer ok and replace the text,
    which is what a put does, not what the caller asked for. Absent and deleted items
    are fine (the merge creates the object). This guards local writes only; a merge
    arriving from a peer is applied by the conflict order whatever it lands on.

    Raises:
        ControlError: ``not_mergeable``.
    """
    if found is None or found.deleted or found.value is None:
        return
    try:
        current = json.loads(found.value)
    except (ValueError, UnicodeDecodeError):
        current = None
    if not isinstance(current, dict):
        name = f'key "{p["key"]}"' if p.get("key") else f"id {found.item_id.hex()}"
        raise ControlError(
            "not_mergeable",
            f"item with {name} holds a value that is not a JSON object; merge adds fields "
            "to an object: put a JSON object first, or put the whole new value",
        )


async def op_list(daemon: DaemonView, p: Params) -> dict[str, Any]:
    tier, limit = _tier(p), _int(p, "limit", 100, 1, MAX_LIST)
    if p.get("snapshot") is not None:  # snapshot.py: id order, live items only
        snap = await snapshot_read(daemon, p, None, limit + 1)
        page = [_stored(s) for s in snap[:limit]]
        last = page[-1]["item_id"] if len(snap) > limit and page else None
        return {"tier": tier.name.lower(), "items": page, "next": last}
    if p.get("namespace") is not None:  # by name, under a namespace prefix
        return await op_list_named(daemon, p, tier, limit)
    after = b"" if p.get("after") is None else parse_item_id(p["after"])
    include_deleted = bool(p.get("include_deleted", False))
    with_values = bool(p.get("values", True))
    view = daemon.engine.engine.tier(tier)
    found: list[StoredItem] = await daemon.engine.run(
        lambda: view.list(limit + 1, after_id=after, include_deleted=include_deleted)
    )
    items: list[dict[str, Any]] = []
    budget = LIST_VALUE_BUDGET
    for entry in found[:limit]:
        size = 0 if entry.value is None else len(entry.value)
        if items and with_values and size > budget:
            break
        budget -= size
        items.append(_stored(entry, with_value=with_values))
    more = len(items) < len(found)
    return {
        "tier": tier.name.lower(),
        "items": items,
        "next": items[-1]["item_id"] if more and items else None,
    }


# -- node state ---------------------------------------------------------------------------


STATUS_SLICE = 20_000  # rows counted per worker call (~2-3 ms)


async def _tier_status(daemon: DaemonView, tier: Tier) -> dict[str, Any]:
    """Items and tombstones counted in slices, so urgent writes go between them."""
    store = daemon.engine.engine.store
    rows = tombstones = after = 0
    while True:
        n, dead, after = await daemon.engine.run(store.tally, tier, after, STATUS_SLICE)
        rows += n
        tombstones += dead
        if n < STATUS_SLICE:
            break
    seq, digest = await daemon.engine.run(lambda: (store.tier_seq(tier), store.digest(tier)))
    return {
        "items": rows - tombstones,
        "tombstones": tombstones,
        "seq": seq,
        "digest": digest.hex(),
    }


async def op_status(daemon: DaemonView, p: Params) -> dict[str, Any]:
    engine = daemon.engine.engine
    tiers = {t.name.lower(): await _tier_status(daemon, t) for t in Tier}
    return {
        "node_id": node_id_text(daemon.node_id),
        "origin": f"{engine.origin:016x}",
        "incarnation": engine.incarnation.hex(),
        "uptime": round(max(0.0, time.time() - daemon.started_at), 3),
        "tiers": tiers,
        "feed": _asdict(daemon.feed.statistics()),
        "repair": daemon.repair.status(),
    }


def _asdict(stats: Any) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in stats.__slots__}


async def op_peers(daemon: DaemonView, p: Params) -> dict[str, Any]:
    return {"peers": daemon.peers_table()}


def _peer_names(daemon: DaemonView) -> dict[int, str]:
    """Short id -> node id text for the peers the daemon knows by full id."""
    names: dict[int, str] = {}
    for row in daemon.peers_table():
        for field in ("node_id", "id", "peer"):
            text = row.get(field)
            if isinstance(text, str):
                try:
                    full = parse_node_id(text)
                except ControlError:
                    continue
                names[int.from_bytes(full[:8], "big")] = text
                break
    return names


async def op_vectors(daemon: DaemonView, p: Params) -> dict[str, Any]:
    store = daemon.engine.engine.store
    names = _peer_names(daemon)

    def work() -> dict[str, Any]:
        known = {
            from_db(r[0])
            for r in store._conn.execute("SELECT peer FROM cursors UNION SELECT peer FROM peers")
        }
        out = []
        for peer in sorted(known | set(names)):
            tiers = {
                t.name.lower(): {"cursor": store.cursor(peer, t), "acked": store.acked(peer, t)}
                for t in Tier
            }
            out.append(
                {"peer": names.get(peer, f"{peer:016x}"), "origin": f"{peer:016x}", "tiers": tiers}
            )
        local = {t.name.lower(): store.tier_seq(t) for t in Tier}
        return {"local_seq": local, "peers": out}

    result: dict[str, Any] = await daemon.engine.run(work)
    return result


async def op_sync(daemon: DaemonView, p: Params) -> dict[str, Any]:
    raw = p.get("peers")
    peers: list[bytes] | None
    if raw is None or raw == "all":
        peers = None
    elif isinstance(raw, list) and raw:
        peers = [parse_node_id(x) for x in raw]
    else:
        raise ControlError("bad_request", 'peers must be a non-empty list of node ids or "all"')
    timeout = p.get("timeout", 2.0)
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 < timeout <= MAX_SYNC_TIMEOUT
    ):
        raise ControlError("bad_request", f"timeout must be seconds in (0, {MAX_SYNC_TIMEOUT}]")
    started = time.monotonic()
    with trio.move_on_after(float(timeout) + 5.0):
        result = await daemon.sync_now(peers, float(timeout))
        answer = {
            "synced": list(result.get("synced", [])),
            "failed": list(result.get("failed", [])),
            "seconds": round(time.monotonic() - started, 3),
        }
        if "nodes" in result:  # the mesh-wide barrier: every node's state by id
            answer["nodes"] = dict(result["nodes"])
        return answer
    raise ControlError("unavailable", f"sync did not finish within {timeout} s")


async def op_sync_progress(daemon: DaemonView, p: Params) -> dict[str, Any]:
    """How far the barrier running from here got: for ``sync --now``'s progress line."""
    return dict(daemon.sync_progress())


async def op_check(daemon: DaemonView, p: Params) -> dict[str, Any]:
    """Per tier: this node's digest, each connected peer's, and which differ."""
    return await daemon.check_mesh()


HANDLERS: dict[str, Handler] = {
    "check": op_check,
    "put": op_put,
    "get": op_get,
    "delete": op_delete,
    "merge": op_merge,
    "list": op_list,
    "namespaces": op_namespaces,
    "status": op_status,
    "peers": op_peers,
    "vectors": op_vectors,
    "conflicts": op_conflicts,
    "conflicts_resolve": op_conflicts_resolve,
    "freeze": op_freeze,
    "history": op_history,
    "snapshot_create": op_snapshot_create,
    "snapshot_list": op_snapshot_list,
    "snapshot_drop": op_snapshot_drop,
    "unfreeze": op_unfreeze,
    "sync": op_sync,
    "sync_progress": op_sync_progress,
}
