"""The LINKS frame declared with construct (SPEC.md section 4.5): the twin of ``linkframes.py``.

Theory of operation: the building blocks of ``meshschema.py``, in the order
``linkframes.py`` checks, so both codecs name the same first fault at the same offset
(``tests/protocol/test_schema_agreement.py``). A record is variable-sized (its peer count
says how many u64 follow); the order of records is checked inside each record against the
previous one's node id, which ``_publish`` puts in the context before each record (the
struct decoder checks it before the peer count's limit). ``schema.py`` adds this body to
its frame switch.
"""

from __future__ import annotations

from typing import Any

import construct as c

from .errors import BadFieldError, LimitError
from .linkframes import MAX_LINK_PEERS, MAX_LINK_RECORDS
from .meshschema import _body_short, _Ordered
from .schemakit import Ctx, _Check, _left, _rule

__all__ = ["BODIES"]


def _record_short(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    return None if left >= 42 else f"body is {left} bytes, need 42"


def _record_order(ctx: Ctx) -> str | None:
    prev = ctx._._prev_id
    if prev is not None and ctx.node_id <= prev:
        return "records must be sorted by node id, each once"
    return None


def _peer_limit(ctx: Ctx) -> str | None:
    n = ctx.count
    return None if n <= MAX_LINK_PEERS else f"{n} peers exceeds {MAX_LINK_PEERS}"


def _peers_short(ctx: Ctx) -> str | None:
    left, want = _left(ctx._io), ctx.count * 8
    return None if left >= want else f"need {want} bytes, {left} left"


def _peer_order(prev: Any, element: Any, context: Ctx) -> tuple[None, str, int] | None:
    own = int.from_bytes(context.node_id[:8], "big")
    if element == own or (prev is not None and element <= prev):
        return (None, "peers must be sorted, unique and not the node itself", 0)
    return None


_RECORD = c.Struct(
    "_start" / c.Tell,
    _Check(None, BadFieldError, _record_short),
    "node_id" / c.Bytes(32),
    "version" / c.Int64ub,
    "count" / c.Int16ub,
    _Check("node_id", BadFieldError, _record_order, at=0),
    _Check("count", LimitError, _peer_limit, at=40),
    _Check(None, BadFieldError, _peers_short),
    "peers" / _Ordered(c.this.count, c.Int64ub, _peer_order),
)


def _publish(context: Ctx, prev: Any) -> None:
    """Before each record: the previous record's node id (None before the first)."""
    context._prev_id = None if prev is None else prev.node_id


def _no_order(prev: Any, element: Any, context: Ctx) -> None:
    return None


def _trailing(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    return None if not left else f"{left} bytes after the last record"


_LINKS = "links" / c.Struct(
    "_start" / c.Tell,
    _body_short(2),
    _rule(
        "count",
        c.Int16ub,
        (range(MAX_LINK_RECORDS + 1), LimitError, f"{{v}} records exceeds {MAX_LINK_RECORDS}"),
    ),
    "records" / _Ordered(c.this.count, _RECORD, _no_order, before=_publish),
    _Check(None, BadFieldError, _trailing),
)

BODIES: dict[int, Any] = {0x13: _LINKS}
"""Frame type -> body schema for LINKS (protocol 6)."""
