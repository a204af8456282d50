"""Resolving a logged conflict: a new version whose base covers both sides (SPEC.md 2.2).

Theory of operation: the resolution is an ordinary local write of the item (the kept
side's value, or a new one; a DELETE when the kept side was one) stamped with ``RESOLVES``
and the item's current version here as its base. A node logs a conflict only while it
holds its winner or something newer, so that base is at least both of the conflict's keys:
the resolution overwrites sequentially everywhere (no new conflict), wins the conflict
order like any later write, and every node that applies it marks its entries of the item
that the base covers as resolved. Runs on the writer thread in one call, so the entry it
checks is the entry it resolves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import Item, Op, name_block

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ResolveError", "resolve_conflict"]


class ResolveError(Exception):
    """The conflict cannot be resolved as asked; the message names it. Nothing changed."""


def resolve_conflict(
    engine: Engine, cid: int, *, keep: str | None = None, value: bytes | None = None
) -> Item:
    """Write the resolution of conflict ``cid``: keep ``"winner"``/``"loser"``, or ``value``.

    Raises:
        ResolveError: no such entry, dropped from the log, already resolved, or neither or
            both of ``keep`` and ``value`` given, or ``keep`` not winner/loser.
        sqlite3.Error: the disk failed; nothing was written.
    """
    if (keep is None) == (value is None):
        raise ResolveError("give either keep (winner or loser) or a value")
    if keep is not None and keep not in ("winner", "loser"):
        raise ResolveError(f"keep must be winner or loser, not {keep!r}")
    store = engine.store
    entry, dropped = store.conflict(cid)
    if dropped:
        raise ResolveError(
            f"conflict {cid} was dropped from the log (conflict_bytes bound): its values are gone"
        )
    if entry is None:
        raise ResolveError(f"no conflict {cid} on this node")
    if entry.resolved_by is not None:
        ts, origin = entry.resolved_by
        raise ResolveError(f"conflict {cid} is already resolved (by {ts}:{origin:016x})")
    if keep == "winner":
        op, data = entry.winner_op, entry.winner_value
    elif keep == "loser":
        op, data = entry.loser_op, entry.loser_value
    else:
        op, data = Op.UPDATE, value
    block = b"" if entry.name is None else name_block(entry.name.namespace, entry.name.key)
    current = store.current_key(entry.tier, entry.item_id)
    if current < max(entry.winner, entry.loser):  # pragma: no cover - logged means held
        raise ResolveError(f"conflict {cid}: this node no longer holds its winner")
    # The resolution must come after both sides in the conflict order, whatever the clock.
    engine.clock.advance_to(max(current[0], entry.winner[0], entry.loser[0]))
    found = store.get_row(entry.tier, entry.item_id)
    if op != Op.DELETE:
        op = Op.INSERT if found is None or found[1].deleted else Op.UPDATE
    return engine.write(
        entry.tier,
        entry.item_id,
        op,
        b"" if op == Op.DELETE else (data or b""),
        name=block,
        resolves=True,
    )
