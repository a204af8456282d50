"""Control operations on the conflict log: ``conflicts`` and ``conflicts_resolve``.

Theory of operation: listing reads ``Store.conflicts`` on the worker (newest first, filtered
by tier, namespace prefix and time); resolving runs ``resolve.resolve_conflict`` on the
worker in one call, then announces the resolution like any local write (watchers, peers),
so it spreads and marks the entry resolved wherever it arrives (SPEC.md section 2.2).
"""

from __future__ import annotations

from typing import Any

from ..resolve import ResolveError, resolve_conflict
from ..store.conflicts import Conflict
from .feed import change_event
from .names import name_fields
from .proto import ControlError, decode_value, encode_value, parse_tier

__all__ = ["conflict_json", "op_conflicts", "op_conflicts_resolve"]

MAX_LIST = 1000


def conflict_json(c: Conflict, *, values: bool) -> dict[str, Any]:
    """One entry as the socket (and ``--json``) shows it."""
    out: dict[str, Any] = {
        "id": c.id,
        "at_ns": c.at_ns,
        "tier": c.tier.name.lower(),
        **name_fields(c.name),
        "item_id": c.item_id.hex(),
        "winner": _side(c.winner, c.winner_op.name.lower(), c.winner_value, values),
        "loser": _side(c.loser, c.loser_op.name.lower(), c.loser_value, values),
        "resolved_by": None
        if c.resolved_by is None
        else {"timestamp_ns": c.resolved_by[0], "origin": f"{c.resolved_by[1]:016x}"},
    }
    return out


def _side(key: tuple[int, int], op: str, value: bytes | None, values: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"timestamp_ns": key[0], "origin": f"{key[1]:016x}", "op": op}
    if values and value is not None:
        out.update(encode_value(value))
    return out


def _opt_int(p: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = p.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ControlError("bad_request", f"{name} must be an integer from {lo} to {hi}")
    return value


async def op_conflicts(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    """``limit``, ``tier``, ``namespace`` (prefix), ``since_ns``, ``values``, ``open``."""
    limit = _opt_int(p, "limit", 1, MAX_LIST) or 100
    tier = None if p.get("tier") is None else parse_tier(p["tier"])
    namespace = p.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ControlError("bad_request", "namespace must be text")
    since = _opt_int(p, "since_ns", 0, (1 << 63) - 1)
    values, open_only = bool(p.get("values", False)), bool(p.get("open", False))
    store = daemon.engine.engine.store

    def work() -> tuple[list[Conflict], dict[str, int]]:
        found = store.conflicts(
            limit=limit,
            tier=tier,
            namespace=namespace,
            since_ns=since,
            values=values,
            open_only=open_only,
        )
        return found, store.conflict_stats()

    found, stats = await daemon.engine.run(work)
    return {"conflicts": [conflict_json(c, values=values) for c in found], "log": stats}


async def op_conflicts_resolve(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    """``conflict`` (its id) and either ``keep`` (winner/loser) or ``value``/``value_b64``."""
    cid = _opt_int(p, "conflict", 1, (1 << 63) - 1)
    if cid is None:
        raise ControlError("bad_request", "missing conflict id")
    keep = p.get("keep")
    value = decode_value(p, required=False)
    engine = daemon.engine.engine

    def work() -> Any:
        try:
            return resolve_conflict(engine, cid, keep=keep, value=value)
        except ResolveError as exc:
            code = "not_found" if str(exc).startswith("no conflict") else "bad_request"
            raise ControlError(code, str(exc)) from None

    item = await daemon.engine.run(work)
    daemon.on_local_write(item)
    daemon.feed.publish(change_event(item, "local"))
    return {
        "conflict": cid,
        **name_fields(item.name),
        "item_id": item.item_id.hex(),
        "op": item.op.name.lower(),
        "timestamp_ns": item.timestamp_ns,
        "origin": f"{item.origin:016x}",
    }
