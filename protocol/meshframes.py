"""Mesh frames: the sync barrier and range reconciliation (SPEC.md sections 4.1 and 4.2).

Theory of operation: these four frame types exist from protocol version 2 and are sent only
to a peer whose HELLO carries the matching capability bit (``BARRIER``, ``REPAIR``); the
session enforces that, this module only encodes and vets. Each type is a frozen, slotted,
keyword-only dataclass that validates in its constructor (``LocalProtocolError``) and a
decoder that checks every declared count against its limit before reading the entries it
announces (``RemoteProtocolError`` subclasses, with field and offset). Ranges are
inclusive ``[lo, hi]`` intervals of the 128-bit item id space, sorted and disjoint within a
frame, and the ids listed for a range are sorted, unique and inside it: a frame that breaks
that order is refused here, so the reconciliation code never sees one.

They register themselves with ``frames.py`` (``register_frame``) so that ``parse_frame``,
``encode_frame`` and the connection's state table treat them like the core frames.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import ClassVar

from .constants import Tier
from .errors import BadFieldError, LimitError, LocalProtocolError
from .frames import Frame, register_frame

__all__ = [
    "MAX_BARRIER_BUDGET_MS",
    "MAX_BARRIER_NODES",
    "MAX_RANGES",
    "MAX_RANGE_IDS",
    "Barrier",
    "BarrierDone",
    "BarrierStatus",
    "NodeState",
    "RangeDigest",
    "RangeIds",
    "RangeList",
    "Ranges",
]

MAX_BARRIER_NODES = 4096
MAX_BARRIER_BUDGET_MS = 3_600_000
MAX_RANGES = 1024
MAX_RANGE_IDS = 8192

_BARRIER = struct.Struct(">16sIB")
_DONE_FIXED = struct.Struct(">16sBH")
_NODE = struct.Struct(">32sB")
_RANGES_FIXED = struct.Struct(">IBBH")
_RANGE_DIGEST = struct.Struct(">16s16sI16s")
_RANGE_HEAD = struct.Struct(">16s16sH")
_ENTRY = struct.Struct(">16s8s")


class BarrierStatus(enum.IntEnum):
    """How a node answers a BARRIER."""

    DONE = 0  # this node and the nodes it reached for the barrier are covered
    SEEN = 1  # the barrier reached this node by another path first: nothing to add here
    BUSY = 2  # too many barriers in flight here: not covered


class NodeState(enum.IntEnum):
    """One node's part in a barrier's answer."""

    COVERED = 0
    UNREACHABLE = 1  # configured peer with no session
    TIMEOUT = 2  # had a session, did not answer within the budget
    UNSUPPORTED = 3  # its protocol version or capabilities carry no barrier
    BUSY = 4


def _need(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise LocalProtocolError(message, field=field)


def _uint(value: object, bits: int, field: str) -> None:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << bits),
        field,
        f"must be a u{bits}",
    )


def _raw(value: object, size: int, field: str) -> None:
    _need(isinstance(value, bytes) and len(value) == size, field, f"must be {size} bytes")


def _tier_value(value: object, field: str) -> Tier:
    if not isinstance(value, int) or value not in Tier._value2member_map_:
        raise LocalProtocolError(f"unknown tier {value}", field=field)
    return Tier(value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Barrier(Frame):
    """Start (or pass on) the mesh-wide barrier ``barrier_id``; answer within ``budget_ms``."""

    TYPE: ClassVar[int] = 0x0C
    NAME: ClassVar[str] = "BARRIER"
    barrier_id: bytes
    budget_ms: int
    hops: int

    def __post_init__(self) -> None:
        _raw(self.barrier_id, 16, "barrier.barrier_id")
        _uint(self.budget_ms, 32, "barrier.budget_ms")
        _need(1 <= self.budget_ms <= MAX_BARRIER_BUDGET_MS, "barrier.budget_ms", "out of range")
        _uint(self.hops, 8, "barrier.hops")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BarrierDone(Frame):
    """The answer to a BARRIER: the status here and the state of each node behind us."""

    TYPE: ClassVar[int] = 0x0D
    NAME: ClassVar[str] = "BARRIER_DONE"
    barrier_id: bytes
    status: BarrierStatus
    nodes: tuple[tuple[bytes, NodeState], ...] = ()

    def __post_init__(self) -> None:
        _raw(self.barrier_id, 16, "barrier_done.barrier_id")
        try:
            object.__setattr__(self, "status", BarrierStatus(self.status))
        except (ValueError, TypeError):
            raise LocalProtocolError("unknown status", field="barrier_done.status") from None
        _need(isinstance(self.nodes, tuple), "barrier_done.nodes", "must be a tuple")
        _need(len(self.nodes) <= MAX_BARRIER_NODES, "barrier_done.nodes", "too many nodes")
        fixed = []
        for node_id, state in self.nodes:
            _raw(node_id, 32, "barrier_done.nodes.node_id")
            try:
                fixed.append((node_id, NodeState(state)))
            except (ValueError, TypeError):
                raise LocalProtocolError("unknown state", field="barrier_done.nodes") from None
        object.__setattr__(self, "nodes", tuple(fixed))


@dataclasses.dataclass(frozen=True, slots=True)
class RangeDigest:
    """One range's summary: how many rows it holds and the first 16 bytes of their digest."""

    lo: bytes
    hi: bytes
    count: int
    digest: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class RangeList:
    """One range's complete contents: ``(item_id, row hash prefix)`` pairs, sorted by id."""

    lo: bytes
    hi: bytes
    entries: tuple[tuple[bytes, bytes], ...]


