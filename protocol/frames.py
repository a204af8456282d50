"""Session frames: the events two daemons exchange (SPEC.md section 4).

Theory of operation: a frame is ``length u32 | type u8 | body``. Each type has one frozen,
slotted, keyword-only dataclass that validates in its constructor (raising
``LocalProtocolError``: we were asked to send something invalid) and one precompiled
``struct`` for its fixed part. Decoding checks the body size for the type, unpacks, checks
each field's domain (raising ``RemoteProtocolError`` subclasses with the field and offset)
and then builds the event. BATCH and PUSH keep the batch as bytes with a vetted header:
the body is parsed by ``decode()``, which the daemon runs off the event loop.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import ClassVar

from .batch import Batch, BatchHeader, peek_batch, unpack_batch
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


def _need(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise LocalProtocolError(message, field=field)


def _u(value: object, bits: int, field: str) -> None:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << bits),
        field,
        f"must be a u{bits}",
    )


def _tier(value: int, field: str) -> Tier:
    try:
        return Tier(value)
    except (ValueError, TypeError):
        raise LocalProtocolError(f"unknown tier {value}", field=field) from None


def _bytes(value: object, size: int, field: str) -> None:
    _need(isinstance(value, bytes) and len(value) == size, field, f"must be {size} bytes")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """Base of every session event; ``TYPE`` is the frame type byte."""

    TYPE: ClassVar[int] = 0
    NAME: ClassVar[str] = "FRAME"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Frame):
    """First frame each way: who we are, which store, what we speak, our clock."""

    TYPE: ClassVar[int] = 0x01
    NAME: ClassVar[str] = "HELLO"
    version: int
    node_id: bytes
    incarnation: bytes
    capabilities: int
    timestamp_ns: int

    def __post_init__(self) -> None:
        _u(self.version, 16, "hello.version")
        _need(self.version >= 1, "hello.version", "version 0 does not exist")
        _bytes(self.node_id, 32, "hello.node_id")
        _bytes(self.incarnation, 16, "hello.incarnation")
        _u(self.capabilities, 32, "hello.capabilities")
        _u(self.timestamp_ns, 64, "hello.timestamp_ns")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Pull(Frame):
    """Ask for a tier's changes after our cursor on the peer's local sequence."""

    TYPE: ClassVar[int] = 0x02
    NAME: ClassVar[str] = "PULL"
    request_id: int
    tier: Tier
    after_seq: int
    max_items: int
    max_bytes: int

    def __post_init__(self) -> None:
        _u(self.request_id, 32, "pull.request_id")
        object.__setattr__(self, "tier", _tier(self.tier, "pull.tier"))
        _u(self.after_seq, 64, "pull.after_seq")
        _u(self.max_items, 32, "pull.max_items")
        _need(1 <= self.max_items <= MAX_BATCH_ITEMS, "pull.max_items", "out of range")
        _u(self.max_bytes, 32, "pull.max_bytes")
        _need(1 <= self.max_bytes <= MAX_BATCH_RAW, "pull.max_bytes", "out of range")


def _vet_batch(data: object, field: str) -> BatchHeader:
    _need(isinstance(data, bytes), field, "must be bytes")
    assert isinstance(data, bytes)
    try:
        head = peek_batch(data, prefix=field)
    except ProtocolError as exc:
        raise LocalProtocolError(exc.reason, field=exc.field, offset=exc.offset) from None
    _need(head.size == len(data), field, f"{len(data) - head.size} bytes after the batch")
    return head


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BatchFrame(Frame):
    """One chunk of a pull answer: the sender's changes with sequence in (from, to]."""

    TYPE: ClassVar[int] = 0x03
    NAME: ClassVar[str] = "BATCH"
    request_id: int
    from_seq: int
    to_seq: int
    more: bool
    batch: bytes
    header: BatchHeader = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _u(self.request_id, 32, "batch_frame.request_id")
        _u(self.from_seq, 64, "batch_frame.from_seq")
        _u(self.to_seq, 64, "batch_frame.to_seq")
        _need(self.from_seq <= self.to_seq, "batch_frame.to_seq", "below from_seq")
        _need(isinstance(self.more, bool), "batch_frame.more", "must be a bool")
        object.__setattr__(self, "header", _vet_batch(self.batch, "batch_frame.batch"))

    @property
    def tier(self) -> Tier:
        return self.header.tier

    def decode(self) -> Batch:
        """Parse the batch body; CPU-heavy, so the daemon calls it off the event loop."""
        return unpack_batch(self.batch, prefix="batch_frame.batch")[0]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ack(Frame):
    """The receiver applied a request's batches through ``seq``."""

    TYPE: ClassVar[int] = 0x04
    NAME: ClassVar[str] = "ACK"
    request_id: int
    tier: Tier
    seq: int

    def __post_init__(self) -> None:
        _u(self.request_id, 32, "ack.request_id")
        object.__setattr__(self, "tier", _tier(self.tier, "ack.tier"))
        _u(self.seq, 64, "ack.seq")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Push(Frame):
    """Live best-effort batch of fresh writes; never advances a cursor."""

    TYPE: ClassVar[int] = 0x05
    NAME: ClassVar[str] = "PUSH"
    batch: bytes
    header: BatchHeader = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", _vet_batch(self.batch, "push.batch"))

    @property
    def tier(self) -> Tier:
        return self.header.tier

    def decode(self) -> Batch:
        """Parse the batch body; CPU-heavy, so the daemon calls it off the event loop."""
        return unpack_batch(self.batch, prefix="push.batch")[0]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Replicate(Frame):
    """Ask for the current version of one item, or of a whole tier (all-zero id)."""

    TYPE: ClassVar[int] = 0x06
    NAME: ClassVar[str] = "REPLICATE"
    request_id: int
    tier: Tier
    item_id: bytes

    def __post_init__(self) -> None:
        _u(self.request_id, 32, "replicate.request_id")
        object.__setattr__(self, "tier", _tier(self.tier, "replicate.tier"))
        _bytes(self.item_id, 16, "replicate.item_id")

    @property
    def whole_tier(self) -> bool:
        return self.item_id == bytes(16)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Frame):
    """Keepalive; the PONG's echo gives the round-trip time."""

    TYPE: ClassVar[int] = 0x07
    NAME: ClassVar[str] = "PING"
    nonce: int
    timestamp_ns: int

    def __post_init__(self) -> None:
        _u(self.nonce, 64, "ping.nonce")
        _u(self.timestamp_ns, 64, "ping.timestamp_ns")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Frame):
    """Answer to PING: its nonce and timestamp echoed, plus the responder's clock."""

    TYPE: ClassVar[int] = 0x08
    NAME: ClassVar[str] = "PONG"
    nonce: int
    echo_ns: int
    timestamp_ns: int

    def __post_init__(self) -> None:
        _u(self.nonce, 64, "pong.nonce")
        _u(self.echo_ns, 64, "pong.echo_ns")
        _u(self.timestamp_ns, 64, "pong.timestamp_ns")


