"""Control operations on snapshots (``store/snapshots.py``): create, list, drop, and
``get``/``list`` with ``snapshot``. They run on their own threads with their own SQLite
connections, never on the store's writer: a snapshot never holds up replication.
"""

from __future__ import annotations

from typing import Any

import trio

from ..store.snapshots import SnapshotError, SnapshotInfo, Snapshots
from .proto import ControlError, parse_item_id, parse_tier

__all__ = ["op_snapshot_create", "op_snapshot_drop", "op_snapshot_list", "snapshot_read"]

MAX_TTL_S = 30 * 86_400


def _snapshots(daemon: Any) -> Snapshots:
    store = daemon.engine.engine.store
    return Snapshots(store.path, max_bytes=store.snapshot_bytes)


async def _run(fn: Any) -> Any:
    try:
        return await trio.to_thread.run_sync(fn)
    except SnapshotError as exc:
        raise ControlError(exc.code, str(exc)) from None


def _info(info: SnapshotInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "namespace": info.namespace,
        "created_ns": info.created_ns,
        "expires_ns": info.expires_ns,
        "items": info.items,
        "bytes": info.bytes,
    }


async def op_snapshot_create(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    name, namespace, ttl = p.get("name"), p.get("namespace"), p.get("ttl", 3600)
    if not isinstance(name, str):
        raise ControlError("bad_request", "missing snapshot name")
    if namespace is not None and not isinstance(namespace, str):
        raise ControlError("bad_request", "namespace must be text")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL_S:
        raise ControlError("bad_request", f"ttl must be seconds in (0, {MAX_TTL_S}]")
    snaps = _snapshots(daemon)
    info = await _run(lambda: snaps.create(name, namespace=namespace, ttl_s=float(ttl)))
    return _info(info)


async def op_snapshot_list(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    snaps = _snapshots(daemon)
    found = await _run(snaps.list)
    return {"snapshots": [_info(i) for i in found]}


async def op_snapshot_drop(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    name = p.get("name")
    if not isinstance(name, str):
        raise ControlError("bad_request", "missing snapshot name")
    snaps = _snapshots(daemon)
    await _run(lambda: snaps.drop(name))
    return {"name": name, "dropped": True}


async def snapshot_read(
    daemon: Any, p: dict[str, Any], item_id: bytes | None, limit: int = 100
) -> Any:
    """``get`` (``item_id`` given) or ``list`` (``None``) from snapshot ``p["snapshot"]``."""
    name = p["snapshot"]
    if not isinstance(name, str):
        raise ControlError("bad_request", "snapshot must be a name")
    tier = parse_tier(p.get("tier", "episodic"))
    snaps = _snapshots(daemon)
    if item_id is not None:
        return await _run(lambda: snaps.get(name, tier, item_id))
    after = b"" if p.get("after") is None else parse_item_id(p["after"])
    return await _run(lambda: snaps.items(name, tier, after=after, limit=limit))
