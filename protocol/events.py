"""Session events: one frozen, validating dataclass per frame type (SPEC.md section 4).

Why a module of their own: the events are what the rest of the daemon handles, while
``frames.py`` turns them into bytes and back. Each constructor validates its fields and
raises ``LocalProtocolError`` (we were asked to send something invalid); the decoder builds
events it has already vetted without calling it (``frames._trusted``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .batch import Batch, BatchHeader, peek_batch, unpack_batch
from .constants import (
    MAX_BATCH_ITEMS,
    MAX_BATCH_RAW,
    MAX_TEXT,
    Tier,
)
from .errors import (
    LocalProtocolError,
    ProtocolError,
)

__all__ = [
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
]


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
