"""Control operations for moving memory in and out as whole versions (MEMSHADOW interop).

``put``/``merge``/``delete`` stamp a fresh local version; bringing memory over from another
system must instead keep each version's own timestamp, so that the conflict order decides
between imported and local data exactly as it would have between the original writers.

* ``import_versions`` applies versions with their given ``timestamp_ns`` under one given
  ``origin``, as a peer's push is applied (no cursor moves). The origin may not be this
  node's nor a known peer's: an equal timestamp under a real node's origin would make two
  different values "duplicates" of each other (DESIGN.md, conflict order). A version more
  than the clock-skew limit ahead of our wall clock is refused on its own, with the reason,
  and the rest go ahead; the clock then observes the newest accepted timestamp. A version
  whose key is already stored changes nothing, so a repeated import is a no-op; the result
  counts, per op, versions ``applied``, already ``present`` and ``unchanged`` (lost to a
  newer version, or older than the tier's retention); ``dry_run`` applies nothing and
  estimates ``would_apply`` from the whole-value keys. The versions that changed this
  node's state go to the daemon like fresh local writes (``on_local_write``: pushed,
  lingered or announced by priority) and to watchers, with source ``import``.
* ``changes`` reads a tier's rows changed after a local sequence, each as the versions that
  reproduce it (``Row.versions``), in sequence order, for ``export``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from protocol import Item, LocalProtocolError, Op, Priority, Tier

from ..clock import ClockSkewError
from ..engine import Engine
from ..store.rows import Row
from .feed import change_event
from .ops import DaemonView, Params, _peer_names, _tier
from .proto import ControlError, decode_value, encode_value, parse_item_id, parse_priority

__all__ = ["INTEROP_HANDLERS", "MAX_CHANGES", "MAX_IMPORT"]

MAX_IMPORT = 10_000  # versions per request; the request line (2 MiB) bounds them anyway
MAX_CHANGES = 1000
CHANGES_VALUE_BUDGET = 1 << 20  # value bytes per changes page: a reply stays a sane line
_OPS = {op.name.lower(): op for op in (Op.INSERT, Op.UPDATE, Op.DELETE, Op.MERGE)}
_U64 = (1 << 64) - 1


def _origin(daemon: DaemonView, p: Params) -> int:
    text = p.get("origin")
    try:
        origin = int(text, 16) if isinstance(text, str) and len(text) == 16 else -1
    except ValueError:
        origin = -1
    if not 0 <= origin <= _U64:
        raise ControlError("bad_request", "origin must be 16 hex digits (a u64)")
    if origin == daemon.engine.engine.origin or origin in _peer_names(daemon):
        raise ControlError(
            "bad_request",
            f"origin {origin:016x} is a node's own; imports need an origin of their own",
        )
    return origin


def _version(entry: Any, tier: Tier, origin: int) -> Item:
    """One requested version as an Item; ControlError or LocalProtocolError if invalid."""
    if not isinstance(entry, dict):
        raise ControlError("bad_request", "a version must be a JSON object")
    op = _OPS.get(str(entry.get("op", "")).lower())
    if op is None:
        raise ControlError("bad_request", f"op must be one of {', '.join(_OPS)}")
    ts = entry.get("timestamp_ns")
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= _U64:
        raise ControlError("bad_request", "timestamp_ns must be a u64")
    payload = b"" if op == Op.DELETE else decode_value(entry) or b""
    return Item(
        item_id=parse_item_id(entry.get("item_id")),
        timestamp_ns=ts,
        origin=origin,
        tier=tier,
        op=op,
        priority=parse_priority(entry.get("priority", "normal")),
        payload=payload,
    )


def _present(row: Row | None, item: Item) -> bool:
    """Whether ``item``'s key already shapes ``row`` (its base, or a surviving MERGE field)."""
    if row is None:
        return False
    if item.op == Op.MERGE:
        return any((f[0], f[1]) == item.key for f in row.fields.values())
    return row.key == item.key


