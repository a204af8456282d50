"""Invariant checks behind the fuzz harnesses (fuzz/README.md; SPEC.md sections 2-5 and 7).

Theory of operation: each ``check_*`` takes arbitrary bytes, runs one decoder of
``protocol`` on them and raises :class:`InvariantViolation` when the outcome breaks the
contract. Any exception other than ``ProtocolError`` simply escapes, which the fuzzer (or
the corpus replay test) reports as a crash. The contract, for every decoder:

- the outcome is either valid objects or a ``RemoteProtocolError`` naming a field (garbage
  from a peer is never *our* fault, so never ``LocalProtocolError``);
- valid objects re-encode to the exact bytes they came from (a compressed batch: the same
  header fields and the same raw body, see SPEC.md section 3 "Canonical form"), and the
  validating constructor accepts what the decoder built;
- the same bytes give the same result whole or in pieces: as ``bytes``, ``bytearray`` or
  ``memoryview``, at an offset inside a larger buffer (error offsets shift with it), with
  trailing data after a valid encoding, and every strict prefix of a valid encoding is a
  ``TruncatedError``;
- the connection gives the same events and the same error whether its stream is fed whole,
  in fuzzer-chosen chunks or byte by byte, and the events obey the session table of SPEC.md
  section 5 (restated here independently of ``protocol/connection.py``).

This module must not import atheris: CI replays the corpus through it without the fuzz extra.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator
from typing import TypeVar

from protocol import (
    BATCH_HEADER_SIZE,
    MAX_FRAME,
    NEED_DATA,
    Ack,
    Barrier,
    BarrierDone,
    Batch,
    BatchFrame,
    Bye,
    Connection,
    ConnectionClosed,
    Digest,
    Error,
    Frame,
    Hello,
    HopPush,
    Item,
    Links,
    Members,
    NeedData,
    Ping,
    Pong,
    ProtocolError,
    Prune,
    Pull,
    Push,
    RangeIds,
    Ranges,
    RemoteProtocolError,
    Replicate,
    SessionStateError,
    State,
    TruncatedError,
    encode_frame,
    inflate,
    pack_batch,
    pack_item,
    parse_frame,
    peek_batch,
    unpack_batch,
    unpack_item,
)
from protocol import item as _item_module

from .repair import repair_batch, repair_frames, repair_item

__all__ = [
    "TARGETS",
    "InvariantViolation",
    "check_batch",
    "check_connection",
    "check_frame",
    "check_item",
]

T = TypeVar("T")
Decoder = Callable[[bytes | bytearray | memoryview, int], tuple[T, int]]

_JUNK = b"\xa5\x5a\x00\xff\x4d\x53"  # bytes put before an encoding to move its offset
_TAIL = b"\x00\x01MSBT\xff"  # bytes put after a valid encoding


class InvariantViolation(AssertionError):
    """A decoder returned something the contract forbids (a bug, like a stray exception)."""


def _fail(what: str, data: bytes) -> InvariantViolation:
    shown = data[:96].hex() + ("..." if len(data) > 96 else "")
    return InvariantViolation(f"{what} (input {len(data)} bytes: {shown})")


def _attempt(decode: Decoder[T], buf: bytes | bytearray | memoryview, offset: int) -> object:
    """Run a decoder; return its result or the ProtocolError it raised."""
    try:
        return decode(buf, offset)
    except ProtocolError as exc:
        return exc


def _pure_python(decode: Decoder[T], buf: bytes, offset: int) -> object | None:
    """Decode again with the optional C item scanner off; None when it is not loaded.

    ``protocol/_speedups.c`` accepts only items the Python rules accept and hands every
    other item to Python, so both paths must give the same objects or the same error.
    """
    if getattr(_item_module, "_scan", None) is None:
        return None
    saved = _item_module._scan
    _item_module._scan = None
    try:
        return _attempt(decode, buf, offset)
    finally:
        _item_module._scan = saved


def _same(a: object, b: object) -> bool:
    if isinstance(a, ProtocolError) and isinstance(b, ProtocolError):
        return _error_key(a) == _error_key(b)
    return a == b


def _error_key(exc: ProtocolError) -> tuple[type[ProtocolError], str, int | None, str]:
    return (type(exc), exc.field, exc.offset, exc.reason)


def _check_error(exc: ProtocolError, data: bytes) -> None:
    if not isinstance(exc, RemoteProtocolError):
        raise _fail(f"decoding raised {type(exc).__name__}, not a RemoteProtocolError", data)
    if not exc.field:
        raise _fail(f"{type(exc).__name__} names no field: {exc}", data)


def _cuts(data: bytes, end: int) -> Iterator[int]:
    """A few strict prefix lengths of a valid encoding, chosen from its content."""
    crc = zlib.crc32(data)
    yield from sorted({0, end - 1, min(47, end - 1), crc % end, (crc >> 16) % end})


def _check_decoder(
    decode: Decoder[T],
    data: bytes,
    on_valid: Callable[[T, bytes], None],
    offset_moves: Callable[[ProtocolError], bool],
) -> None:
    """The part of the contract every decoder shares (module docstring)."""
    first = _attempt(decode, data, 0)
    pure = _pure_python(decode, data, 0)
    if pure is not None and not _same(first, pure):
        raise _fail(f"C item scanner gave {first!r}, pure Python {pure!r}", data)
    for variant in (bytearray(data), memoryview(data)):
        again = _attempt(decode, variant, 0)
        if not _same(first, again):
            kind = type(variant).__name__
            raise _fail(f"{kind} input gave {again!r}, bytes gave {first!r}", data)
    k = len(_JUNK)
    if isinstance(first, ProtocolError):
        _check_error(first, data)
        shifted = _attempt(decode, _JUNK + data, k)
        if not isinstance(shifted, ProtocolError):
            raise _fail(f"at offset {k} decoded to {shifted!r}, at 0 raised {first!r}", data)
        offset = first.offset
        if offset is not None and offset_moves(first):
            offset += k
        if _error_key(shifted) != (type(first), first.field, offset, first.reason):
            raise _fail(f"at offset {k} raised {shifted!r}, at 0 {first!r}", data)
        return
    assert isinstance(first, tuple)
    obj, end = first
    if not 0 < end <= len(data):
        raise _fail(f"decoder returned end offset {end}", data)
    on_valid(obj, data[:end])
    for buf, start in ((_JUNK + data, k), (data + _TAIL, 0), (_JUNK + data[:end] + _TAIL, k)):
        again = _attempt(decode, buf, start)
        if again != (obj, start + end):
            raise _fail(f"at offset {start} with other bytes around gave {again!r}", data)
    for cut in _cuts(data, end):
        short = _attempt(decode, data[:cut], 0)
        if not isinstance(short, TruncatedError):
            raise _fail(f"prefix of {cut} of a valid {end}-byte encoding gave {short!r}", data)


def _with_repaired(data: bytes, repair: Callable[[bytes], bytes]) -> tuple[bytes, ...]:
    """The input, and its CRC-repaired twin when that differs (see fuzz/repair.py)."""
    fixed = repair(data)
    return (data,) if fixed == data else (data, fixed)


# -- items ------------------------------------------------------------------------------


def _item_valid(item: Item, wire: bytes) -> None:
    if pack_item(item) != wire:
        raise _fail(f"{item!r} re-encodes to other bytes", wire)
    try:
        rebuilt = Item(**item._asdict())
        item.value()
    except ProtocolError as exc:
        raise _fail(f"decoded item is refused by its own constructor: {exc!r}", wire) from None
    if rebuilt != item:
        raise _fail(f"constructor turned {item!r} into {rebuilt!r}", wire)


def check_item(data: bytes) -> None:
    """``protocol.unpack_item``: a valid item or a RemoteProtocolError, nothing else."""
    for buf in _with_repaired(data, repair_item):
        _check_decoder(unpack_item, buf, _item_valid, lambda exc: True)


# -- batches ----------------------------------------------------------------------------


def _batch_valid(batch: Batch, wire: bytes) -> None:
    head = peek_batch(wire)
    if batch.body_zstd != bool(head.flags & 1):
        raise _fail("body_zstd does not match the header flag", wire)
    for item in batch.items:
        _item_valid(item, pack_item(item))
    try:
        rebuilt = Batch(
            batch_id=batch.batch_id,
            source=batch.source,
            target=batch.target,
            tier=batch.tier,
            items=batch.items,
        )
    except ProtocolError as exc:
        raise _fail(f"decoded batch is refused by its own constructor: {exc!r}", wire) from None
    if rebuilt != batch:
        raise _fail("constructor changed the decoded batch", wire)
    plain = pack_batch(batch, compress=False)
    if not batch.body_zstd:
        if plain != wire:
            raise _fail("plain batch re-encodes to other bytes", wire)
        return
    # Compressed: same header fields and the same raw body; zstd bytes may differ.
    raw = inflate(wire[BATCH_HEADER_SIZE:], head.raw_len, "batch.body", BATCH_HEADER_SIZE)
    if plain[BATCH_HEADER_SIZE:] != raw:
        raise _fail("compressed batch re-encodes to another raw body", wire)
    again = peek_batch(plain)
    fields = ("tier", "batch_id", "source", "target", "item_count", "raw_len")
    if any(getattr(again, name) != getattr(head, name) for name in fields):
        raise _fail(f"re-encoded header {again!r} differs from {head!r}", wire)
    repacked = pack_batch(batch, compress=True)
    back, end = unpack_batch(repacked)
    if back != batch or not back.body_zstd or end != len(repacked):
        raise _fail("compressed batch does not survive pack_batch(compress=True)", wire)


def _batch_offset_moves(exc: ProtocolError) -> bool:
    # Item errors inside a body are reported at their offset in the raw body (SPEC.md 3).
    return not exc.field.startswith("batch.items")


def check_batch(data: bytes) -> None:
    """``protocol.unpack_batch``: a valid batch or a RemoteProtocolError, nothing else."""
    for buf in _with_repaired(data, repair_batch):
        _check_decoder(unpack_batch, buf, _batch_valid, _batch_offset_moves)


# -- frames -----------------------------------------------------------------------------


def _rebuild(frame: Frame) -> Frame:
    fields = {f.name: getattr(frame, f.name) for f in dataclasses.fields(frame) if f.init}
    return type(frame)(**fields)


def _frame_valid(frame: Frame, wire: bytes) -> None:
    if encode_frame(frame) != wire:
        raise _fail(f"{frame!r} re-encodes to other bytes", wire)
    try:
        rebuilt = _rebuild(frame)
    except ProtocolError as exc:
        raise _fail(f"decoded frame is refused by its own constructor: {exc!r}", wire) from None
    if rebuilt != frame:
        raise _fail(f"constructor turned {frame!r} into {rebuilt!r}", wire)
    if isinstance(frame, BatchFrame | Push | HopPush):
        prefix = {Push: "push.batch", HopPush: "hop_push.batch"}.get(
            type(frame), "batch_frame.batch"
        )
        if frame.header != peek_batch(frame.batch, prefix=prefix):
            raise _fail("vetted batch header differs from peek_batch", wire)
        try:
            batch = frame.decode()
        except ProtocolError as exc:
            _check_error(exc, wire)
        else:
            _batch_valid(batch, frame.batch)


def check_frame(data: bytes) -> None:
    """``protocol.frames.parse_frame``: one valid frame or a RemoteProtocolError."""
    for buf in _with_repaired(data, repair_frames):
        _check_decoder(parse_frame, buf, _frame_valid, lambda exc: True)


# -- connection -------------------------------------------------------------------------

_MAX_FRAMES = (MAX_FRAME, 1 << 16, 1024, 100)
_BYTEWISE_LIMIT = 2048
_DATA_FRAMES = (
    *(Pull, BatchFrame, Ack, Push, Replicate, Ping, Pong, Digest),
    *(Barrier, BarrierDone, Ranges, RangeIds),  # protocol 2
    *(Members, Prune),  # protocol 2, MEMBERSHIP
    HopPush,  # protocol 5
    Links,  # protocol 6, MEMBERSHIP
)
# SPEC.md section 5, restated: state -> frames allowed in it.
_ALLOWED: dict[State, tuple[type[Frame], ...]] = {
    State.IDLE: (Hello, Error, Bye),
    State.OPEN: (*_DATA_FRAMES, Error, Bye),
    State.CLOSED: (),
}

Event = Frame | ConnectionClosed
Outcome = ProtocolError | ConnectionClosed | NeedData


@dataclasses.dataclass
class _Run:
    events: list[Event]
    outcome: Outcome
    conn: Connection


def _drain(conn: Connection, events: list[Event], data: bytes) -> Outcome:
    """Call next_event until it needs data, reports the end or raises."""
    while True:
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            try:
                conn.next_event()
            except ProtocolError as again:
                if again is not exc:
                    what = f"poisoned connection raised {exc!r}, then {again!r}"
                    raise _fail(what, data) from None
            else:
                raise _fail(f"connection kept going after {exc!r}", data)
            return exc
        if isinstance(event, NeedData):
            return event
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return event


def _feed(stream: bytes, chunks: list[int], eof: bool, max_frame: int, data: bytes) -> _Run:
    conn = Connection(max_frame=max_frame)
    events: list[Event] = []
    outcome = _drain(conn, events, data)
    if outcome is not NEED_DATA:
        raise _fail(f"fresh connection returned {outcome!r}", data)
    pos = 0
    for size in chunks:
        conn.receive_data(stream[pos : pos + size])
        pos += size
        outcome = _drain(conn, events, data)
        if not isinstance(outcome, NeedData):
            break
    else:
        if eof:
            conn.receive_data(b"")
            outcome = _drain(conn, events, data)
            if isinstance(outcome, NeedData):
                raise _fail("NEED_DATA after end of stream", data)
    if isinstance(outcome, ConnectionClosed) and (not eof or pos != len(stream)):
        raise _fail("ConnectionClosed before the end of the stream", data)
    return _Run(events, outcome, conn)


def _outcome_key(outcome: Outcome) -> object:
    if isinstance(outcome, ProtocolError):
        return _error_key(outcome)
    return type(outcome)


def _chunks(sizes: list[int], total: int) -> list[int]:
    out: list[int] = []
    pos = 0
    index = 0
    while pos < total:
        size = min(sizes[index % len(sizes)], total - pos)
        out.append(size)
        pos += size
        index += 1
    return out


def _check_session(run: _Run, stream: bytes, max_frame: int, data: bytes) -> None:
    """The session table, the counters and byte-exact re-encoding of a whole run."""
    state = State.IDLE
    frames: list[Frame] = []
    for index, event in enumerate(run.events):
        if isinstance(event, ConnectionClosed):
            if index != len(run.events) - 1:
                raise _fail("events after ConnectionClosed", data)
            state = State.CLOSED
            continue
        if not isinstance(event, _ALLOWED[state]):
            raise _fail(f"{event.NAME} delivered in state {state.name}", data)
        frames.append(event)
        if isinstance(event, Hello):
            state = State.OPEN
        elif isinstance(event, Error | Bye):
            state = State.CLOSED
    conn = run.conn
    if isinstance(run.outcome, ProtocolError):
        _check_error(run.outcome, data)
        if state is State.IDLE and isinstance(run.outcome, SessionStateError):
            raise _fail("a bad first frame must be BadMagicError, not SessionStateError", data)
        state = State.CLOSED
    if conn.their_state is not state:
        raise _fail(f"their_state {conn.their_state.name}, the table says {state.name}", data)
    hello = frames[0] if frames and isinstance(frames[0], Hello) else None
    if conn.their_hello != hello:
        raise _fail(f"their_hello is {conn.their_hello!r}, expected {hello!r}", data)
    if conn.frames_in != len(frames):
        raise _fail(f"frames_in {conn.frames_in}, delivered {len(frames)}", data)
    peer = Connection(max_frame=max_frame)
    try:
        sent = b"".join(peer.send(frame) for frame in frames)
    except ProtocolError as exc:
        raise _fail(f"re-sending the received frames raised {exc!r}", data) from None
    if sent != stream[: len(sent)]:
        raise _fail("received frames re-encode to other bytes", data)
    if isinstance(run.outcome, ConnectionClosed) and len(sent) != len(stream):
        raise _fail("ConnectionClosed with bytes left over", data)
    if isinstance(run.outcome, NeedData) and conn.buffered != len(stream) - len(sent):
        raise _fail(f"buffered {conn.buffered}, expected {len(stream) - len(sent)}", data)
    offset = run.outcome.offset if isinstance(run.outcome, ProtocolError) else None
    if offset is not None and not len(sent) <= offset <= len(stream):
        raise _fail(f"error offset {offset} outside the bad frame at {len(sent)}", data)


def check_connection(data: bytes) -> None:
    """``protocol.Connection`` fed a stream whole and in pieces: same events, same error.

    Input layout: byte 0 is a control byte (bits 0-2: number n of u16 chunk sizes that
    follow; bit 3: end the stream with ``b""``; bits 4-5: ``max_frame`` choice; bit 6: also
    feed byte by byte), then n big-endian u16 chunk sizes (0 counts as 1), then the stream.
    """
    if not data:
        return
    control = data[0]
    count = control & 0x07
    head = 1 + 2 * count
    sizes = [max(1, int.from_bytes(data[i : i + 2], "big")) for i in range(1, head, 2)]
    sizes = sizes or [max(1, (len(data) - head) // 2)]
    for stream in _with_repaired(data[head:], repair_frames):
        _check_stream(stream, sizes, control, data)


def _check_stream(stream: bytes, sizes: list[int], control: int, data: bytes) -> None:
    eof = bool(control & 0x08)
    max_frame = _MAX_FRAMES[(control >> 4) & 0x03]
    whole = _feed(stream, [len(stream)] if stream else [], eof, max_frame, data)
    _check_session(whole, stream, max_frame, data)
    plans = [_chunks(sizes, len(stream))]
    if control & 0x40 and len(stream) <= _BYTEWISE_LIMIT:
        plans.append([1] * len(stream))
    for plan in plans:
        run = _feed(stream, plan, eof, max_frame, data)
        if run.events != whole.events or [type(e) for e in run.events] != [
            type(e) for e in whole.events
        ]:
            raise _fail(f"fed in {len(plan)} pieces: other events than fed whole", data)
        if _outcome_key(run.outcome) != _outcome_key(whole.outcome):
            what = f"fed in {len(plan)} pieces: {run.outcome!r}, whole: {whole.outcome!r}"
            raise _fail(what, data)
        _check_session(run, stream, max_frame, data)


# Imported last: fuzz/memshadow.py builds on the shared checks defined above.
from .memshadow import check_memshadow  # noqa: E402

TARGETS: dict[str, Callable[[bytes], None]] = {
    "item": check_item,
    "batch": check_batch,
    "frame": check_frame,
    "connection": check_connection,
    "memshadow": check_memshadow,
}
