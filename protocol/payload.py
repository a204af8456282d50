"""Value rules shared by every codec of items: zstd inflation with a declared size, and
what a DELETE and a MERGE may carry (SPEC.md section 2).

Why a module of their own: the item codec (``item.py``), the batch codec (``batch.py``)
and the construct twin (``schema.py``) all apply them, and they are the part of decoding
that allocates, so their limits are easiest to review in one place.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import zstandard

from .constants import MAX_PAYLOAD, PAYLOAD_ZSTD, Op
from .errors import BadFieldError, CompressionError, LimitError

if TYPE_CHECKING:
    from .item import Buffer

__all__ = ["check_value", "inflate"]

_local = threading.local()
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878 frame magic 0xFD2FB528, little-endian


def inflate(data: Buffer, limit: int, field: str, offset: int | None) -> bytes:
    """Inflate exactly one zstd frame whose header declares a size of at most ``limit``.

    The declared size is checked before any output buffer exists, which is what makes a
    decompression bomb harmless.

    Raises:
        CompressionError: not one well-formed zstd frame with a declared content size.
        LimitError: the declared size is above ``limit``.
    """
    if bytes(data[:4]) != _ZSTD_MAGIC:  # also refuses skippable frames (no content)
        raise CompressionError("not a zstd frame", field=field, offset=offset)
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise CompressionError("not a zstd frame", field=field, offset=offset) from None
    if size < 0:
        raise CompressionError(
            "zstd frame does not declare its content size", field=field, offset=offset
        )
    if size > limit:
        raise LimitError(
            f"zstd frame declares {size} bytes, limit is {limit}", field=field, offset=offset
        )
    # One-shot: the output buffer is exactly the declared size, checked above; a frame that
    # holds more, less, or is followed by anything is refused by libzstd itself.
    try:
        out = _decompressor().decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CompressionError(f"corrupt zstd frame ({exc})", field=field, offset=offset) from None
    if len(out) != size:
        raise CompressionError(
            f"zstd frame inflated to {len(out)} bytes, declared {size}", field=field, offset=offset
        )
    return out


def _decompressor() -> zstandard.ZstdDecompressor:
    """One decompression context per thread: contexts are not thread-safe, and costly."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def check_value(op: int, flags: int, value: bytes, field: str, offset: int | None) -> None:
    """The rules on an item's value (after any name block): DELETE empty, MERGE object."""
    if op == Op.DELETE and value:
        raise BadFieldError(
            f"DELETE must carry an empty value, got {len(value)} bytes",
            field=field,
            offset=offset,
        )
    data = inflate(value, MAX_PAYLOAD, field, offset) if flags & PAYLOAD_ZSTD else value
    if op == Op.MERGE:
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadFieldError(
                "MERGE payload is not UTF-8 JSON", field=field, offset=offset
            ) from None
        if not isinstance(obj, dict):
            raise BadFieldError("MERGE payload must be a JSON object", field=field, offset=offset)
