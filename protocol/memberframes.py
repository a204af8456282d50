"""Membership frames: introductions, liveness gossip and broadcast-tree pruning (SPEC.md 4.3).

Theory of operation: MEMBERS (0x10) and PRUNE (0x11) exist from protocol version 2 and are
sent only to a peer whose HELLO carries ``MEMBERSHIP``; the session enforces that, this
module only encodes and vets. A MEMBERS frame is a list of fixed-size member records
sorted by node id (so a duplicate is a decode error, not a policy question); its ``kind``
says what the list means: ``GOSSIP`` (addresses and heartbeats, believed by anyone for ids
it already trusts), ``VOUCH`` (an introducer's complete list of the peers it vouches for)
or ``ASK`` (empty: "you are my introducer, tell me your peers"). Whether a sender may vouch
is the receiver's decision (``meshsyncd/mesh/membership.py``), never this module's. PRUNE
carries sorted, unique origins (short node ids). Every count is checked against its limit
before a single record is read (``LimitError``), and each record's fields are checked in
the order of the table in SPEC.md 4.3, so this codec and its construct twin
(``memberschema.py``) name the same first fault.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import ClassVar

from .errors import BadFieldError, LimitError, LocalProtocolError
from .frames import Frame, _trusted, register_frame

__all__ = [
    "HOST_FIELD",
    "MAX_MEMBERS",
    "MAX_PRUNE",
    "Member",
    "MemberKind",
    "MemberState",
    "Members",
    "Prune",
]

MAX_MEMBERS = 4096
MAX_PRUNE = 4096
HOST_FIELD = 64  # bytes reserved for a member's host name or address, NUL padded
TIER_MASK = 0x07  # tiers travel as a bit mask: bit t set = tier t

_HEAD = struct.Struct(">BH")
_RECORD = struct.Struct(f">32sBBBQHB{HOST_FIELD}s")
_PRUNE_HEAD = struct.Struct(">BH")
_ORIGIN = struct.Struct(">Q")
# Characters a host may hold: a DNS name, an IPv4 or an IPv6 literal (no brackets).
_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:")


class MemberKind(enum.IntEnum):
    """What a MEMBERS frame's list means."""

    GOSSIP = 0  # liveness and addresses of members the sender knows
    VOUCH = 1  # the complete list of peers the sender (an introducer) vouches for
    ASK = 2  # no records: "I treat you as my introducer; send me your VOUCH list"


