"""The item and its name block declared with construct (SPEC.md sections 2, 2.1 and 2.2): the
schema's twin of ``item.py``.

Why its own module: the item is the innermost layer of the wire format, a batch body is a run
of items and a frame carries a batch, so the item schema depends on nothing but
``schemakit.py`` and the item rules; ``batchschema.py`` builds on it and ``schema.py`` (the
frames and the parsing entry points) re-exports it, so ``schema.ITEM``, ``schema.ITEM_HEADER``
and ``schema.NAME_BLOCK`` still work. Theory of operation: ``schema.py``. The checks run in
the order SPEC.md gives: header fields, payload bytes, CRC, the batch's tier, the name block
(parsed over the payload by ``_Within``), the item id against the name, the base, then the
value rules, which reuse ``payload.check_value``.
"""

from __future__ import annotations

import zlib
from typing import Any

import construct as c

from .bases import BASE_SIZE, BASED, KNOWN_FLAGS, flags_problem
from .constants import ITEM_HEADER_SIZE, ITEM_VERSION, MAX_PAYLOAD, Op, Priority
from .errors import BadFieldError, ChecksumError, LimitError, TruncatedError
from .names import MAX_DEPTH, MAX_KEY, NAMED, name_id
from .payload import check_value
from .schemakit import Ctx, _Check, _Items, _Label, _need, _rule, _tier, _Utf8, _values, _Within

__all__ = ["ITEM", "ITEM_HEADER", "NAME_BLOCK"]


def _crc_problem(ctx: Ctx) -> str | None:
    """The item CRC covers header bytes 0..43 and then the payload."""
    stream = ctx._io
    pos = stream.tell()
    stream.seek(ctx._start)
    head = stream.read(44)
    stream.seek(pos)
    return None if zlib.crc32(ctx.payload, zlib.crc32(head)) == ctx.crc32 else "CRC-32 mismatch"


def _tier_problem(ctx: Ctx) -> str | None:
    want = ctx._params.get("tier")
    if want is None or ctx.tier == want:
        return None
    return f"item of tier {ctx.tier} in a batch of tier {want}"


def _name_len(ctx: Ctx) -> int:
    return 0 if ctx.name is None else int(ctx.name._end)


def _id_problem(ctx: Ctx) -> str | None:
    if ctx.name is None or name_id(ctx.payload[: _name_len(ctx)]) == ctx.item_id:
        return None
    return "item_id is not the id of the item's name"


def _value_start(ctx: Ctx) -> int:
    return _name_len(ctx) + (BASE_SIZE if ctx.flags & BASED else 0)


def _base_problem(ctx: Ctx) -> str | None:
    left = len(ctx.payload) - _name_len(ctx)
    if not ctx.flags & BASED or left >= BASE_SIZE:
        return None
    return f"need {BASE_SIZE} base bytes, {left} left"


def _payload_problem(ctx: Ctx) -> str | None:
    if ctx.flags or ctx.op in (Op.DELETE, Op.MERGE):
        check_value(ctx.op, ctx.flags, ctx.payload[_value_start(ctx) :], "", None)
    return None


# --- item (SPEC.md section 2) -----------------------------------------------------------

# Every flags value SPEC.md sections 2-2.2 allow: RESOLVES only together with BASED.
_VALID_FLAGS = frozenset(f for f in range(KNOWN_FLAGS + 1) if flags_problem(f) is None)

ITEM_HEADER: Any = c.Struct(
    "_start" / c.Tell,
    _need(ITEM_HEADER_SIZE, "header", "header"),
    "item_id" / c.Bytes(16),
    "timestamp_ns" / c.Int64ub,
    "origin" / c.Int64ub,
    _rule("version", c.Int8ub, ({ITEM_VERSION}, BadFieldError, "{v}, expected 2")),
    _tier(),
    _rule("op", c.Int8ub, (_values(Op), BadFieldError, "unknown op {v}")),
    _rule("priority", c.Int8ub, (_values(Priority), BadFieldError, "unknown priority {v}")),
    _rule(
        "flags",
        c.Int16ub,
        (
            _VALID_FLAGS,
            BadFieldError,
            "unknown flag bits {v:#06x}",
        ),
    ),
    _rule("reserved", c.Int16ub, ({0}, BadFieldError, "must be 0, got {v:#06x}")),
    _rule(
        "payload_len",
        c.Int32ub,
        (range(MAX_PAYLOAD + 1), LimitError, f"{{v}} bytes exceeds the {MAX_PAYLOAD}-byte limit"),
    ),
    "crc32" / c.Int32ub,
)
"""The 48-byte item header with every header rule; parses a header alone."""

_LABEL: Any = c.Struct(
    _need(1, "len", "label length"),
    _rule("len", c.Int8ub, (range(1, 256), BadFieldError, "empty label")),
    _need(c.this.len, "text", "label"),
    "text" / _Label(c.Bytes(c.this.len)),
)

NAME_BLOCK: Any = c.Struct(
    _need(1, "depth", "depth"),
    _rule("depth", c.Int8ub, (range(MAX_DEPTH + 1), BadFieldError, "namespace depth {v}")),
    "labels" / _Items(c.this.depth, _LABEL),
    _need(2, "key_len", "key_len"),
    _rule(
        "key_len",
        c.Int16ub,
        (range(1, 1 << 16), BadFieldError, "empty key"),
        (range(MAX_KEY + 1), LimitError, "key of {v} bytes"),
    ),
    _need(c.this.key_len, "key", "key"),
    "key" / _Utf8(c.Bytes(c.this.key_len)),
    "_end" / c.Tell,
)
"""A NAMED item's name block (SPEC.md section 2.1), parsed from the start of the payload."""

ITEM: Any = c.Struct(
    *ITEM_HEADER.subcons,
    _need(c.this.payload_len, "payload", "payload"),
    "payload" / c.Bytes(c.this.payload_len),
    _Check("crc32", ChecksumError, _crc_problem, at=44),
    _Check("tier", BadFieldError, _tier_problem, at=33),
    "name" / c.If(c.this.flags & NAMED, _Within(NAME_BLOCK)),
    _Check("item_id", BadFieldError, _id_problem, at=0),
    _Check("base", TruncatedError, _base_problem, at=lambda ctx: 48 + _name_len(ctx)),
    _Check("payload", BadFieldError, _payload_problem, at=lambda ctx: 48 + _value_start(ctx)),
)
"""One whole item; parse with ``tier=T`` to require that tier (items of a batch)."""
