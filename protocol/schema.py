"""The wire format declared once, with construct (SPEC.md sections 2, 3 and 4).

Theory of operation: the ``struct`` codecs in ``item.py``, ``batch.py`` and ``frames.py`` are
the hot path; this module is the readable, declarative twin used to dump bytes field by field
(``meshsyncd decode``), to prove the hot path right (``tests/protocol/test_schema_agreement``)
and as the reference figure of the codec benchmark. Every header rule of the SPEC is part of
the schema itself: ``_Rule`` wraps a field with the values it may take, ``_Check`` is a
zero-width assertion over already-parsed fields (sizes, cross-field rules, the item CRC).
Both raise ``_Violation``, a construct error that already knows which ``ProtocolError`` it
stands for and at which byte offset, and the public ``parse_*`` functions turn every construct
error into that ``ProtocolError``. The checks run in the order SPEC.md gives, so both codecs
report the same first fault. What the schema leaves to a post-parse step: a batch's CRC,
inflation and item parsing (:func:`finish_batch`), because a batch body may be compressed;
and an item's value rules, which reuse ``payload.check_value`` from within the schema. A NAMED
item's name block (section 2.1) is the schema's own: :data:`NAME_BLOCK`, parsed over the
payload by ``_Within`` with offsets moved to the item's buffer.

The declarations live by layer, each beside its struct codec: the item and its name block in
``itemschema.py`` (twin of ``item.py``), the batch in ``batchschema.py`` (twin of
``batch.py``), the frames of protocol 1 here (twin of ``frames.py``) and the later frame
families in ``meshschema.py``, ``memberschema.py`` and ``linkschema.py``. This module
re-exports the item and batch declarations and owns the frame switch and the parsing entry
points, so ``protocol.schema`` stays the one name callers import.

The compiled parsers (:func:`compiled_item_header`, :func:`compiled_batch_body`) are built
on first use: compiling costs tens of milliseconds that ``import protocol.schema`` should not.
"""

from __future__ import annotations

import functools
import io
import zlib
from typing import Any

import construct as c

from .batchschema import BATCH, BATCH_BODY, BATCH_HEADER
from .constants import (
    BATCH_HEADER_SIZE,
    BODY_ZSTD,
    HELLO_MAGIC,
    MAX_BATCH_ITEMS,
    MAX_BATCH_RAW,
    MAX_FRAME,
    MAX_TEXT,
)
from .errors import (
    BadFieldError,
    BadMagicError,
    ChecksumError,
    LimitError,
    ProtocolError,
    TruncatedError,
    VersionError,
)
from .item import Buffer
from .itemschema import ITEM, ITEM_HEADER, NAME_BLOCK
from .payload import inflate
from .schemakit import (
    Ctx,
    _Check,
    _exact,
    _left,
    _need,
    _rule,
    _segments,
    _tier,
    _Utf8,
    _Violation,
)

__all__ = [
    "BATCH",
    "BATCH_BODY",
    "BATCH_HEADER",
    "FRAME",
    "FRAME_BODY_NAMES",
    "ITEM",
    "ITEM_HEADER",
    "NAME_BLOCK",
    "compiled_batch_body",
    "compiled_item_header",
    "construct_parse_items",
    "finish_batch",
    "parse_batch",
    "parse_batch_body",
    "parse_frame",
    "parse_item",
]


# --- frames (SPEC.md section 4) ---------------------------------------------------------


def _text_body(name: str) -> Any:
    def short(ctx: Ctx) -> str | None:
        left = _left(ctx._io)
        return None if left >= 4 else f"body is {left} bytes, need 4"

    def mismatch(ctx: Ctx) -> str | None:
        left = _left(ctx._io)
        return None if left == ctx.text_len else f"text_len says {ctx.text_len}, body holds {left}"

    return name / c.Struct(
        "_start" / c.Tell,
        _Check(None, BadFieldError, short),
        "code" / c.Int16ub,
        _rule(
            "text_len",
            c.Int16ub,
            (range(MAX_TEXT + 1), LimitError, f"{{v}} bytes exceeds {MAX_TEXT}"),
        ),
        _Check("text_len", BadFieldError, mismatch, at=2),
        "text" / _Utf8(c.Bytes(c.this.text_len)),
    )