def _check_ranges(ranges: tuple[RangeDigest, ...] | tuple[RangeList, ...], field: str) -> None:
    _need(isinstance(ranges, tuple), field, "must be a tuple")
    _need(len(ranges) <= MAX_RANGES, field, f"more than {MAX_RANGES} ranges")
    prev: bytes | None = None
    for r in ranges:
        _raw(r.lo, 16, f"{field}.lo")
        _raw(r.hi, 16, f"{field}.hi")
        _need(r.lo <= r.hi, f"{field}.hi", "below lo")
        _need(prev is None or r.lo > prev, f"{field}.lo", "ranges must be sorted and disjoint")
        prev = r.hi


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ranges(Frame):
    """Range digests of a tier: "this is what I hold here; answer for what differs"."""

    TYPE: ClassVar[int] = 0x0E
    NAME: ClassVar[str] = "RANGES"
    request_id: int
    tier: Tier
    reply: bool
    ranges: tuple[RangeDigest, ...]

    def __post_init__(self) -> None:
        _uint(self.request_id, 32, "ranges.request_id")
        object.__setattr__(self, "tier", _tier_value(self.tier, "ranges.tier"))
        _need(isinstance(self.reply, bool), "ranges.reply", "must be a bool")
        _check_ranges(self.ranges, "ranges.ranges")
        for r in self.ranges:
            _uint(r.count, 32, "ranges.ranges.count")
            _raw(r.digest, 16, "ranges.ranges.digest")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RangeIds(Frame):
    """The ids (and row hash prefixes) of a tier in some ranges, for an item-level diff."""

    TYPE: ClassVar[int] = 0x0F
    NAME: ClassVar[str] = "RANGE_IDS"
    request_id: int
    tier: Tier
    reply: bool
    ranges: tuple[RangeList, ...]

    def __post_init__(self) -> None:
        _uint(self.request_id, 32, "range_ids.request_id")
        object.__setattr__(self, "tier", _tier_value(self.tier, "range_ids.tier"))
        _need(isinstance(self.reply, bool), "range_ids.reply", "must be a bool")
        _check_ranges(self.ranges, "range_ids.ranges")
        total = 0
        for r in self.ranges:
            _need(isinstance(r.entries, tuple), "range_ids.entries", "must be a tuple")
            _need(len(r.entries) <= 0xFFFF, "range_ids.entries", "more than 65535 in a range")
            total += len(r.entries)
            prev = None
            for item_id, digest in r.entries:
                _raw(item_id, 16, "range_ids.entries.item_id")
                _raw(digest, 8, "range_ids.entries.hash")
                _need(r.lo <= item_id <= r.hi, "range_ids.entries.item_id", "outside its range")
                _need(prev is None or item_id > prev, "range_ids.entries", "ids must be sorted")
                prev = item_id
        _need(total <= MAX_RANGE_IDS, "range_ids.entries", f"more than {MAX_RANGE_IDS} ids")


