"""Named items on the control socket: names from requests, cursors, namespace counts.

A request names an item with ``namespace`` (``"agents/alden"`` or a list of labels, as a
LangGraph tuple) and ``key``; ``key`` alone names it in the root namespace. The item id is
derived from the name (SPEC.md section 2.1), so every node and client finds the same item.
A malformed name is refused with the part named (``namespace label 2 ...``), before
anything is written. ``list`` with a ``namespace`` (``listing.py``) pages by name: its
``next`` cursor is the last (namespace, key) returned, opaque to clients, and the next page
starts after it, so items written between pages appear in their place or not at all and
never twice. This module imports no store code: the CLI parses names with it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from protocol import SEPARATOR, LocalProtocolError, Name, Tier, name_block, name_id

from .proto import ControlError, parse_tier

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "name_fields",
    "op_namespaces",
    "parse_namespace",
    "refuse_nameless_write",
    "request_name",
]

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