async def op_import_versions(daemon: DaemonView, p: Params) -> dict[str, Any]:
    tier, origin = _tier(p, None), _origin(daemon, p)
    dry_run = bool(p.get("dry_run", False))
    raw = p.get("versions")
    if not isinstance(raw, list) or len(raw) > MAX_IMPORT:
        raise ControlError("bad_request", f"versions must be a list of at most {MAX_IMPORT}")
    clock = daemon.engine.engine.clock
    accepted: list[tuple[int, Item]] = []
    refused: list[dict[str, Any]] = []
    for index, entry in enumerate(raw):
        try:
            item = _version(entry, tier, origin)
        except (ControlError, LocalProtocolError) as exc:
            reason = exc.message if isinstance(exc, ControlError) else str(exc)
            refused.append({"index": index, "reason": reason})
            continue
        ahead = item.timestamp_ns - clock.wall()
        if ahead > clock.max_skew_ns:
            refused.append(
                {
                    "index": index,
                    "reason": f"clock skew: timestamp {ahead / 1e6:.1f} ms ahead of this node's"
                    f" wall clock (limit {clock.max_skew_ns / 1e6:.1f} ms)",
                }
            )
            continue
        accepted.append((index, item))

    def work(engine: Engine) -> dict[str, Any]:
        ids = {item.item_id for _, item in accepted}
        before = {iid: engine.store.get_row(tier, iid) for iid in ids}
        changed: list[Item] = []
        if not dry_run and accepted:
            engine.clock.observe(max(i.timestamp_ns for _, i in accepted), peer=origin)
            engine.store.apply_until(
                tier,
                [item for _, item in accepted],
                clock_hwm=engine.clock.last,
                now_ns=engine.clock.wall(),
                changed=changed,
            )
        took = Counter(changed)
        counts: dict[str, dict[str, int]] = {}
        for _, item in accepted:
            old = before[item.item_id]
            old_row = None if old is None else old[1]
            if _present(old_row, item):
                outcome = "present"
            elif dry_run:
                wins = old_row is None or item.key > old_row.key
                outcome = "would_apply" if wins else "unchanged"
            elif took[item] > 0:
                outcome = "applied"
                took[item] -= 1
            else:
                outcome = "unchanged"
            per_op = counts.setdefault(Op(item.op).name.lower(), {})
            per_op[outcome] = per_op.get(outcome, 0) + 1
        return {"counts": counts, "changed": changed}

    try:
        done: dict[str, Any] = await daemon.engine.run(work, daemon.engine.engine)
    except ClockSkewError as exc:  # the wall clock stepped back since the check above
        raise ControlError("bad_request", str(exc)) from None
    for item in done["changed"]:
        daemon.on_local_write(item)  # fanned out by priority, like a fresh local write
        daemon.feed.publish(change_event(item, "import"))
    return {
        "tier": tier.name.lower(),
        "origin": f"{origin:016x}",
        "dry_run": dry_run,
        "accepted": len(accepted),
        "counts": done["counts"],
        "refused": refused,
    }


def _version_out(seq: int, item: Item) -> dict[str, Any]:
    return {
        "seq": seq,
        "item_id": item.item_id.hex(),
        "timestamp_ns": item.timestamp_ns,
        "origin": f"{item.origin:016x}",
        "op": Op(item.op).name.lower(),
        "priority": Priority(item.priority).name.lower(),
        **encode_value(item.value()),
    }


async def op_changes(daemon: DaemonView, p: Params) -> dict[str, Any]:
    tier = _tier(p, None)
    after, limit = p.get("after_seq", 0), p.get("limit", MAX_CHANGES)
    for name, value, lo, hi in (("after_seq", after, 0, _U64), ("limit", limit, 1, MAX_CHANGES)):
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ControlError("bad_request", f"{name} must be an integer from {lo} to {hi}")
    store = daemon.engine.engine.store

    def work() -> dict[str, Any]:
        rows = store.rows_since(tier, after, limit + 1)
        out: list[dict[str, Any]] = []
        budget, to_seq = CHANGES_VALUE_BUDGET, after
        for seq, row in rows[:limit]:
            versions = row.versions(tier)
            size = sum(len(v.payload) for v in versions)
            if out and size > budget:
                break
            budget -= size
            out.extend(_version_out(seq, v) for v in versions)
            to_seq = seq
        more = to_seq < (rows[-1][0] if rows else after)
        return {"tier": tier.name.lower(), "to_seq": to_seq, "more": more, "versions": out}

    result: dict[str, Any] = await daemon.engine.run(work)
    return result


INTEROP_HANDLERS = {"import_versions": op_import_versions, "changes": op_changes}
