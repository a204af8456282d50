"""The batch declared with construct (SPEC.md section 3): the schema's twin of ``batch.py``.

Why its own module: a batch sits between the item (``itemschema.py``, whose ``ITEM`` its body
repeats) and the frames that carry it (``schema.py``'s BATCH and PUSH bodies,
``memberschema.py``'s HOP_PUSH), so it imports the one and is imported by the others;
``schema.py`` re-exports it, so ``schema.BATCH``, ``schema.BATCH_HEADER`` and
``schema.BATCH_BODY`` still work. Theory of operation: ``schema.py``. The header carries every
limit and cross-field rule; the CRC, inflation and the items are ``schema.finish_batch``'s,
because the body as sent may be compressed.
"""

from __future__ import annotations

from typing import Any

import construct as c

from .constants import (
    BATCH_HEADER_SIZE,
    BATCH_MAGIC,
    BATCH_VERSION,
    BODY_ZSTD,
    ITEM_HEADER_SIZE,
    MAX_BATCH_ITEMS,
    MAX_BATCH_RAW,
)
from .errors import BadFieldError, BadMagicError, LimitError, VersionError
from .itemschema import ITEM
from .schemakit import Ctx, _Check, _Items, _left, _need, _rule, _tier

__all__ = ["BATCH", "BATCH_BODY", "BATCH_HEADER"]


def _fits_problem(ctx: Ctx) -> str | None:
    if ctx.item_count * ITEM_HEADER_SIZE <= ctx.raw_len:
        return None
    return f"{ctx.item_count} items cannot fit in {ctx.raw_len} bytes"


def _zstd_body_problem(ctx: Ctx) -> str | None:
    if ctx.flags & BODY_ZSTD and ctx.body_len > MAX_BATCH_RAW:
        return f"compressed body of {ctx.body_len} bytes exceeds {MAX_BATCH_RAW}"
    return None


def _plain_body_problem(ctx: Ctx) -> str | None:
    if not ctx.flags & BODY_ZSTD and ctx.body_len != ctx.raw_len:
        return f"plain body of {ctx.body_len} bytes, raw_len says {ctx.raw_len}"
    return None


BATCH_HEADER: Any = c.Struct(
    "_start" / c.Tell,
    _need(BATCH_HEADER_SIZE, "header", "header"),
    _rule("magic", c.Bytes(4), ({BATCH_MAGIC}, BadMagicError, "{v!r} is not a batch magic")),
    _rule(
        "batch_version",
        c.Int8ub,
        ({BATCH_VERSION}, VersionError, f"batch version {{v}}, this node speaks {BATCH_VERSION}"),
    ),
    _tier(),
    _rule("flags", c.Int16ub, ({0, BODY_ZSTD}, BadFieldError, "unknown flag bits {v:#06x}")),
    "batch_id" / c.Bytes(16),
    "source" / c.Int64ub,
    "target" / c.Int64ub,
    _rule(
        "item_count",
        c.Int32ub,
        (range(MAX_BATCH_ITEMS + 1), LimitError, f"{{v}} items exceeds {MAX_BATCH_ITEMS}"),
    ),
    _rule(
        "raw_len",
        c.Int32ub,
        (range(MAX_BATCH_RAW + 1), LimitError, f"raw body of {{v}} bytes exceeds {MAX_BATCH_RAW}"),
    ),
    _Check("item_count", BadFieldError, _fits_problem, at=40),
    "body_len" / c.Int32ub,
    _Check("body_len", LimitError, _zstd_body_problem, at=48),
    _Check("body_len", BadFieldError, _plain_body_problem, at=48),
    "crc32" / c.Int32ub,
)
"""The 56-byte batch header with every limit and cross-field rule."""

BATCH: Any = c.Struct(
    *BATCH_HEADER.subcons,
    _need(c.this.body_len, "body", "body"),
    "body" / c.Bytes(c.this.body_len),
)
"""A batch with its body as sent (maybe zstd); :func:`finish_batch` does the rest."""


def _trailing_problem(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    return None if not left else f"{left} bytes after the last of {len(ctx['items'])} items"


BATCH_BODY: Any = c.Struct(
    "items" / _Items(c.this._params.item_count, ITEM),
    _Check("items", BadFieldError, _trailing_problem),
)
"""A raw (plain) batch body; parse with ``item_count=N`` and optionally ``tier=T``."""
