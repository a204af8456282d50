"""LangGraph's filters, on plain values: which items a ``filter=`` and which namespaces a
``MatchCondition`` select.

``meshsyncd.langgraph`` (search and list_namespaces) and ``meshsyncd mcp`` (the search
tool) both filter what the node listed; the semantics are ``InMemoryStore``'s (exact
match, nested dicts, lists element by element, ``$eq $ne $gt $gte $lt $lte`` on numbers),
so a filter means the same through every interface. Pure: no I/O, no langgraph import.

One difference: an ordering operator on a field the value lacks does not match (as in
PostgreSQL's JSONB, which InMemoryStore's comment says it follows), where InMemoryStore
raises ``TypeError``.

Raises (``matches``): ValueError for an unknown operator or an ordering operator on a
value that is not a number.
"""

from __future__ import annotations

from typing import Any

__all__ = ["does_match", "matches"]


def does_match(cond: Any, ns: tuple[str, ...]) -> bool:
    """LangGraph's namespace match (a ``MatchCondition``: ``match_type`` prefix or suffix,
    ``path`` of labels); ``*`` matches any label."""
    path = cond.path
    if len(ns) < len(path):
        return False
    pairs = zip(ns, path, strict=False)
    if cond.match_type == "suffix":
        pairs = zip(reversed(ns), reversed(path), strict=False)
    elif cond.match_type != "prefix":
        raise ValueError(f"unsupported match type: {cond.match_type}")
    return all(p == "*" or k == p for k, p in pairs)


def matches(value: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    """Whether a JSON object matches a LangGraph filter (every field must)."""
    return not flt or all(_compare(value.get(k), v) for k, v in flt.items())


def _compare(have: Any, want: Any) -> bool:
    """LangGraph's filter semantics (as ``InMemoryStore``): nested dicts, lists, operators."""
    if isinstance(want, dict):
        if any(k.startswith("$") for k in want):
            return all(_operator(have, k, v) for k, v in want.items())
        return isinstance(have, dict) and all(_compare(have.get(k), v) for k, v in want.items())
    if isinstance(want, list | tuple):
        return (
            isinstance(have, list | tuple)
            and len(have) == len(want)
            and all(_compare(h, w) for h, w in zip(have, want, strict=False))
        )
    return bool(have == want)


_ORDER = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _operator(have: Any, op: str, want: Any) -> bool:
    if op == "$eq":
        return bool(have == want)
    if op == "$ne":
        return bool(have != want)
    if op in _ORDER:
        if have is None:  # a missing field is not greater or less than anything (as JSONB)
            return False
        try:
            return bool(_ORDER[op](float(have), float(want)))
        except (TypeError, ValueError):
            raise ValueError(f"filter {op} compares numbers; got {have!r} and {want!r}") from None
    raise ValueError(f"unsupported filter operator: {op}")