class MemberState(enum.IntEnum):
    """A member's liveness as the sender sees it."""

    ALIVE = 0
    DEAD = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One member record: who, where, what its introducer shares with it, how fresh.

    ``heartbeat`` is the member's own counter (it raises it; everyone keeps the highest);
    ``tiers`` and ``write_tiers`` are bit masks (bit t = tier t): in a VOUCH, the tiers the
    introducer sends to that member and accepts from it. ``host`` may be empty (unknown).
    """

    node_id: bytes
    state: MemberState = MemberState.ALIVE
    tiers: int = TIER_MASK
    write_tiers: int = TIER_MASK
    heartbeat: int = 0
    host: str = ""
    port: int = 0


def _need(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise LocalProtocolError(message, field=field)


def _uint(value: object, bits: int, field: str) -> None:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << bits),
        field,
        f"must be a u{bits}",
    )


def _check_member(m: object, field: str) -> None:
    if not isinstance(m, Member):
        raise LocalProtocolError("must be a Member", field=field)
    node_id, heartbeat, port, host = m.node_id, m.heartbeat, m.port, m.host
    if not (isinstance(node_id, bytes) and len(node_id) == 32):
        raise LocalProtocolError("must be 32 bytes", field=f"{field}.node_id")
    if m.state not in MemberState._value2member_map_:
        raise LocalProtocolError("unknown state", field=f"{field}.state")
    for name, value, bits in (
        ("tiers", m.tiers, 3),
        ("write_tiers", m.write_tiers, 3),
        ("heartbeat", heartbeat, 64),
        ("port", port, 16),
    ):
        if type(value) is not int or not 0 <= value < (1 << bits):  # bools are not u-ints
            _uint(value, bits, f"{field}.{name}")
            raise LocalProtocolError("unknown tier bits", field=f"{field}.{name}")
    if not isinstance(host, str):
        raise LocalProtocolError("must be a str", field=f"{field}.host")
    if host:
        raw = host.encode("ascii", errors="replace")
        _need(len(raw) <= HOST_FIELD, f"{field}.host", f"longer than {HOST_FIELD} bytes")
        _need(_HOST_CHARS.issuperset(raw), f"{field}.host", "not a host name or address")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Members(Frame):
    """A list of member records; ``kind`` says whether it gossips, vouches or asks."""

    TYPE: ClassVar[int] = 0x10
    NAME: ClassVar[str] = "MEMBERS"
    kind: MemberKind
    members: tuple[Member, ...] = ()

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", MemberKind(self.kind))
        except (ValueError, TypeError):
            raise LocalProtocolError("unknown kind", field="members.kind") from None
        _need(isinstance(self.members, tuple), "members.members", "must be a tuple")
        _need(len(self.members) <= MAX_MEMBERS, "members.members", f"more than {MAX_MEMBERS}")
        _need(self.kind != MemberKind.ASK or not self.members, "members.members", "ASK lists none")
        prev: bytes | None = None
        for m in self.members:
            _check_member(m, "members.members")
            _need(prev is None or m.node_id > prev, "members.members", "must be sorted, unique")
            prev = m.node_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Prune(Frame):
    """``graft`` False: stop pushing URGENT/HIGH versions of these origins to me eagerly
    (I get them first from another peer); True: push them to me again."""

    TYPE: ClassVar[int] = 0x11
    NAME: ClassVar[str] = "PRUNE"
    graft: bool
    origins: tuple[int, ...]

    def __post_init__(self) -> None:
        _need(isinstance(self.graft, bool), "prune.graft", "must be a bool")
        _need(isinstance(self.origins, tuple), "prune.origins", "must be a tuple")
        _need(len(self.origins) <= MAX_PRUNE, "prune.origins", f"more than {MAX_PRUNE}")
        prev = -1
        for origin in self.origins:
            _uint(origin, 64, "prune.origins")
            _need(origin > prev, "prune.origins", "must be sorted, unique")
            prev = origin


# -- encoding ----------------------------------------------------------------------------


def _encode_members(event: Frame) -> bytes:
    assert isinstance(event, Members)
    out = [_HEAD.pack(event.kind, len(event.members))]
    for m in event.members:
        host = m.host.encode("ascii")
        out.append(
            _RECORD.pack(
                m.node_id, m.state, m.tiers, m.write_tiers, m.heartbeat, m.port, len(host), host
            )
        )
    return b"".join(out)


def _encode_prune(event: Frame) -> bytes:
    assert isinstance(event, Prune)
    head = _PRUNE_HEAD.pack(event.graft, len(event.origins))
    return head + b"".join(_ORIGIN.pack(o) for o in event.origins)


# -- decoding ----------------------------------------------------------------------------


def _short(body: bytes, need: int, field: str, base: int) -> None:
    if len(body) < need:
        raise BadFieldError(f"body is {len(body)} bytes, need {need}", field=field, offset=base)


def _size(body: bytes, need: int, field: str, base: int) -> None:
    if len(body) != need:
        raise BadFieldError(
            f"{len(body)} bytes, expected {need} for the declared count", field=field, offset=base
        )


def _decode_members(body: bytes, base: int) -> Frame:
    _short(body, _HEAD.size, "members", base)
    kind, count = _HEAD.unpack_from(body)
    if kind not in MemberKind._value2member_map_:
        raise BadFieldError(f"unknown kind {kind}", field="members.kind", offset=base)
    if count > MAX_MEMBERS:
        raise LimitError(
            f"{count} members exceeds {MAX_MEMBERS}", field="members.count", offset=base + 1
        )
    if kind == MemberKind.ASK and count:
        raise BadFieldError("ASK lists no members", field="members.count", offset=base + 1)
    _size(body, _HEAD.size + count * _RECORD.size, "members", base)
    members = []
    prev: bytes | None = None
    for i in range(count):
        off = _HEAD.size + i * _RECORD.size
        at = base + off
        node_id, state, tiers, write, heartbeat, port, host_len, host = _RECORD.unpack_from(
            body, off
        )
        name = f"members.members[{i}]"
        if state not in MemberState._value2member_map_:
            raise BadFieldError(f"unknown state {state}", field=f"{name}.state", offset=at + 32)
        if tiers > TIER_MASK:
            raise BadFieldError(f"unknown tier bits {tiers}", field=f"{name}.tiers", offset=at + 33)
        if write > TIER_MASK:
            raise BadFieldError(
                f"unknown tier bits {write}", field=f"{name}.write_tiers", offset=at + 34
            )
        if host_len > HOST_FIELD:
            raise BadFieldError(
                f"{host_len} exceeds {HOST_FIELD}", field=f"{name}.host_len", offset=at + 45
            )
        text, pad = host[:host_len], host[host_len:]
        if not all(ch in _HOST_CHARS for ch in text) or any(pad):
            raise BadFieldError(
                "not a host name or address, or nonzero padding",
                field=f"{name}.host",
                offset=at + 46,
            )
        if prev is not None and node_id <= prev:
            raise BadFieldError(
                "members must be sorted by node id, each once", field=f"{name}.node_id", offset=at
            )
        prev = node_id
        members.append(
            Member(node_id, MemberState(state), tiers, write, heartbeat, text.decode("ascii"), port)
        )
    return _trusted(Members, kind=MemberKind(kind), members=tuple(members))


def _decode_prune(body: bytes, base: int) -> Frame:
    _short(body, _PRUNE_HEAD.size, "prune", base)
    graft, count = _PRUNE_HEAD.unpack_from(body)
    if graft > 1:
        raise BadFieldError(f"must be 0 or 1, got {graft}", field="prune.graft", offset=base)
    if count > MAX_PRUNE:
        raise LimitError(
            f"{count} origins exceeds {MAX_PRUNE}", field="prune.count", offset=base + 1
        )
    _size(body, _PRUNE_HEAD.size + count * _ORIGIN.size, "prune", base)
    origins = []
    prev = -1
    for i in range(count):
        off = _PRUNE_HEAD.size + i * _ORIGIN.size
        (origin,) = _ORIGIN.unpack_from(body, off)
        if origin <= prev:
            raise BadFieldError(
                "origins must be sorted, each once", field=f"prune.origins[{i}]", offset=base + off
            )
        prev = origin
        origins.append(origin)
    return _trusted(Prune, graft=bool(graft), origins=tuple(origins))


register_frame(Members, _encode_members, _decode_members)
register_frame(Prune, _encode_prune, _decode_prune)
