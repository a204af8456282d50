"""The mesh frames declared with construct (SPEC.md sections 4.1 and 4.2): the schema's twin
of ``meshframes.py``.

Theory of operation: the same building blocks as ``schema.py`` (``schemakit.py``: ``_rule``,
``_Check``, ``_Items``), in the order ``meshframes.py`` checks, so both codecs name the same
first fault at the same offset (``tests/protocol/test_schema_agreement.py``). What construct
has no word for, that ranges are sorted and disjoint and that a range's ids are sorted and
inside it, is ``_Ordered``: an array that checks each element against the one before it.
``schema.py`` imports this module at its end and adds these bodies to its frame switch.
"""

from __future__ import annotations

from typing import Any

import construct as c

from .errors import BadFieldError, LimitError
from .meshframes import (
    MAX_BARRIER_BUDGET_MS,
    MAX_BARRIER_NODES,
    MAX_RANGE_IDS,
    MAX_RANGES,
    BarrierStatus,
    NodeState,
)
from .schemakit import Ctx, _Check, _exact, _Items, _left, _rule, _tier, _values, _Violation

__all__ = ["BODIES"]


class _Ordered(_Items):
    """An ``_Items`` array whose elements must each pass ``test(prev, element)``.

    ``test`` returns None or ``(field, problem, offset from the element's start)``.
    ``before(context, index)`` runs ahead of each element (to publish running state, such
    as the previous range's upper bound, for the element's own checks).
    """

    def __init__(self, count: Any, subcon: Any, test: Any, before: Any = None) -> None:
        super().__init__(count, subcon)
        self.test = test
        self.before = before

    def _parse(self, stream: Any, context: Ctx, path: str) -> Any:
        count = self.count(context) if callable(self.count) else self.count
        out = c.ListContainer()
        prev = None
        for index in range(count):
            if self.before is not None:
                self.before(context, prev)
            start = stream.tell()
            element = self.subcon._parsereport(stream, context, f"{path}[{index}]")
            problem = self.test(prev, element, context)
            if problem is not None:
                field, reason, at = problem
                raise _Violation(
                    BadFieldError, reason, path=f"{path}[{index}]", field=field, offset=start + at
                )
            out.append(element)
            prev = element
        return out


def _body_short(size: int) -> _Check:
    def test(ctx: Ctx) -> str | None:
        left = _left(ctx._io)
        return None if left >= size else f"body is {left} bytes, need {size}"

    return _Check(None, BadFieldError, test)


def _rest_is(size: Any) -> _Check:
    """The body's remaining bytes must be exactly ``size(ctx)`` (blamed on the body start)."""

    def test(ctx: Ctx) -> str | None:
        left, want = _left(ctx._io), size(ctx)
        return None if left == want else f"{left} bytes follow the fixed part, expected {want}"

    return _Check(None, BadFieldError, test, at=0)