def _vet_text(code: object, text: object, field: str) -> None:
    _u(code, 16, f"{field}.code")
    _need(isinstance(text, str), f"{field}.text", "must be a str")
    assert isinstance(text, str)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise LocalProtocolError("not encodable as UTF-8", field=f"{field}.text") from None
    _need(size <= MAX_TEXT, f"{field}.text", f"{size} bytes exceeds {MAX_TEXT}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Error(Frame):
    """The sender is closing because of an error it names; see ``ErrorCode``."""

    TYPE: ClassVar[int] = 0x09
    NAME: ClassVar[str] = "ERROR"
    code: int
    text: str = ""

    def __post_init__(self) -> None:
        _vet_text(self.code, self.text, "error")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bye(Frame):
    """Orderly close; see ``ByeCode``."""

    TYPE: ClassVar[int] = 0x0A
    NAME: ClassVar[str] = "BYE"
    code: int = 0
    text: str = ""

    def __post_init__(self) -> None:
        _vet_text(self.code, self.text, "bye")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Digest(Frame):
    """The sender's order-independent digest of a tier as of its local sequence ``seq``."""

    TYPE: ClassVar[int] = 0x0B
    NAME: ClassVar[str] = "DIGEST"
    tier: Tier
    seq: int
    digest: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", _tier(self.tier, "digest.tier"))
        _u(self.seq, 64, "digest.seq")
        _bytes(self.digest, 32, "digest.digest")


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