def _batch_rest(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    return None if not left else f"{left} bytes after the batch"


def _seq_problem(ctx: Ctx) -> str | None:
    if ctx.from_seq <= ctx.to_seq:
        return None
    return f"to_seq {ctx.to_seq} is below from_seq {ctx.from_seq}"


def _batch_frame_short(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    return None if left >= 21 else f"body is {left} bytes, need 21"


_BODIES: dict[int, Any] = {
    0x01: "hello"
    / c.Struct(
        _exact(66, "HELLO"),
        _rule(
            "magic",
            c.Bytes(4),
            ({HELLO_MAGIC}, BadMagicError, f"{{v!r}} is not {HELLO_MAGIC!r}: not a meshsyncd peer"),
        ),
        _rule(
            "version", c.Int16ub, (range(1, 1 << 16), VersionError, "protocol version 0 is too old")
        ),
        "node_id" / c.Bytes(32),
        "incarnation" / c.Bytes(16),
        "capabilities" / c.Int32ub,
        "timestamp_ns" / c.Int64ub,
    ),
    0x02: "pull"
    / c.Struct(
        _exact(21, "PULL"),
        "request_id" / c.Int32ub,
        _tier(),
        "after_seq" / c.Int64ub,
        _rule(
            "max_items",
            c.Int32ub,
            (range(1, MAX_BATCH_ITEMS + 1), BadFieldError, f"{{v}} out of 1..{MAX_BATCH_ITEMS}"),
        ),
        _rule(
            "max_bytes",
            c.Int32ub,
            (range(1, MAX_BATCH_RAW + 1), BadFieldError, f"{{v}} out of 1..{MAX_BATCH_RAW}"),
        ),
    ),
    0x03: "batch_frame"
    / c.Struct(
        "_start" / c.Tell,
        _Check(None, BadFieldError, _batch_frame_short),
        "request_id" / c.Int32ub,
        "from_seq" / c.Int64ub,
        "to_seq" / c.Int64ub,
        _Check("to_seq", BadFieldError, _seq_problem, at=12),
        _rule("more", c.Int8ub, ({0, 1}, BadFieldError, "must be 0 or 1, got {v}")),
        "batch" / BATCH,
        _Check("batch", BadFieldError, _batch_rest),
    ),
    0x04: "ack" / c.Struct(_exact(13, "ACK"), "request_id" / c.Int32ub, _tier(), "seq" / c.Int64ub),
    0x05: "push" / c.Struct("batch" / BATCH, _Check("batch", BadFieldError, _batch_rest)),
    0x06: "replicate"
    / c.Struct(_exact(21, "REPLICATE"), "request_id" / c.Int32ub, _tier(), "item_id" / c.Bytes(16)),
    0x07: "ping" / c.Struct(_exact(16, "PING"), "nonce" / c.Int64ub, "timestamp_ns" / c.Int64ub),
    0x08: "pong"
    / c.Struct(
        _exact(24, "PONG"),
        "nonce" / c.Int64ub,
        "echo_ns" / c.Int64ub,
        "timestamp_ns" / c.Int64ub,
    ),
    0x09: _text_body("error"),
    0x0A: _text_body("bye"),
    0x0B: "digest"
    / c.Struct(_exact(41, "DIGEST"), _tier(), "seq" / c.Int64ub, "digest" / c.Bytes(32)),
}


class _KnownTypes:
    """The frame types the switch knows, looked up when parsing (``meshschema`` adds some)."""

    def __contains__(self, value: object) -> bool:
        return value in _BODIES


_KNOWN_TYPES = _KnownTypes()

FRAME_BODY_NAMES: dict[int, str] = {ftype: body.name for ftype, body in _BODIES.items()}
"""Frame type -> the schema's name for its body (``batch_frame``, ``push``...)."""


def _body_short(ctx: Ctx) -> str | None:
    left = _left(ctx._io)
    if left >= ctx.length - 1:
        return None
    return f"declares {ctx.length} bytes, {left + 1} left"


FRAME: Any = c.Struct(
    "_start" / c.Tell,
    _need(5, "header", "header"),
    _rule(
        "length",
        c.Int32ub,
        (range(MAX_FRAME + 1), LimitError, f"declares {{v}} bytes, limit is {MAX_FRAME}"),
        (range(1, MAX_FRAME + 1), BadFieldError, "must be at least 1 (the type byte)"),
    ),
    _rule("type", c.Int8ub, (_KNOWN_TYPES, BadFieldError, "unknown frame type {v:#04x}")),
    _Check("body", TruncatedError, _body_short),
    "body" / c.FixedSized(c.this.length - 1, c.Switch(c.this.type, _BODIES)),
)
"""One frame: length, type and the type's body (a BATCH/PUSH batch body stays as sent)."""

# --- parsing entry points ---------------------------------------------------------------


def _field(prefix: str, segments: list[str]) -> str:
    """Name a field like the struct codecs do: ``item.tier``, ``pull.tier``, ``frame.length``."""
    if prefix == "frame" and len(segments) > 1 and segments[0] == "body":
        return ".".join(segments[1:])
    return ".".join([prefix, *segments])


def _convert(exc: Exception, prefix: str, base: int = 0) -> ProtocolError:
    """Turn any construct error into the ProtocolError the SPEC names."""
    if isinstance(exc, _Violation):
        offset = None if exc.offset is None else exc.offset + base
        return exc.error(exc.reason, field=_field(prefix, exc.segments), offset=offset)
    path = getattr(exc, "path", None)
    error = TruncatedError if isinstance(exc, c.StreamError) else BadFieldError
    reason = str(exc).splitlines()[-1] if str(exc) else type(exc).__name__
    return error(reason, field=_field(prefix, _segments(path)))


def _run(schema: Any, buf: Buffer, offset: int, prefix: str, **params: Any) -> tuple[Any, int]:
    stream = io.BytesIO(bytes(buf))
    stream.seek(offset)
    try:
        value = schema.parse_stream(stream, **params)
    except c.ConstructError as exc:
        raise _convert(exc, prefix) from None
    return value, stream.tell()


def parse_item(buf: Buffer, offset: int = 0) -> tuple[Any, int]:
    """Parse one item at ``offset`` with the schema; return its fields and the next offset.

    Offsets in errors are absolute in ``buf``, fields are named ``item.<field>``.

    Raises:
        ProtocolError: the same checks, in the same order, as ``protocol.unpack_item``.
    """
    return _run(ITEM, buf, offset, "item")


def parse_batch_body(
    raw: Buffer, count: int, *, tier: int | None = None, prefix: str = "batch"
) -> list[Any]:
    """Parse a raw (inflated) batch body of exactly ``count`` items with the schema.

    Offsets are within ``raw``, fields ``<prefix>.items[i].<field>``.

    Raises:
        ProtocolError: a bad item, an item of another tier than ``tier``, trailing bytes.
    """
    body, _ = _run(BATCH_BODY, raw, 0, prefix, item_count=count, tier=tier)
    return list(body["items"])


def finish_batch(batch: Any, buf: Buffer, offset: int = 0, *, prefix: str = "batch") -> list[Any]:
    """The batch checks that need the whole body: CRC, inflation (bounded), then the items.

    ``batch`` is what :data:`BATCH` parsed from ``buf`` at ``offset``. This reuses
    ``protocol.inflate``: the declared size is checked against ``raw_len`` before inflating.

    Raises:
        ChecksumError, CompressionError, LimitError: the body as sent is bad.
        ProtocolError: an item in the body is bad (offsets within the raw body).
    """
    head = bytes(memoryview(buf)[offset : offset + 52])
    if zlib.crc32(batch.body, zlib.crc32(head)) != batch.crc32:
        raise ChecksumError("CRC-32 mismatch", field=f"{prefix}.crc32", offset=offset + 52)
    raw: bytes = batch.body
    if batch.flags & BODY_ZSTD:
        raw = inflate(raw, batch.raw_len, f"{prefix}.body", offset + BATCH_HEADER_SIZE)
        if len(raw) != batch.raw_len:
            raise BadFieldError(
                f"body inflated to {len(raw)} bytes, raw_len says {batch.raw_len}",
                field=f"{prefix}.raw_len",
                offset=offset + 44,
            )
    return parse_batch_body(raw, batch.item_count, tier=batch.tier, prefix=prefix)


def parse_batch(buf: Buffer, offset: int = 0, *, prefix: str = "batch") -> tuple[Any, int]:
    """Parse and fully check one batch; the result has the header fields, ``body`` and ``items``.

    Raises:
        ProtocolError: the same checks, in the same order, as ``protocol.unpack_batch``.
    """
    batch, end = _run(BATCH, buf, offset, prefix)
    batch["items"] = finish_batch(batch, buf, offset, prefix=prefix)
    return batch, end


def parse_frame(buf: Buffer, offset: int = 0) -> tuple[Any, int]:
    """Parse one frame at ``offset``: ``length``, ``type`` and ``body`` (fields per type).

    Like ``protocol.parse_frame``, a BATCH/PUSH batch is vetted (header, sizes) but its CRC,
    body and items are left to :func:`finish_batch`. Offsets are absolute in ``buf``.

    Raises:
        ProtocolError: the same checks, in the same order, as ``protocol.parse_frame``.
    """
    return _run(FRAME, buf, offset, "frame")


@functools.cache
def compiled_item_header() -> Any:
    """:data:`ITEM_HEADER` compiled by construct (the benchmark's reference), built once."""
    return ITEM_HEADER.compile()


@functools.cache
def compiled_batch_body() -> Any:
    """:data:`BATCH_BODY` compiled by construct, built once; parse with ``item_count=N``."""
    return BATCH_BODY.compile()


def construct_parse_items(body: bytes, count: int) -> list[Any]:
    """Parse a plain batch body of ``count`` items with construct's compiled parser.

    The benchmark's construct reference: the same rules as the hot path (header fields,
    sizes, CRC, payload rules), as fast as construct gets. Errors name the item index and
    field but, compiled code having no construct path, not the ``batch.`` prefix.

    Raises:
        ProtocolError: any malformed item or trailing bytes.
    """
    try:
        return list(compiled_batch_body().parse(body, item_count=count)["items"])
    except c.ConstructError as exc:
        raise _convert(exc, "batch") from None


# The protocol-2 mesh frames (``meshschema.py``) build on the same pieces (``schemakit.py``);
# they join the frame switch here, at the end, so that module can import this one.
from . import meshschema as _meshschema  # noqa: E402

_BODIES.update(_meshschema.BODIES)
FRAME_BODY_NAMES.update({ftype: body.name for ftype, body in _meshschema.BODIES.items()})

from . import memberschema as _memberschema  # noqa: E402

_BODIES.update(_memberschema.BODIES)
FRAME_BODY_NAMES.update({ftype: body.name for ftype, body in _memberschema.BODIES.items()})

from . import linkschema as _linkschema  # noqa: E402

_BODIES.update(_linkschema.BODIES)
FRAME_BODY_NAMES.update({ftype: body.name for ftype, body in _linkschema.BODIES.items()})
