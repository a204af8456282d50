"""The resumable change feed: ``watch`` with ``since`` (and ``namespace``, ``values``).

Theory of operation: every change a node applies gets the next local sequence of its tier,
and the store keeps each row under the sequence of its last change (``store/schema.py``). A
watcher holds a cursor, one sequence per tier, and repeatedly reads the rows after it from
the store, on the writer thread, in sequence order, emitting each and moving the cursor
past it. When every watched tier is read to its end, it waits for the feed's
:class:`ChangeSignal` (set after each commit that changed a tier) and reads again. Replay
and live are therefore one code path: a change committed before the watcher read is in its
read; one committed after sets the signal, which was taken before the first read. Nothing
is missed and, since the cursor only moves forward, nothing comes twice, across any number
of reconnects: a client that keeps the last ``cursor`` it saw and passes it back as
``since`` resumes exactly there, after a daemon restart too (sequences are persisted).

What a cursor cannot promise: a row changed twice shows only its last change (the feed is
of states, like ``get_modified_since``), and a purge removes tombstones. So a ``since``
below a tier's purge floor (``Store.purged_seq``), or above its sequence (another store:
recreated, or another node), is refused with a message telling the client to re-list;
the first line of every watch carries the current cursor to start from after that list.

Cursor text: ``working:12,episodic:40,semantic:7`` (tiers left out are at 0; ``now``: the
current sequences); with one ``tier`` a plain number is accepted too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from protocol import SEPARATOR, Op, Tier

from ..aengine import AsyncEngine
from ..store.rows import NO_BASE, Row
from .feed import ChangeFeed
from .names import name_fields, parse_namespace
from .proto import ControlError, encode_value, parse_tier

__all__ = ["Cursor", "format_cursor", "parse_cursor", "run_watch"]

Cursor = dict[Tier, int]
CHUNK = 500  # rows read per worker call: one call stays short, an urgent write goes between
Send = Callable[[dict[str, Any]], Awaitable[None]]


def format_cursor(cursor: Cursor) -> str:
    return ",".join(f"{tier.name.lower()}:{seq}" for tier, seq in sorted(cursor.items()))


def parse_cursor(text: Any, tiers: list[Tier]) -> Cursor | None:
    """The cursor ``since`` stands for; ``None`` for ``now``.

    Raises:
        ControlError: ``bad_request``: not a cursor, a tier not watched, a bad number.
    """
    if text is None or text == "now":
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ControlError("bad_request", "since must be a cursor (tier:seq,...), a number or now")
    if text.isdigit():
        if len(tiers) != 1:
            raise ControlError(
                "bad_request",
                "since as a plain number needs a tier; without one give a cursor like "
                "working:12,episodic:40,semantic:7",
            )
        return {tiers[0]: int(text)}
    out: Cursor = dict.fromkeys(tiers, 0)
    for part in text.split(","):
        name, _, seq = part.partition(":")
        tier = parse_tier(name)
        if not seq.isdigit():
            raise ControlError("bad_request", f"bad cursor part {part!r}: expected tier:seq")
        if tier not in out:
            raise ControlError("bad_request", f"cursor names tier {tier.name.lower()}, not watched")
        out[tier] = int(seq)
    return out


def _op(row: Row) -> str:
    """What the row's last change was: its base op, or merge when a field is newer."""
    if row.deleted:
        return "delete"
    newest = max((fv[0], fv[1]) for fv in row.fields.values()) if row.fields else (0, 0)
    if row.op == NO_BASE or newest > row.key:
        return "merge"
    return Op(row.op).name.lower()


def _event(tier: Tier, seq: int, row: Row, origin: int, cursor: str, values: bool) -> Any:
    key = row.key
    if row.fields:
        key = max([key, *((fv[0], fv[1]) for fv in row.fields.values())])
    out: dict[str, Any] = {
        "event": "change",
        "seq": seq,
        "tier": tier.name.lower(),
        "item_id": row.item_id.hex(),
        **name_fields(row.name),
        "op": _op(row),
        "origin": f"{key[1]:016x}",
        "timestamp_ns": key[0],
        "source": "local" if key[1] == origin else "peer",
        "cursor": cursor,
    }
    if values:
        value = row.value()
        if value is not None:
            out.update(encode_value(value))
    return out


async def run_watch(
    engine: AsyncEngine, feed: ChangeFeed, params: dict[str, Any], send: Send
) -> None:
    """Serve one resumable watch until cancelled (the client went away).

    ``send`` writes one line to the client; the first is the acknowledgement with the
    current cursor.

    Raises:
        ControlError: bad parameters, or a ``since`` the node cannot resume from (nothing
            has been sent then).
    """
    one = None if params.get("tier") is None else parse_tier(params["tier"])
    tiers = [one] if one is not None else list(Tier)
    prefix = "" if params.get("namespace") is None else _prefix(params["namespace"])
    values = bool(params.get("values", False))
    since = parse_cursor(params.get("since"), tiers)
    store = engine.engine.store
    origin = engine.engine.origin
    with feed.signal(one) as signal:
        now: Cursor = await engine.run(lambda: {t: store.tier_seq(t) for t in tiers})
        floor: Cursor = await engine.run(lambda: {t: store.purged_seq(t) for t in tiers})
        cursor = dict(now) if since is None else since
        for tier in tiers:
            _check(tier, cursor[tier], now[tier], floor[tier])
        await send(
            {
                "watching": None if one is None else one.name.lower(),
                "cursor": format_cursor(cursor),
                "now": format_cursor(now),
            }
        )
        while True:
            caught_up = True
            for tier in tiers:
                rows = await engine.run(store.rows_since, tier, cursor[tier], CHUNK)
                for seq, row in rows:
                    cursor[tier] = seq
                    if prefix and not _under(row, prefix):
                        continue
                    await send(_event(tier, seq, row, origin, format_cursor(cursor), values))
                if len(rows) == CHUNK:
                    caught_up = False
            if caught_up:
                await signal.wait()


def _prefix(value: Any) -> str:
    labels = parse_namespace(value)
    return "".join(label + SEPARATOR for label in labels)


def _under(row: Row, prefix: str) -> bool:
    name = row.name
    return name is not None and name.ns_prefix.startswith(prefix)


def _check(tier: Tier, since: int, now: int, floor: int) -> None:
    name = tier.name.lower()
    if since > now:
        raise ControlError(
            "bad_request",
            f"since {name}:{since} is beyond this node's sequence ({name}:{now}): the store "
            "was recreated or the cursor is another node's; re-list, then watch from the "
            "cursor a new watch reports",
        )
    if since < floor:
        raise ControlError(
            "bad_request",
            f"since {name}:{since} is below {name}:{floor}, where this node purged deletions: "
            "changes may be missing; re-list, then watch from the cursor a new watch reports",
        )