def _trailing(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    return None if not left else f"{left} bytes after the last range"


_NODE = c.Struct(
    "node_id" / c.Bytes(32),
    _rule("state", c.Int8ub, (_values(NodeState), BadFieldError, "unknown node state {v}")),
)

_BARRIER = "barrier" / c.Struct(
    _exact(21, "BARRIER"),
    "barrier_id" / c.Bytes(16),
    _rule(
        "budget_ms",
        c.Int32ub,
        (
            range(1, MAX_BARRIER_BUDGET_MS + 1),
            BadFieldError,
            f"{{v}} out of 1..{MAX_BARRIER_BUDGET_MS}",
        ),
    ),
    "hops" / c.Int8ub,
)

_BARRIER_DONE = "barrier_done" / c.Struct(
    "_start" / c.Tell,
    _body_short(19),
    "barrier_id" / c.Bytes(16),
    _rule("status", c.Int8ub, (_values(BarrierStatus), BadFieldError, "unknown status {v}")),
    _rule(
        "count",
        c.Int16ub,
        (range(MAX_BARRIER_NODES + 1), LimitError, f"{{v}} nodes exceeds {MAX_BARRIER_NODES}"),
    ),
    _rest_is(lambda ctx: ctx.count * 33),
    "nodes" / _Items(c.this.count, _NODE),
)


def _bounds(prev: Any, element: Any, context: Ctx) -> tuple[str, str, int] | None:
    if element.lo > element.hi:
        return ("hi", "hi is below lo", 16)
    if prev is not None and element.lo <= prev.hi:
        return ("lo", "ranges must be sorted and disjoint", 0)
    return None


def _head(name: str) -> list[Any]:
    return [
        "_start" / c.Tell,
        _body_short(8),
        "request_id" / c.Int32ub,
        _tier(),
        _rule("reply", c.Int8ub, ({0, 1}, BadFieldError, "must be 0 or 1, got {v}")),
        _rule(
            "count",
            c.Int16ub,
            (range(MAX_RANGES + 1), LimitError, f"{{v}} ranges exceeds {MAX_RANGES}"),
        ),
    ]


_RANGE_DIGEST = c.Struct(
    "lo" / c.Bytes(16), "hi" / c.Bytes(16), "count" / c.Int32ub, "digest" / c.Bytes(16)
)

_RANGES = "ranges" / c.Struct(
    *_head("ranges"),
    _rest_is(lambda ctx: ctx.count * 52),
    "ranges" / _Ordered(c.this.count, _RANGE_DIGEST, _bounds),
)


def _entry_order(prev: Any, element: Any, context: Ctx) -> tuple[str | None, str, int] | None:
    inside = context.lo <= element.item_id <= context.hi
    if not inside or (prev is not None and element.item_id <= prev.item_id):
        return (None, "ids must be sorted, unique and inside their range", 0)
    return None


def _range_list_short(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    return None if left >= 34 else f"body is {left} bytes, need 34"


def _prev_bound(ctx: Ctx) -> str | None:
    prev = ctx._._prev_hi
    return None if prev is None or ctx.lo > prev else "ranges must be sorted and disjoint"


def _over_total(ctx: Ctx) -> str | None:
    total = ctx._._total + ctx.count
    return None if total <= MAX_RANGE_IDS else f"more than {MAX_RANGE_IDS} ids"


def _entries_short(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    want = ctx.count * 24
    return None if left >= want else f"need {want} bytes, {left} left"


_RANGE_LIST = c.Struct(
    "_start" / c.Tell,
    _Check(None, BadFieldError, _range_list_short),
    "lo" / c.Bytes(16),
    "hi" / c.Bytes(16),
    "count" / c.Int16ub,
    _Check("hi", BadFieldError, lambda ctx: "hi is below lo" if ctx.lo > ctx.hi else None, at=16),
    _Check("lo", BadFieldError, _prev_bound, at=0),
    _Check("count", LimitError, _over_total, at=32),
    _Check(None, BadFieldError, _entries_short),
    "entries"
    / _Ordered(c.this.count, c.Struct("item_id" / c.Bytes(16), "hash" / c.Bytes(8)), _entry_order),
)


def _publish(context: Ctx, prev: Any) -> None:
    """Before each range: the previous range's upper bound and the ids counted so far."""
    if prev is None:
        context._prev_hi, context._total = None, 0
    else:
        context._prev_hi, context._total = prev.hi, context._total + prev.count


def _no_order(prev: Any, element: Any, context: Ctx) -> None:
    return None


_RANGE_IDS = "range_ids" / c.Struct(
    *_head("range_ids"),
    "ranges" / _Ordered(c.this.count, _RANGE_LIST, _no_order, before=_publish),
    _Check(None, BadFieldError, _trailing),
)

BODIES: dict[int, Any] = {0x0C: _BARRIER, 0x0D: _BARRIER_DONE, 0x0E: _RANGES, 0x0F: _RANGE_IDS}
"""Frame type -> body schema for the protocol-2 mesh frames."""
