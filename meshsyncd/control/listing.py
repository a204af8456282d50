"""``list`` with a ``namespace``: named items under a prefix, in name order, a page at a time.

Theory of operation: the store hands over each item as the record SQLite returns
(``store/names.py``, :meth:`~meshsyncd.store.names.NamesMixin.list_name_records`), and
:func:`listed_items` turns it into the item of the answer directly: no ``Row`` unless the
item has MERGE fields, the value sliced out of the wire payload after the name block (whose
length follows from the index form of the name) and the base. Why: the page is built on the
writer thread, and 1,000 items of a million-item tier must answer in under 20 ms (issue 13;
``meshsyncd bench names`` times :func:`list_page` and the JSON encoding). The value travels
once, ``value`` when it is UTF-8, else ``value_b64`` (``docs/control.md``), and a page stops
at about 4 MiB of values; ``next`` then continues after the last item returned.
"""

from __future__ import annotations

import base64
from typing import Any

from protocol import BASE_SIZE, BASED, NAMED, PAYLOAD_ZSTD, SEPARATOR, Op, Tier

from ..store.names import Listed
from ..store.rows import BIAS, SEQ_MASK, Row, decode_fields, plain_value
from .names import decode_cursor, encode_cursor, parse_namespace

__all__ = ["PAGE_VALUE_BUDGET", "list_page", "listed_items", "op_list_named"]

# Value bytes per page, as ``ops.LIST_VALUE_BUDGET``: a page of 1,000 large values would
# otherwise be a line of up to 1 GiB.
PAGE_VALUE_BUDGET = 4 << 20

_OP_NAMES = {int(op): op.name.lower() for op in Op}
_PLAIN = (int(Op.INSERT), int(Op.UPDATE))


def listed_items(tier: str, recs: list[Listed], with_values: bool) -> list[dict[str, Any]]:
    """The items of a ``list`` page: the fields of ``get`` (``ops._stored``), built straight
    from the store's records (1,000 of them must take well under 20 ms: no ``Row``, one
    dict each). The value travels once: ``value`` when it is UTF-8, else ``value_b64``.
    Stops before an item whose value would take the page past :data:`PAGE_VALUE_BUDGET`
    (never before the first)."""
    out: list[dict[str, Any]] = []
    budget = PAGE_VALUE_BUDGET
    for ns, key, iid, rowid, ts, origin, op, flags, payload, ftext in recs:
        ts, origin = ts + BIAS, origin + BIAS  # rows.from_db, inline
        if ftext:  # MERGE fields: the row folds them into the value; the newest key shows
            row = Row(iid, ts, origin, op, 0, flags, payload)
            row.fields = decode_fields(ftext)
            ts, origin = max([row.key, *((fv[0], fv[1]) for fv in row.fields.values())])
            value = row.value()
        elif op not in _PLAIN:
            value = None
        elif flags & PAYLOAD_ZSTD:
            value = plain_value(payload, flags)
        else:
            # The value follows the name block and the base. The block of the name the
            # index gave (the row's own: the id is the name's) is 3 bytes longer than the
            # UTF-8 of the index form and the key (SPEC.md 2.1); cheaper than parsing it.
            start = 3 + len(ns.encode()) + len(key.encode()) if flags & NAMED else 0
            value = payload[start + BASE_SIZE if flags & BASED else start :]
        item = {
            "namespace": ns[:-1],
            "key": key,
            "item_id": iid.hex(),
            "tier": tier,
            "seq": rowid & SEQ_MASK,
            "op": _OP_NAMES.get(op, "merge"),
            "timestamp_ns": ts,
            "origin": f"{origin:016x}",
            "deleted": value is None,
            "size": 0 if value is None else len(value),
        }
        if with_values and value is not None:
            if out and len(value) > budget:
                break  # the page is full: ``list_page`` continues after the last one
            budget -= len(value)
            try:
                item["value"] = value.decode()
            except UnicodeDecodeError:
                item["value_b64"] = base64.b64encode(value).decode("ascii")
        out.append(item)
    return out


def list_page(
    store: Any,
    tier: Tier,
    prefix: tuple[str, ...],
    after: tuple[str, str] | None,
    limit: int,
    *,
    include_deleted: bool = False,
    with_values: bool = True,
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """One page of named items as ``list`` answers it; runs on the writer thread (and in
    ``bench names``, which times exactly this plus the JSON encoding)."""
    recs, more = store.list_name_records(
        tier, prefix, after=after, limit=limit, include_deleted=include_deleted
    )
    items = listed_items(tier.name.lower(), recs, with_values)
    if len(items) < len(recs):
        more = (recs[len(items) - 1][0], recs[len(items) - 1][1])
    return items, more


async def op_list_named(daemon: Any, p: dict[str, Any], tier: Tier, limit: int) -> dict[str, Any]:
    """``list`` with a ``namespace``: named items under it, in name order, paged by name."""
    prefix = parse_namespace(p["namespace"])
    after = None if p.get("after") is None else decode_cursor(p["after"])
    include_deleted = bool(p.get("include_deleted", False))
    with_values = bool(p.get("values", True))
    store = daemon.engine.engine.store
    items, more = await daemon.engine.run(
        lambda: list_page(
            store,
            tier,
            prefix,
            after,
            limit,
            include_deleted=include_deleted,
            with_values=with_values,
        )
    )
    return {
        "tier": tier.name.lower(),
        "namespace": SEPARATOR.join(prefix),
        "items": items,
        "next": None if more is None else encode_cursor(more),
    }
