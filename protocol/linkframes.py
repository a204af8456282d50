"""LINKS: who has a session with whom, for link-state broadcast trees (SPEC.md 4.5).

Theory of operation: LINKS (0x13) exists from protocol version 6 and, like MEMBERS, is
sent only to a peer whose HELLO carries ``MEMBERSHIP``; the session enforces that, this
module only encodes and vets. A frame is a list of link records sorted by node id (a
duplicate is a decode error, not a policy question). A record says which peers a node
has live sessions with (as short node ids, the 64-bit ``origin`` form), under that node's
own version counter: only the node itself makes a record about itself, everyone else
passes it on unchanged. Every count is checked against its limit before the data it
counts is read (``LimitError``), and a record's peers must be sorted, unique and never the
node itself (a node is not its own peer). Whether a record is believed (trust, versions
from the future) is the receiver's decision (``meshsyncd/mesh/linkstate.py``). The
construct twin is ``linkschema.py``; both name the same first fault at the same offset.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import ClassVar

from .errors import BadFieldError, LimitError, LocalProtocolError
from .frames import Frame, _trusted, register_frame
from .item import Buffer

__all__ = ["MAX_LINK_PEERS", "MAX_LINK_RECORDS", "LinkRecord", "Links", "short_id"]

MAX_LINK_RECORDS = 1024  # records in one LINKS frame
MAX_LINK_PEERS = 256  # peers in one record (a node with more lists its first 256 by id)

_COUNT = struct.Struct(">H")
_HEAD = struct.Struct(">32sQH")  # node_id, version, peer count
_PEER = struct.Struct(">Q")


def short_id(node_id: bytes) -> int:
    """A node's short id: the first 8 bytes of its node id, as an item's ``origin``."""
    return int.from_bytes(node_id[:8], "big")


@dataclasses.dataclass(frozen=True, slots=True)
class LinkRecord:
    """One node's live session peers (short ids, ascending) under its own ``version``.

    A record validates itself once, when made, and keeps its wire form (``wire``): a relay
    sends the same record on to several peers, so a frame of records only checks their
    order, and encoding one is a join.
    """

    node_id: bytes
    version: int
    peers: tuple[int, ...] = ()
    wire: bytes = dataclasses.field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_record(self, "link_record")
        head = _HEAD.pack(self.node_id, self.version, len(self.peers))
        object.__setattr__(self, "wire", head + struct.pack(f">{len(self.peers)}Q", *self.peers))


def _need(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise LocalProtocolError(message, field=field)


def _check_record(r: LinkRecord, field: str) -> None:
    _need(isinstance(r.node_id, bytes) and len(r.node_id) == 32, f"{field}.node_id", "32 bytes")
    _need(type(r.version) is int and 0 <= r.version < 1 << 64, f"{field}.version", "must be a u64")
    _need(isinstance(r.peers, tuple), f"{field}.peers", "must be a tuple")
    _need(len(r.peers) <= MAX_LINK_PEERS, f"{field}.peers", f"more than {MAX_LINK_PEERS}")
    own, prev = short_id(r.node_id), -1
    for peer in r.peers:
        _need(type(peer) is int and 0 <= peer < 1 << 64, f"{field}.peers", "must be u64s")
        _need(peer > prev and peer != own, f"{field}.peers", "sorted, unique, not the node")
        prev = peer


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Links(Frame):
    """Link records: each node's live session peers, under that node's version."""

    TYPE: ClassVar[int] = 0x13
    NAME: ClassVar[str] = "LINKS"
    records: tuple[LinkRecord, ...] = ()

    def __post_init__(self) -> None:
        _need(isinstance(self.records, tuple), "links.records", "must be a tuple")
        _need(
            len(self.records) <= MAX_LINK_RECORDS, "links.records", f"more than {MAX_LINK_RECORDS}"
        )
        prev: bytes | None = None
        for r in self.records:  # each record checked itself when it was made
            _need(isinstance(r, LinkRecord), "links.records", "must be LinkRecords")
            _need(prev is None or r.node_id > prev, "links.records", "must be sorted, unique")
            prev = r.node_id


def _vetted(node_id: bytes, version: int, peers: tuple[int, ...], wire: bytes) -> LinkRecord:
    """A record the decoder has already checked, with its bytes as they came."""
    record = object.__new__(LinkRecord)
    for name, value in (("node_id", node_id), ("version", version), ("peers", peers)):
        object.__setattr__(record, name, value)
    object.__setattr__(record, "wire", wire)
    return record


def _encode(event: Frame) -> bytes:
    assert isinstance(event, Links)
    return _COUNT.pack(len(event.records)) + b"".join(r.wire for r in event.records)


def _bad_peers(peers: tuple[int, ...], own: int, name: str, at: int) -> None:
    last = -1
    for j, peer in enumerate(peers):
        if peer <= last or peer == own:
            raise BadFieldError(
                "peers must be sorted, unique and not the node itself",
                field=f"{name}.peers[{j}]",
                offset=at + j * _PEER.size,
            )
        last = peer


def _decode(body: Buffer, base: int) -> Frame:
    data = bytes(body)
    if len(data) < _COUNT.size:
        raise BadFieldError(f"body is {len(data)} bytes, need 2", field="links", offset=base)
    (count,) = _COUNT.unpack_from(data)
    if count > MAX_LINK_RECORDS:
        raise LimitError(
            f"{count} records exceeds {MAX_LINK_RECORDS}", field="links.count", offset=base
        )
    off = _COUNT.size
    size = len(data)
    records = []
    prev = b""
    for i in range(count):  # hot in a big mesh: names of fields are made only on errors
        if size - off < _HEAD.size:
            left = size - off
            name = f"links.records[{i}]"
            raise BadFieldError(f"body is {left} bytes, need 42", field=name, offset=base + off)
        node_id, version, n = _HEAD.unpack_from(data, off)
        if node_id <= prev:
            raise BadFieldError(
                "records must be sorted by node id, each once",
                field=f"links.records[{i}].node_id",
                offset=base + off,
            )
        if n > MAX_LINK_PEERS:
            raise LimitError(
                f"{n} peers exceeds {MAX_LINK_PEERS}",
                field=f"links.records[{i}].count",
                offset=base + off + 40,
            )
        prev = node_id
        start = off
        off += _HEAD.size
        end = off + 8 * n
        if end > size:
            raise BadFieldError(
                f"need {8 * n} bytes, {size - off} left",
                field=f"links.records[{i}]",
                offset=base + off,
            )
        peers = struct.unpack_from(f">{n}Q", data, off)
        own = int.from_bytes(node_id[:8], "big")
        if n and (own in peers or list(peers) != sorted(set(peers))):
            _bad_peers(peers, own, f"links.records[{i}]", base + off)
        off = end
        records.append(_vetted(node_id, version, peers, data[start:end]))
    if off != len(data):
        raise BadFieldError(
            f"{len(data) - off} bytes after the last record", field="links", offset=base + off
        )
    return _trusted(Links, records=tuple(records))


register_frame(Links, _encode, _decode)