# -- encoding ----------------------------------------------------------------------------


def _encode_barrier(event: Frame) -> bytes:
    assert isinstance(event, Barrier)
    return _BARRIER.pack(event.barrier_id, event.budget_ms, event.hops)


def _encode_done(event: Frame) -> bytes:
    assert isinstance(event, BarrierDone)
    head = _DONE_FIXED.pack(event.barrier_id, event.status, len(event.nodes))
    return head + b"".join(_NODE.pack(node_id, state) for node_id, state in event.nodes)


def _encode_ranges(event: Frame) -> bytes:
    assert isinstance(event, Ranges)
    head = _RANGES_FIXED.pack(event.request_id, event.tier, event.reply, len(event.ranges))
    body = [_RANGE_DIGEST.pack(r.lo, r.hi, r.count, r.digest) for r in event.ranges]
    return head + b"".join(body)


def _encode_range_ids(event: Frame) -> bytes:
    assert isinstance(event, RangeIds)
    out = [_RANGES_FIXED.pack(event.request_id, event.tier, event.reply, len(event.ranges))]
    for r in event.ranges:
        out.append(_RANGE_HEAD.pack(r.lo, r.hi, len(r.entries)))
        out.extend(item_id + digest for item_id, digest in r.entries)
    return b"".join(out)


# -- decoding ----------------------------------------------------------------------------


def _size(body: bytes, need: int, field: str, base: int) -> None:
    if len(body) != need:
        raise BadFieldError(f"body is {len(body)} bytes, expected {need}", field=field, offset=base)


def _short(body: bytes, need: int, field: str, base: int) -> None:
    if len(body) < need:
        raise BadFieldError(f"body is {len(body)} bytes, need {need}", field=field, offset=base)


def _decode_barrier(body: bytes, base: int) -> Frame:
    _size(body, _BARRIER.size, "barrier", base)
    barrier_id, budget, hops = _BARRIER.unpack(body)
    if not 1 <= budget <= MAX_BARRIER_BUDGET_MS:
        raise BadFieldError(
            f"{budget} out of 1..{MAX_BARRIER_BUDGET_MS}",
            field="barrier.budget_ms",
            offset=base + 16,
        )
    return Barrier(barrier_id=barrier_id, budget_ms=budget, hops=hops)


def _decode_done(body: bytes, base: int) -> Frame:
    _short(body, _DONE_FIXED.size, "barrier_done", base)
    barrier_id, status, count = _DONE_FIXED.unpack_from(body)
    if status not in BarrierStatus._value2member_map_:
        raise BadFieldError(
            f"unknown status {status}", field="barrier_done.status", offset=base + 16
        )
    if count > MAX_BARRIER_NODES:
        raise LimitError(
            f"{count} nodes exceeds {MAX_BARRIER_NODES}",
            field="barrier_done.count",
            offset=base + 17,
        )
    _size(body, _DONE_FIXED.size + count * _NODE.size, "barrier_done", base)
    nodes = []
    for i in range(count):
        off = _DONE_FIXED.size + i * _NODE.size
        node_id, state = _NODE.unpack_from(body, off)
        if state not in NodeState._value2member_map_:
            raise BadFieldError(
                f"unknown node state {state}",
                field=f"barrier_done.nodes[{i}].state",
                offset=base + off + 32,
            )
        nodes.append((node_id, NodeState(state)))
    return BarrierDone(barrier_id=barrier_id, status=BarrierStatus(status), nodes=tuple(nodes))


