"""Golden vectors of protocol 6: LINKS (SPEC.md section 4.5), good and bad.

Kept apart from ``make_vectors.py`` (which calls these), like ``hop_vectors.py``: fixed
inputs only, and vectors are only ever added.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import protocol as P

TS = 1_790_000_000_123


def _id(name: bytes) -> bytes:
    return hashlib.sha256(b"meshsyncd-link-" + name).digest()


def _records() -> tuple[P.LinkRecord, ...]:
    a, b, c = _id(b"a"), _id(b"b"), _id(b"c")
    peers = {a: (b, c), b: (a,), c: (a,)}
    return tuple(
        P.LinkRecord(node, TS + i, tuple(sorted(P.short_id(p) for p in peers[node])))
        for i, node in enumerate(sorted(peers))
    )


def frames() -> dict[str, tuple[P.Frame, str]]:
    return {
        "frame-hello-v6": (
            P.Hello(
                version=6,
                node_id=hashlib.sha256(b"meshsyncd-node-a").digest(),
                incarnation=hashlib.sha256(b"meshsyncd-incarnation-a").digest()[:16],
                capabilities=0x7F,
                timestamp_ns=TS * 1_000_000,
            ),
            "HELLO of protocol 6 (LINKS); older versions are refused by the daemon",
        ),
        "frame-links": (
            P.Links(records=_records()),
            "LINKS: three nodes, one linked to the two others, each record under its own version",
        ),
        "frame-links-empty": (P.Links(records=()), "LINKS with no records"),
        "frame-links-alone": (
            P.Links(records=(P.LinkRecord(_id(b"d"), TS, ()),)),
            "LINKS: a node with no sessions (it lost its last one)",
        ),
    }


def _frame(body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, P.Links.TYPE) + body


def _record(node_id: bytes, version: int, peers: list[int]) -> bytes:
    return struct.pack(">32sQH", node_id, version, len(peers)) + b"".join(
        struct.pack(">Q", p) for p in peers
    )


def bad_vectors() -> dict[str, tuple[str, bytes, dict[str, Any], str]]:
    a, b = sorted((_id(b"a"), _id(b"b")))
    good = P.encode_frame(frames()["frame-links"][0])
    over = struct.pack(">H", P.MAX_LINK_RECORDS + 1)
    pair = sorted([P.short_id(a), P.short_id(b)])
    at = pair.index(P.short_id(a))  # where the node lists itself
    self_loop = _record(a, TS, pair)
    return {
        "bad-frame-links-empty-body": (
            "frame",
            _frame(b"\x00"),
            {"class": "BadFieldError", "field": "links", "offset": 5},
            "LINKS whose body is shorter than its record count",
        ),
        "bad-frame-links-count": (
            "frame",
            _frame(over),
            {"class": "LimitError", "field": "links.count", "offset": 5},
            "LINKS declaring more records than MAX_LINK_RECORDS (refused before reading any)",
        ),
        "bad-frame-links-peer-count": (
            "frame",
            _frame(b"\x00\x01" + struct.pack(">32sQH", a, TS, P.MAX_LINK_PEERS + 1)),
            {"class": "LimitError", "field": "links.records[0].count", "offset": 47},
            "a LINKS record declaring more peers than MAX_LINK_PEERS",
        ),
        "bad-frame-links-order": (
            "frame",
            _frame(b"\x00\x02" + _record(b, TS, []) + _record(a, TS, [])),
            {"class": "BadFieldError", "field": "links.records[1].node_id", "offset": 49},
            "LINKS records out of node id order",
        ),
        "bad-frame-links-self": (
            "frame",
            _frame(b"\x00\x01" + self_loop),
            {
                "class": "BadFieldError",
                "field": f"links.records[0].peers[{at}]",
                "offset": 49 + 8 * at,
            },
            "a LINKS record listing its own node as its peer",
        ),
        "bad-frame-links-peers-order": (
            "frame",
            _frame(b"\x00\x01" + _record(a, TS, [9, 9])),
            {"class": "BadFieldError", "field": "links.records[0].peers[1]", "offset": 57},
            "a LINKS record listing a peer twice",
        ),
        "bad-frame-links-cut": (
            "frame",
            _frame(b"\x00\x01" + _record(a, TS, [1, 2])[:-4]),
            {"class": "BadFieldError", "field": "links.records[0]", "offset": 49},
            "a LINKS record cut short inside its peers",
        ),
        "bad-frame-links-trailing": (
            "frame",
            (int.from_bytes(good[:4], "big") + 3).to_bytes(4, "big") + good[4:] + b"\x00" * 3,
            {"class": "BadFieldError", "field": "links", "offset": len(good)},
            "LINKS with three bytes after its last record",
        ),
    }
