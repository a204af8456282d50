"""Named items on the control socket: names from requests, prefix listing, namespace counts.

A request names an item with ``namespace`` (``"agents/alden"`` or a list of labels, as a
LangGraph tuple) and ``key``; ``key`` alone names it in the root namespace. The item id is
derived from the name (SPEC.md section 2.1), so every node and client finds the same item.
A malformed name is refused with the part named (``namespace label 2 ...``), before
anything is written. ``list`` with a ``namespace`` pages by name: its ``next`` cursor is the
last (namespace, key) returned, opaque to clients, and the next page starts after it, so
items written between pages appear in their place or not at all and never twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from protocol import (
    BASE_SIZE,
    BASED,
    NAMED,
    PAYLOAD_ZSTD,
    SEPARATOR,
    LocalProtocolError,
    Name,
    Op,
    Tier,
    name_block,
    name_id,
)

from ..store.names import SEQ_MASK, Listed
from ..store.rows import BIAS, Row, decode_fields, plain_value
from .proto import ControlError, parse_tier

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "list_page",
    "listed_items",
    "name_fields",
    "op_list_named",
    "op_namespaces",
    "parse_namespace",
    "refuse_nameless_write",
    "request_name",
]

# Value bytes per page, as ``ops.LIST_VALUE_BUDGET``: a page of 1,000 large values would
# otherwise be a line of up to 1 GiB.
PAGE_VALUE_BUDGET = 4 << 20
NAMESPACE_SLICE = 20_000  # index entries counted per worker call (like status's tally)


def parse_namespace(value: Any) -> tuple[str, ...]:
    """Labels from ``"agents/alden"`` (``""`` or ``"/"``: the root) or a list of labels.

    Raises:
        ControlError: ``bad_request``: not text or a list of text, an empty label
            (``a//b``), or a label the name block refuses (too long, too deep).
    """
    if isinstance(value, str):
        text = value.strip(SEPARATOR)
        labels = tuple(text.split(SEPARATOR)) if text else ()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        labels = tuple(value)
    else:
        raise ControlError("bad_request", "namespace must be text (a/b/c) or a list of labels")
    try:
        name_block(labels, "k")
    except LocalProtocolError as exc:
        raise ControlError("bad_request", _name_problem(exc, value)) from None
    return labels


def _name_problem(exc: LocalProtocolError, value: Any) -> str:
    """``name.labels[1]: empty label`` -> ``namespace label 2 of 'a//b': empty label``."""
    field = exc.field
    if field.startswith("name.labels["):
        index = int(field[len("name.labels[") : -1])
        return f"namespace label {index + 1} of {value!r}: {exc.reason}"
    if field == "name.depth":
        return f"namespace {value!r}: {exc.reason}"
    return f"key {value!r}: {exc.reason}"


def request_name(p: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """``(item_id, name block)`` of a request's ``namespace``/``key``; None if it has neither.

    Raises:
        ControlError: ``bad_request``: a namespace without a key, or a malformed name.
    """
    namespace, key = p.get("namespace"), p.get("key")
    if key is None:
        if namespace is not None:
            raise ControlError("bad_request", "a namespace needs a key")
        return None
    labels = () if namespace is None else parse_namespace(namespace)
    if not isinstance(key, str):
        raise ControlError("bad_request", "key must be text")
    try:
        block = name_block(labels, key)
    except LocalProtocolError as exc:
        raise ControlError("bad_request", _name_problem(exc, key)) from None
    return name_id(block), block


def name_fields(name: Name | None) -> dict[str, Any]:
    """``namespace`` (text) and ``key`` of a named item for a result; nothing if nameless."""
    if name is None:
        return {}
    return {"namespace": SEPARATOR.join(name.namespace), "key": name.key}


def refuse_nameless_write(p: dict[str, Any], item_id: bytes, name: Name | None) -> None:
    """Refuse a write by ``item_id`` alone to an item that has a name.

    Why (DESIGN.md "Named items"): the name travels with every version of a named item,
    and the names index lists it by that name; a nameless version would leave the item
    listed under a name its value no longer carries (and its tombstone unpurgeable from
    the index). The caller writes it by name instead, which is what the message says.

    Raises:
        ControlError: ``bad_request``, naming the item and its name.
    """
    if name is None or p.get("item_id") is None:
        return
    ns = SEPARATOR.join(name.namespace)
    raise ControlError(
        "bad_request",
        f"item {item_id.hex()} is named (namespace {ns!r}, key {name.key!r}): "
        "write it by its namespace and key, not by item_id",
    )


def encode_cursor(position: tuple[str, str]) -> str:
    data = json.dumps(list(position), ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode("ascii").rstrip("=")


def decode_cursor(text: Any) -> tuple[str, str]:
    """The position a ``next`` cursor stands for.

    Raises:
        ControlError: ``bad_request``: not a cursor this node handed out.
    """
    try:
        raw = base64.urlsafe_b64decode(str(text) + "=" * (-len(str(text)) % 4))
        ns, key = json.loads(raw)
        if isinstance(ns, str) and isinstance(key, str):
            return ns, key
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        pass
    raise ControlError("bad_request", f"bad cursor {text!r}: pass the 'next' of a list page")


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


async def op_namespaces(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Namespaces under ``prefix`` with their live item counts, per tier and in total.

    ``max_depth`` folds deeper namespaces into their ancestor at that depth (LangGraph's
    ``list_namespaces``). Counted in slices, each its own worker call.
    """
    prefix = parse_namespace(p.get("prefix") or "")
    depth = p.get("max_depth")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
        raise ControlError("bad_request", "max_depth must be a non-negative integer")
    tiers = [Tier(t) for t in Tier] if p.get("tier") is None else [parse_tier(p["tier"])]
    store = daemon.engine.engine.store
    counts: dict[str, dict[str, int]] = {}
    for tier in tiers:
        after: tuple[str, str] | None = None
        while True:
            part, after = await daemon.engine.run(
                store.count_names, tier, prefix, after, NAMESPACE_SLICE
            )
            for ns, n in part.items():
                labels = ns.split(SEPARATOR)[:-1]
                if depth is not None:
                    labels = labels[:depth]
                shown = SEPARATOR.join(labels)
                per = counts.setdefault(shown, {})
                per[tier.name.lower()] = per.get(tier.name.lower(), 0) + n
            if after is None:
                break
    return {
        "prefix": SEPARATOR.join(prefix),
        "namespaces": [
            {"namespace": ns, "items": sum(per.values()), "tiers": per}
            for ns, per in sorted(counts.items())
        ],
    }
