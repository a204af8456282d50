"""Item names: the name block a NAMED item's payload starts with (SPEC.md section 2.1).

Theory of operation: a name is a namespace (0..16 labels) and a key. It travels in every
version of a named item, uncompressed, in front of the value, so any node can index and list
it without inflating anything, and the item id is derived from the block's bytes, so every
node and client computes the same id from the same name. The block is length-prefixed
throughout (u8 per label, u16 for the key): a reader never searches for a terminator and
never allocates more than the declared, bounded lengths. ``/`` separates labels in the text
form the CLI, the control socket and the store's prefix index use, so a label may not hold
it (a LangGraph namespace of labels without ``/`` round-trips exactly); a key may hold any
non-empty text.

:func:`parse_name` is the decoder's (it names the bad part and its offset); :func:`skip_name`
and :func:`read_name` are for payloads that were validated when they entered the process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

from .constants import NAMED
from .errors import BadFieldError, LimitError, LocalProtocolError
from .errors import TruncatedError as _Truncated

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY",
    "MAX_LABEL",
    "NAMED",
    "NAME_ID_PREFIX",
    "SEPARATOR",
    "Name",
    "index_key",
    "index_key_at",
    "name_block",
    "name_id",
    "parse_name",
    "read_name",
    "skip_name",
]

MAX_DEPTH = 16
MAX_LABEL = 255
MAX_KEY = 1024
SEPARATOR = "/"
NAME_ID_PREFIX = b"meshsyncd-name:"


class Name(NamedTuple):
    """A namespace (tuple of labels) and a key, exactly as a LangGraph store names an item."""

    namespace: tuple[str, ...]
    key: str

    @property
    def ns_text(self) -> str:
        """The namespace as the CLI shows it: ``agents/alden/prefs`` (``""`` for the root)."""
        return SEPARATOR.join(self.namespace)

    @property
    def ns_prefix(self) -> str:
        """The namespace as the store indexes it, ``agents/alden/prefs/`` (root: ``""``)."""
        return "".join(label + SEPARATOR for label in self.namespace)


def name_block(namespace: tuple[str, ...] | list[str], key: str) -> bytes:
    """Encode a name; the bytes that follow the item header of every version of the item.

    Raises:
        LocalProtocolError: the namespace is deeper than ``MAX_DEPTH``, a label is empty,
            longer than ``MAX_LABEL`` bytes, holds ``/`` or is not text, or the key is
            empty, not text or longer than ``MAX_KEY`` bytes. The field names the part.
    """
    if len(namespace) > MAX_DEPTH:
        raise LocalProtocolError(
            f"namespace has {len(namespace)} labels, at most {MAX_DEPTH}", field="name.depth"
        )
    parts = [bytes([len(namespace)])]
    for index, label in enumerate(namespace):
        field = f"name.labels[{index}]"
        raw = _text(label, field)
        if not raw:
            raise LocalProtocolError("empty label", field=field)
        if len(raw) > MAX_LABEL:
            raise LocalProtocolError(f"{len(raw)} bytes, at most {MAX_LABEL}", field=field)
        if SEPARATOR in label:
            raise LocalProtocolError(
                f"label {label!r} holds the separator {SEPARATOR!r}", field=field
            )
        parts.append(bytes([len(raw)]) + raw)
    raw = _text(key, "name.key")
    if not raw:
        raise LocalProtocolError("empty key", field="name.key")
    if len(raw) > MAX_KEY:
        raise LocalProtocolError(f"{len(raw)} bytes, at most {MAX_KEY}", field="name.key")
    parts.append(len(raw).to_bytes(2, "big") + raw)
    return b"".join(parts)


def _text(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise LocalProtocolError("must be text", field=field)
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        raise LocalProtocolError("not encodable as UTF-8", field=field) from None


def name_id(block: bytes) -> bytes:
    """The item id of a named item: the first 16 bytes of SHA-256(prefix + name block)."""
    return hashlib.sha256(NAME_ID_PREFIX + block).digest()[:16]


def parse_name(payload: bytes, prefix: str, offset: int | None) -> tuple[Name, int]:
    """Decode the name block at the start of ``payload``; return it and its length.

    ``prefix`` names the item in errors (``item``, ``batch.items[3]``); ``offset`` is the
    payload's position in the decoded buffer (``None``: report no offsets).

    Raises:
        TruncatedError: the payload ends inside the block.
        BadFieldError: too deep, an empty label or key, a label holding ``/``, not UTF-8.
        LimitError: a key longer than ``MAX_KEY`` bytes.
    """
    size = len(payload)

    def at(pos: int) -> int | None:
        return None if offset is None else offset + pos

    if size < 1:
        raise _Truncated("need 1 depth byte, 0 left", field=f"{prefix}.name.depth", offset=at(0))
    depth = payload[0]
    if depth > MAX_DEPTH:
        raise BadFieldError(
            f"namespace depth {depth}, at most {MAX_DEPTH}",
            field=f"{prefix}.name.depth",
            offset=at(0),
        )
    pos = 1
    labels: list[str] = []
    for index in range(depth):
        field = f"{prefix}.name.labels[{index}]"
        if pos >= size:
            raise _Truncated(
                "need 1 label length byte, 0 left", field=f"{field}.len", offset=at(pos)
            )
        length = payload[pos]
        if length == 0:
            raise BadFieldError("empty label", field=f"{field}.len", offset=at(pos))
        pos += 1
        labels.append(_decode(payload, pos, length, f"{field}.text", at, label=True))
        pos += length
    if pos + 2 > size:
        raise _Truncated(
            f"need 2 key_len bytes, {size - pos} left",
            field=f"{prefix}.name.key_len",
            offset=at(pos),
        )
    length = int.from_bytes(payload[pos : pos + 2], "big")
    if length == 0:
        raise BadFieldError("empty key", field=f"{prefix}.name.key_len", offset=at(pos))
    if length > MAX_KEY:
        raise LimitError(
            f"key of {length} bytes, at most {MAX_KEY}",
            field=f"{prefix}.name.key_len",
            offset=at(pos),
        )
    pos += 2
    key = _decode(payload, pos, length, f"{prefix}.name.key", at, label=False)
    return Name(tuple(labels), key), pos + length


def _decode(
    payload: bytes,
    pos: int,
    length: int,
    field: str,
    at: Callable[[int], int | None],
    *,
    label: bool,
) -> str:
    """One length-prefixed text of the block (a label or the key), checked."""
    if pos + length > len(payload):
        raise _Truncated(
            f"need {length} bytes, {len(payload) - pos} left", field=field, offset=at(pos)
        )
    raw = payload[pos : pos + length]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadFieldError(
            f"not UTF-8 ({exc.reason})", field=field, offset=at(pos + exc.start)
        ) from None
    if label and SEPARATOR in text:
        raise BadFieldError(
            f"label holds the separator {SEPARATOR!r}",
            field=field,
            offset=at(pos + raw.index(SEPARATOR.encode())),
        )
    return text


def skip_name(payload: bytes) -> int:
    """Length of the name block of a payload validated before (no checks)."""
    pos = 1
    for _ in range(payload[0]):
        pos += 1 + payload[pos]
    return pos + 2 + int.from_bytes(payload[pos : pos + 2], "big")


def read_name(payload: bytes) -> tuple[Name, int]:
    """:func:`parse_name` for a payload validated before: no checks, no error paths."""
    pos = 1
    labels = []
    for _ in range(payload[0]):
        length = payload[pos]
        labels.append(payload[pos + 1 : pos + 1 + length].decode("utf-8"))
        pos += 1 + length
    length = int.from_bytes(payload[pos : pos + 2], "big")
    key = payload[pos + 2 : pos + 2 + length].decode("utf-8")
    return Name(tuple(labels), key), pos + 2 + length


def index_key(payload: bytes) -> tuple[str, str]:
    """(index namespace, key) of a validated NAMED payload, with one decode of each.

    The per-apply cost of names is mostly here and in the insert: the labels are joined
    as bytes (each valid UTF-8 and free of ``/``, so the join is too).
    """
    ns, key, _end = index_key_at(payload, 0)
    return ns, key


def index_key_at(buf: bytes, start: int) -> tuple[str, str, int]:
    """:func:`index_key` of a validated name block at ``buf[start:]``, and where it ends.

    For buffers holding many blocks back to back (the store's names log): no slice of the
    rest of the buffer is made.
    """
    pos = start + 1
    parts = []
    for _ in range(buf[start]):
        end = pos + 1 + buf[pos]
        parts.append(buf[pos + 1 : end])
        pos = end
    end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    ns = b"/".join(parts) + b"/" if parts else b""
    return ns.decode(), buf[pos + 2 : end].decode(), end