def _ranges_head(body: bytes, name: str, base: int) -> tuple[int, Tier, bool, int]:
    _short(body, _RANGES_FIXED.size, name, base)
    request_id, tier, reply, count = _RANGES_FIXED.unpack_from(body)
    if tier not in Tier._value2member_map_:
        raise BadFieldError(f"unknown tier {tier}", field=f"{name}.tier", offset=base + 4)
    if reply > 1:
        raise BadFieldError(f"must be 0 or 1, got {reply}", field=f"{name}.reply", offset=base + 5)
    if count > MAX_RANGES:
        raise LimitError(
            f"{count} ranges exceeds {MAX_RANGES}", field=f"{name}.count", offset=base + 6
        )
    return request_id, Tier(tier), bool(reply), count


def _vet_bounds(lo: bytes, hi: bytes, prev: bytes | None, name: str, at: int) -> None:
    if lo > hi:
        raise BadFieldError("hi is below lo", field=f"{name}.hi", offset=at + 16)
    if prev is not None and lo <= prev:
        raise BadFieldError("ranges must be sorted and disjoint", field=f"{name}.lo", offset=at)


def _decode_ranges(body: bytes, base: int) -> Frame:
    request_id, tier, reply, count = _ranges_head(body, "ranges", base)
    _size(body, _RANGES_FIXED.size + count * _RANGE_DIGEST.size, "ranges", base)
    ranges = []
    prev: bytes | None = None
    for i in range(count):
        off = _RANGES_FIXED.size + i * _RANGE_DIGEST.size
        lo, hi, n, digest = _RANGE_DIGEST.unpack_from(body, off)
        _vet_bounds(lo, hi, prev, f"ranges.ranges[{i}]", base + off)
        prev = hi
        ranges.append(RangeDigest(lo, hi, n, digest))
    return Ranges(request_id=request_id, tier=tier, reply=reply, ranges=tuple(ranges))


def _decode_range_ids(body: bytes, base: int) -> Frame:
    request_id, tier, reply, count = _ranges_head(body, "range_ids", base)
    off = _RANGES_FIXED.size
    ranges = []
    total = 0
    prev: bytes | None = None
    for i in range(count):
        name = f"range_ids.ranges[{i}]"
        _short(body, off + _RANGE_HEAD.size, name, base + off)
        lo, hi, n = _RANGE_HEAD.unpack_from(body, off)
        _vet_bounds(lo, hi, prev, name, base + off)
        prev = hi
        total += n
        if total > MAX_RANGE_IDS:
            raise LimitError(
                f"more than {MAX_RANGE_IDS} ids", field=f"{name}.count", offset=base + off + 32
            )
        off += _RANGE_HEAD.size
        _short(body, off + n * _ENTRY.size, name, base + off)
        entries = []
        last: bytes | None = None
        for j in range(n):
            item_id, digest = _ENTRY.unpack_from(body, off)
            if not lo <= item_id <= hi or (last is not None and item_id <= last):
                raise BadFieldError(
                    "ids must be sorted, unique and inside their range",
                    field=f"{name}.entries[{j}]",
                    offset=base + off,
                )
            last = item_id
            entries.append((item_id, digest))
            off += _ENTRY.size
        ranges.append(RangeList(lo, hi, tuple(entries)))
    if off != len(body):
        raise BadFieldError(
            f"{len(body) - off} bytes after the last range", field="range_ids", offset=base + off
        )
    return RangeIds(request_id=request_id, tier=tier, reply=reply, ranges=tuple(ranges))


register_frame(Barrier, _encode_barrier, _decode_barrier)
register_frame(BarrierDone, _encode_done, _decode_done)
register_frame(Ranges, _encode_ranges, _decode_ranges)
register_frame(RangeIds, _encode_range_ids, _decode_range_ids)
