"""The membership frames declared with construct (SPEC.md section 4.3): the schema's twin of
``memberframes.py``.

Theory of operation: the same building blocks as ``meshschema.py``, in the order
``memberframes.py`` checks, so both codecs name the same first fault at the same offset
(``tests/protocol/test_schema_agreement.py``). A member record is fixed-size; its host is a
length and a NUL-padded field, checked as one (``_host``). The sort order of records and of
PRUNE origins is ``meshschema._Ordered``. ``schema.py`` adds these bodies to its frame switch.
"""

from __future__ import annotations

from typing import Any

import construct as c

from .errors import BadFieldError, LimitError
from .memberframes import _HOST_CHARS, HOST_FIELD, MAX_MEMBERS, MAX_PRUNE, TIER_MASK, MemberKind
from .memberframes import MemberState as _State
from .meshschema import _body_short, _Ordered, _rest_is
from .schema import BATCH, _batch_rest
from .schemakit import Ctx, _Check, _rule, _values

__all__ = ["BODIES"]


def _host(ctx: Ctx) -> str | None:
    text, pad = ctx.host[: ctx.host_len], ctx.host[ctx.host_len :]
    if all(ch in _HOST_CHARS for ch in text) and not any(pad):
        return None
    return "not a host name or address, or nonzero padding"


_TIER_BITS = range(TIER_MASK + 1)

_RECORD = c.Struct(
    "_start" / c.Tell,
    "node_id" / c.Bytes(32),
    _rule("state", c.Int8ub, (_values(_State), BadFieldError, "unknown state {v}")),
    _rule("tiers", c.Int8ub, (_TIER_BITS, BadFieldError, "unknown tier bits {v}")),
    _rule("write_tiers", c.Int8ub, (_TIER_BITS, BadFieldError, "unknown tier bits {v}")),
    "heartbeat" / c.Int64ub,
    "port" / c.Int16ub,
    _rule(
        "host_len", c.Int8ub, (range(HOST_FIELD + 1), BadFieldError, f"{{v}} exceeds {HOST_FIELD}")
    ),
    "host" / c.Bytes(HOST_FIELD),
    _Check("host", BadFieldError, _host, at=46),
)


def _member_order(prev: Any, element: Any, context: Ctx) -> tuple[str, str, int] | None:
    if prev is not None and element.node_id <= prev.node_id:
        return ("node_id", "members must be sorted by node id, each once", 0)
    return None


def _ask_empty(ctx: Ctx) -> str | None:
    return "ASK lists no members" if ctx.kind == MemberKind.ASK and ctx.count else None


_MEMBERS = "members" / c.Struct(
    "_start" / c.Tell,
    _body_short(3),
    _rule("kind", c.Int8ub, (_values(MemberKind), BadFieldError, "unknown kind {v}")),
    _rule(
        "count",
        c.Int16ub,
        (range(MAX_MEMBERS + 1), LimitError, f"{{v}} members exceeds {MAX_MEMBERS}"),
    ),
    _Check("count", BadFieldError, _ask_empty, at=1),
    _rest_is(lambda ctx: ctx.count * 110),
    "members" / _Ordered(c.this.count, _RECORD, _member_order),
)


def _origin_order(prev: Any, element: Any, context: Ctx) -> tuple[None, str, int] | None:
    if prev is not None and element <= prev:
        return (None, "origins must be sorted, each once", 0)
    return None


_PRUNE = "prune" / c.Struct(
    "_start" / c.Tell,
    _body_short(3),
    _rule("graft", c.Int8ub, ({0, 1}, BadFieldError, "must be 0 or 1, got {v}")),
    _rule(
        "count",
        c.Int16ub,
        (range(MAX_PRUNE + 1), LimitError, f"{{v}} origins exceeds {MAX_PRUNE}"),
    ),
    _rest_is(lambda ctx: ctx.count * 8),
    "origins" / _Ordered(c.this.count, c.Int64ub, _origin_order),
)

# HOP_PUSH (protocol 5, SPEC.md 4.4, ``hopframes.py``): a hop count, then a PUSH's batch.
_HOP_PUSH = "hop_push" / c.Struct(
    "_start" / c.Tell,
    _body_short(1),
    "hops" / c.Int8ub,
    "batch" / BATCH,
    _Check("batch", BadFieldError, _batch_rest),
)

BODIES: dict[int, Any] = {0x10: _MEMBERS, 0x11: _PRUNE, 0x12: _HOP_PUSH}
"""Frame type -> body schema for the membership frames and HOP_PUSH."""
