"""Sans-I/O session: bytes in, events out, events in, bytes out (SPEC.md section 5).

Theory of operation: everything that decides whether a frame is allowed now lives in this
module, in ``_TRANSITIONS``; each direction of the session has its own state and moves
through the same table. ``receive_data`` only appends to a buffer; ``next_event`` checks
the length prefix against the limit before waiting for the body (so a peer cannot make us
buffer more than ``max_frame`` bytes), decodes one frame and applies the transition. The
first error poisons the connection: every later call raises the same error, as a peer that
sent garbage once cannot be trusted to be back in frame sync.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Final

from .constants import MAX_FRAME
from .errors import (
    BadMagicError,
    LocalProtocolError,
    ProtocolError,
    SessionStateError,
    TruncatedError,
)
from .frames import (
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
    decode_body,
    encode_frame,
    read_frame_header,
)
from .hopframes import HopPush
from .linkframes import Links
from .memberframes import Members, Prune
from .meshframes import Barrier, BarrierDone, RangeIds, Ranges

__all__ = ["NEED_DATA", "Connection", "ConnectionClosed", "NeedData", "State"]


class State(enum.Enum):
    """State of one direction of a session."""

    IDLE = "IDLE"  # nothing yet: HELLO must come first
    OPEN = "OPEN"
    CLOSED = "CLOSED"  # after ERROR or BYE (or end of stream)


class NeedData(enum.Enum):
    """Returned by ``next_event`` when the buffer holds no complete frame."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """The peer ended the stream cleanly at a frame boundary."""


_FIRST_FRAMES = frozenset({Hello.TYPE, Error.TYPE, Bye.TYPE})
_DATA_FRAMES: tuple[type[Frame], ...] = (
    *(Pull, BatchFrame, Ack, Push, Replicate, Ping, Pong, Digest),
    *(Barrier, BarrierDone, Ranges, RangeIds),  # protocol version 2, by capability
    *(Members, Prune),  # protocol version 2, capability MEMBERSHIP
    HopPush,  # protocol version 5
    Links,  # protocol version 6, capability MEMBERSHIP
)

# The whole session state machine: (state, frame class) -> next state. Absent = not allowed.
_TRANSITIONS: dict[tuple[State, type[Frame]], State] = {
    (State.IDLE, Hello): State.OPEN,
    (State.IDLE, Error): State.CLOSED,
    (State.IDLE, Bye): State.CLOSED,
    (State.OPEN, Error): State.CLOSED,
    (State.OPEN, Bye): State.CLOSED,
    **{(State.OPEN, cls): State.OPEN for cls in _DATA_FRAMES},
}


def _why_not(state: State, frame: Frame) -> str:
    if state is State.IDLE:
        return f"{frame.NAME} before HELLO: HELLO must come first"
    if state is State.OPEN:
        return f"duplicate {frame.NAME}"
    return f"{frame.NAME} after the session was closed"


class Connection:
    """One side of a session, with no I/O of its own.

    Raises (from ``next_event``): ``RemoteProtocolError`` subclasses for anything the peer
    got wrong; (from ``send``) ``LocalProtocolError`` when we break the session rules.
    """

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        if not 1 <= max_frame <= MAX_FRAME:
            raise ValueError(f"max_frame must be in 1..{MAX_FRAME}")
        self.max_frame = max_frame
        self.our_state = State.IDLE
        self.their_state = State.IDLE
        self.their_hello: Hello | None = None
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already consumed
        self._consumed = 0  # bytes consumed before _buf[0], for absolute offsets
        self._eof = False
        self._error: ProtocolError | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0

    # -- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the transport; ``b""`` means end of stream."""
        if self._eof and data:
            raise LocalProtocolError("data received after end of stream", field="connection")
        if not data:
            self._eof = True
            return
        self.bytes_in += len(data)
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]
            self._consumed += self._pos
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf) - self._pos

    def next_event(self) -> Frame | ConnectionClosed | NeedData:
        """Return the next complete event, ``NEED_DATA``, or ``ConnectionClosed``.

        Raises:
            RemoteProtocolError: the peer sent something invalid; the same error is raised
                again on every later call.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except ProtocolError as exc:
            self._error = exc
            self.their_state = State.CLOSED
            raise

    def _next_event(self) -> Frame | ConnectionClosed | NeedData:
        buf, pos = self._buf, self._pos
        base = self._consumed + pos
        try:
            head = read_frame_header(buf, pos, max_frame=self.max_frame)
        except ProtocolError as exc:
            if self.their_state is State.IDLE:
                raise BadMagicError(
                    f"not a meshsyncd peer: first frame: {exc.reason}",
                    field=exc.field,
                    offset=base + (pos if exc.offset is None else exc.offset) - pos,
                ) from None
            raise type(exc)(
                exc.reason,
                field=exc.field,
                offset=base + (pos if exc.offset is None else exc.offset) - pos,
            ) from None
        if head is not None and self.their_state is State.IDLE and head[0] not in _FIRST_FRAMES:
            # The type byte alone decides: refuse before buffering the body.
            raise BadMagicError(
                f"not a meshsyncd peer: first frame has type {head[0]:#04x}, expected HELLO",
                field="frame.type",
                offset=base + 4,
            )
        if head is None or len(buf) - pos < 4 + head[1]:
            if self._eof:
                if self.buffered == 0:
                    self.their_state = State.CLOSED
                    return ConnectionClosed()
                raise TruncatedError(
                    f"stream ended {self.buffered} bytes into a frame", field="frame", offset=base
                )
            return NEED_DATA
        ftype, length = head
        body = bytes(buf[pos + 5 : pos + 4 + length])
        event = decode_body(ftype, body, base + 5)
        nxt = _TRANSITIONS.get((self.their_state, type(event)))
        if nxt is None:
            raise SessionStateError(
                _why_not(self.their_state, event), field="frame.type", offset=base + 4
            )
        self._pos = pos + 4 + length
        self.their_state = nxt
        self.frames_in += 1
        if isinstance(event, Hello):
            self.their_hello = event
        return event

    # -- sending -------------------------------------------------------------------------

    def send(self, event: Frame) -> bytes:
        """Turn an event into bytes for the transport, enforcing our side of the table.

        Raises:
            LocalProtocolError: the event is not allowed in our current state, or too large.
        """
        nxt = _TRANSITIONS.get((self.our_state, type(event)))
        if nxt is None:
            raise LocalProtocolError(_why_not(self.our_state, event), field="frame.type")
        data = encode_frame(event)
        if len(data) - 4 > self.max_frame:
            raise LocalProtocolError(
                f"{len(data) - 4} bytes exceeds this connection's {self.max_frame}",
                field="frame.length",
            )
        self.our_state = nxt
        self.frames_out += 1
        self.bytes_out += len(data)
        return data

    def statistics(self) -> dict[str, object]:
        """Counters and states for the operator's peers table."""
        return {
            "our_state": self.our_state.value,
            "their_state": self.their_state.value,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "buffered": self.buffered,
        }
