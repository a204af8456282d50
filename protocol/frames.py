"""Session frames: the bytes of the events two daemons exchange (SPEC.md section 4).

Theory of operation: a frame is ``length u32 | type u8 | body``. Each type has one frozen,
slotted, keyword-only dataclass (``events.py``) that validates in its constructor and one
precompiled ``struct`` here for its fixed part. Decoding checks the body size for the type,
unpacks, checks each field's domain (raising ``RemoteProtocolError`` subclasses with the
field and offset) and then builds the event without re-validating it (``_trusted``). BATCH
and PUSH keep the batch as bytes with a vetted header: the body is parsed by ``decode()``,
which the daemon runs off the event loop. Frame types of the other ``*frames.py`` modules
plug in through ``register_frame``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .batch import BatchHeader, peek_batch
from .constants import (
    HELLO_MAGIC,
    MAX_BATCH_ITEMS,
    MAX_BATCH_RAW,
    MAX_FRAME,
    MAX_TEXT,
    Tier,
)
from .errors import (
    BadFieldError,
    BadMagicError,
    LimitError,
    LocalProtocolError,
    ProtocolError,
    TruncatedError,
    VersionError,
)
from .events import (
    Ack,
    BatchFrame,
    Bye,
    Digest,
    Error,
    Frame,
    Hello,
    Ping,
    Pong,
    Pull,
    Push,
    Replicate,
)
from .item import Buffer

__all__ = [
    "FRAME_TYPES",
    "Ack",
    "BatchFrame",
    "Bye",
    "Digest",
    "Error",
    "Frame",
    "Hello",
    "Ping",
    "Pong",
    "Pull",
    "Push",
    "Replicate",
    "encode_frame",
    "parse_frame",
    "register_frame",
]

_LEN = struct.Struct(">I")
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1


FRAME_TYPES: dict[int, type[Frame]] = {
    cls.TYPE: cls
    for cls in (Hello, Pull, BatchFrame, Ack, Push, Replicate, Ping, Pong, Error, Bye, Digest)
}

# Frame types defined in other modules of this package (``meshframes.py``): type -> codec.
FrameEncoder = Callable[[Frame], bytes]
FrameDecoder = Callable[[bytes, int], Frame]
_EXTENSIONS: dict[int, tuple[type[Frame], FrameEncoder, FrameDecoder]] = {}


def register_frame(cls: type[Frame], encode: FrameEncoder, decode: FrameDecoder) -> None:
    """Add a frame type defined outside this module; its codec vets like the core ones.

    ``decode(body, base)`` gets the body and its offset in the input (for error offsets).
    """
    if cls.TYPE in FRAME_TYPES and FRAME_TYPES[cls.TYPE] is not cls:
        raise LocalProtocolError(f"frame type {cls.TYPE:#04x} is taken", field="frame.type")
    FRAME_TYPES[cls.TYPE] = cls
    _EXTENSIONS[cls.TYPE] = (cls, encode, decode)


_HELLO = struct.Struct(">4sH32s16sIQ")
_PULL = struct.Struct(">IBQII")
_BATCH_FIXED = struct.Struct(">IQQB")
_ACK = struct.Struct(">IBQ")
_REPLICATE = struct.Struct(">IB16s")
_PING = struct.Struct(">QQ")
_PONG = struct.Struct(">QQQ")
_TEXT = struct.Struct(">HH")
_DIGEST = struct.Struct(">BQ32s")


def _trusted(cls: type[Frame], **fields: object) -> Frame:
    """Build an event whose fields the decoder has already vetted."""
    event = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(event, name, value)
    return event


def encode_frame(event: Frame) -> bytes:
    """Encode one event as a complete frame (length, type, body).

    Raises:
        LocalProtocolError: the frame would exceed ``MAX_FRAME``.
    """
    if isinstance(event, Hello):
        body = _HELLO.pack(
            HELLO_MAGIC,
            event.version,
            event.node_id,
            event.incarnation,
            event.capabilities,
            event.timestamp_ns,
        )
    elif isinstance(event, Pull):
        body = _PULL.pack(
            event.request_id, event.tier, event.after_seq, event.max_items, event.max_bytes
        )
    elif isinstance(event, BatchFrame):
        fixed = _BATCH_FIXED.pack(event.request_id, event.from_seq, event.to_seq, event.more)
        body = fixed + event.batch
    elif isinstance(event, Ack):
        body = _ACK.pack(event.request_id, event.tier, event.seq)
    elif isinstance(event, Push):
        body = event.batch
    elif isinstance(event, Replicate):
        body = _REPLICATE.pack(event.request_id, event.tier, event.item_id)
    elif isinstance(event, Ping):
        body = _PING.pack(event.nonce, event.timestamp_ns)
    elif isinstance(event, Pong):
        body = _PONG.pack(event.nonce, event.echo_ns, event.timestamp_ns)
    elif isinstance(event, Error | Bye):
        text = event.text.encode("utf-8")
        body = _TEXT.pack(event.code, len(text)) + text
    elif isinstance(event, Digest):
        body = _DIGEST.pack(event.tier, event.seq, event.digest)
    else:
        ext = _EXTENSIONS.get(getattr(event, "TYPE", -1))
        if ext is None or not isinstance(event, ext[0]):
            raise LocalProtocolError(f"not a frame: {type(event).__name__}", field="frame.type")
        body = ext[1](event)
    length = 1 + len(body)
    if length > MAX_FRAME:
        raise LocalProtocolError(f"{length} bytes exceeds {MAX_FRAME}", field="frame.length")
    return _LEN.pack(length) + bytes((event.TYPE,)) + body


def read_frame_header(
    buf: Buffer, offset: int = 0, *, max_frame: int = MAX_FRAME
) -> tuple[int, int] | None:
    """Return ``(type, length)`` of the frame at ``offset``, or None if fewer than 5 bytes.

    Raises:
        LimitError: the declared length is above ``max_frame`` (before buffering it).
        BadFieldError: length 0 or an unknown type.
    """
    if len(buf) - offset < 5:
        return None
    (length,) = _LEN.unpack_from(buf, offset)
    if length > max_frame:
        raise LimitError(
            f"declares {length} bytes, limit is {max_frame}", field="frame.length", offset=offset
        )
    if length == 0:
        raise BadFieldError(
            "must be at least 1 (the type byte)", field="frame.length", offset=offset
        )
    ftype = buf[offset + 4]
    if ftype not in FRAME_TYPES:
        raise BadFieldError(
            f"unknown frame type {ftype:#04x}", field="frame.type", offset=offset + 4
        )
    return ftype, length


def parse_frame(buf: Buffer, offset: int = 0, *, max_frame: int = MAX_FRAME) -> tuple[Frame, int]:
    """Decode one complete frame at ``offset``; return it and the offset just past it.

    Raises:
        TruncatedError: the buffer ends inside the frame.
        ProtocolError: any other malformed input, naming the field and offset.
    """
    head = read_frame_header(buf, offset, max_frame=max_frame)
    if head is None:
        raise TruncatedError(
            f"need 5 header bytes, {max(len(buf) - offset, 0)} left",
            field="frame.header",
            offset=offset,
        )
    ftype, length = head
    end = offset + 4 + length
    if len(buf) < end:
        raise TruncatedError(
            f"declares {length} bytes, {len(buf) - offset - 4} left",
            field="frame.body",
            offset=offset + 5,
        )
    body = bytes(memoryview(buf)[offset + 5 : end])
    return decode_body(ftype, body, offset + 5), end


def _exact(body: bytes, size: int, name: str, base: int) -> None:
    if len(body) != size:
        raise BadFieldError(
            f"body is {len(body)} bytes, {name} has exactly {size}",
            field=f"{name.lower()}",
            offset=base,
        )


def _tier_at(value: int, field: str, offset: int) -> Tier:
    if value not in Tier._value2member_map_:
        raise BadFieldError(f"unknown tier {value}", field=field, offset=offset)
    return Tier(value)


def _decode_text(body: bytes, name: str, base: int) -> tuple[int, str]:
    field = name.lower()
    if len(body) < 4:
        raise BadFieldError(f"body is {len(body)} bytes, need 4", field=field, offset=base)
    code, size = _TEXT.unpack_from(body)
    if size > MAX_TEXT:
        raise LimitError(
            f"{size} bytes exceeds {MAX_TEXT}", field=f"{field}.text_len", offset=base + 2
        )
    if len(body) != 4 + size:
        raise BadFieldError(
            f"text_len says {size}, body holds {len(body) - 4}",
            field=f"{field}.text_len",
            offset=base + 2,
        )
    try:
        text = body[4:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadFieldError(
            f"not UTF-8 ({exc.reason})", field=f"{field}.text", offset=base + 4 + exc.start
        ) from None
    return code, text


def decode_body(ftype: int, body: bytes, base: int = 0) -> Frame:
    """Decode the body of a frame of type ``ftype``; ``base`` is its offset for errors.

    Raises:
        ProtocolError: the body does not match its type's layout and field rules.
    """
    if ftype == Hello.TYPE:
        _exact(body, _HELLO.size, "HELLO", base)
        magic, version, node_id, incarnation, caps, ts = _HELLO.unpack(body)
        if magic != HELLO_MAGIC:
            raise BadMagicError(
                f"{magic!r} is not {HELLO_MAGIC!r}: not a meshsyncd peer",
                field="hello.magic",
                offset=base,
            )
        if version == 0:
            raise VersionError(
                "protocol version 0 is too old", field="hello.version", offset=base + 4
            )
        return _trusted(
            Hello,
            version=version,
            node_id=node_id,
            incarnation=incarnation,
            capabilities=caps,
            timestamp_ns=ts,
        )
    if ftype == Pull.TYPE:
        _exact(body, _PULL.size, "PULL", base)
        request_id, tier, after, max_items, max_bytes = _PULL.unpack(body)
        tier_e = _tier_at(tier, "pull.tier", base + 4)
        if not 1 <= max_items <= MAX_BATCH_ITEMS:
            raise BadFieldError(
                f"{max_items} out of 1..{MAX_BATCH_ITEMS}", field="pull.max_items", offset=base + 13
            )
        if not 1 <= max_bytes <= MAX_BATCH_RAW:
            raise BadFieldError(
                f"{max_bytes} out of 1..{MAX_BATCH_RAW}", field="pull.max_bytes", offset=base + 17
            )
        return _trusted(
            Pull,
            request_id=request_id,
            tier=tier_e,
            after_seq=after,
            max_items=max_items,
            max_bytes=max_bytes,
        )
    if ftype == BatchFrame.TYPE:
        fixed = _BATCH_FIXED.size
        if len(body) < fixed:
            raise BadFieldError(
                f"body is {len(body)} bytes, need {fixed}", field="batch_frame", offset=base
            )
        request_id, from_seq, to_seq, more = _BATCH_FIXED.unpack_from(body)
        if from_seq > to_seq:
            raise BadFieldError(
                f"to_seq {to_seq} is below from_seq {from_seq}",
                field="batch_frame.to_seq",
                offset=base + 12,
            )
        if more > 1:
            raise BadFieldError(
                f"must be 0 or 1, got {more}", field="batch_frame.more", offset=base + 20
            )
        data = body[fixed:]
        header = _peek_exact(data, "batch_frame.batch", base + fixed)
        return _trusted(
            BatchFrame,
            request_id=request_id,
            from_seq=from_seq,
            to_seq=to_seq,
            more=bool(more),
            batch=data,
            header=header,
        )
    if ftype == Ack.TYPE:
        _exact(body, _ACK.size, "ACK", base)
        request_id, tier, seq = _ACK.unpack(body)
        return _trusted(
            Ack, request_id=request_id, tier=_tier_at(tier, "ack.tier", base + 4), seq=seq
        )
    if ftype == Push.TYPE:
        return _trusted(Push, batch=body, header=_peek_exact(body, "push.batch", base))
    if ftype == Replicate.TYPE:
        _exact(body, _REPLICATE.size, "REPLICATE", base)
        request_id, tier, item_id = _REPLICATE.unpack(body)
        return _trusted(
            Replicate,
            request_id=request_id,
            tier=_tier_at(tier, "replicate.tier", base + 4),
            item_id=item_id,
        )
    if ftype == Ping.TYPE:
        _exact(body, _PING.size, "PING", base)
        nonce, ts = _PING.unpack(body)
        return _trusted(Ping, nonce=nonce, timestamp_ns=ts)
    if ftype == Pong.TYPE:
        _exact(body, _PONG.size, "PONG", base)
        nonce, echo, ts = _PONG.unpack(body)
        return _trusted(Pong, nonce=nonce, echo_ns=echo, timestamp_ns=ts)
    if ftype == Error.TYPE:
        code, text = _decode_text(body, "ERROR", base)
        return _trusted(Error, code=code, text=text)
    if ftype == Bye.TYPE:
        code, text = _decode_text(body, "BYE", base)
        return _trusted(Bye, code=code, text=text)
    if ftype == Digest.TYPE:
        _exact(body, _DIGEST.size, "DIGEST", base)
        tier, seq, digest = _DIGEST.unpack(body)
        return _trusted(Digest, tier=_tier_at(tier, "digest.tier", base), seq=seq, digest=digest)
    ext = _EXTENSIONS.get(ftype)
    if ext is not None:
        return ext[2](body, base)
    raise BadFieldError(f"unknown frame type {ftype:#04x}", field="frame.type", offset=base - 1)


def _peek_exact(data: bytes, field: str, base: int) -> BatchHeader:
    """Vet a batch that must fill the rest of its frame; offsets are made absolute."""
    try:
        header = peek_batch(data, prefix=field)
    except ProtocolError as exc:
        raise type(exc)(
            exc.reason, field=exc.field, offset=None if exc.offset is None else base + exc.offset
        ) from None
    if header.size != len(data):
        raise BadFieldError(
            f"{len(data) - header.size} bytes after the batch",
            field=field,
            offset=base + header.size,
        )
    return header
