"""Golden vectors of protocol 2: BARRIER, BARRIER_DONE, RANGES and RANGE_IDS (SPEC.md sections
4.1 and 4.2), good and bad, and the HELLO that announces them.

Kept apart from ``make_vectors.py`` (which calls these), like ``member_vectors.py``, as the
twins ``meshframes.py`` and ``meshschema.py`` are apart from the protocol-1 frames: fixed
inputs only, and vectors are only ever added. ``mesh_frames()`` joins ``make_vectors.frames()``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import protocol as P

TS = 1_790_000_000_123_456_789


def _id(n: int) -> bytes:
    """The ids of ``make_vectors._id``: the stored vectors hold them."""
    return hashlib.sha256(b"meshsyncd-vector-%d" % n).digest()[:16]


def mesh_frames() -> dict[str, tuple[P.Frame, str]]:
    """Protocol 2: the barrier and range reconciliation frames (SPEC.md 4.1, 4.2)."""
    node_b = hashlib.sha256(b"node-b public key").digest()
    node_c = hashlib.sha256(b"node-c public key").digest()
    low, high = bytes(16), b"\x7f" + b"\xff" * 15
    top = b"\x80" + bytes(15)
    return {
        "frame-hello-v2": (
            P.Hello(
                version=2,
                node_id=hashlib.sha256(b"node-a public key").digest(),
                incarnation=_id(500),
                capabilities=int(
                    P.Capability.ZSTD
                    | P.Capability.MERGE
                    | P.Capability.PUSH
                    | P.Capability.DIGEST
                    | P.Capability.BARRIER
                    | P.Capability.REPAIR
                ),
                timestamp_ns=TS,
            ),
            "HELLO: protocol 2 with the BARRIER and REPAIR capabilities",
        ),
        "frame-barrier": (
            P.Barrier(barrier_id=_id(600), budget_ms=2000, hops=1),
            "BARRIER passed on one hop, 2000 ms left",
        ),
        "frame-barrier-done": (
            P.BarrierDone(
                barrier_id=_id(600),
                status=P.BarrierStatus.DONE,
                nodes=((node_b, P.NodeState.COVERED), (node_c, P.NodeState.UNREACHABLE)),
            ),
            "BARRIER_DONE: B covered, its configured peer C unreachable",
        ),
        "frame-barrier-seen": (
            P.BarrierDone(barrier_id=_id(601), status=P.BarrierStatus.SEEN),
            "BARRIER_DONE: reached by another path first (a cycle)",
        ),
        "frame-ranges": (
            P.Ranges(
                request_id=9,
                tier=P.Tier.SEMANTIC,
                reply=False,
                ranges=(
                    P.RangeDigest(low, high, 500_000, _id(700)),
                    P.RangeDigest(top, b"\xff" * 16, 500_123, _id(701)),
                ),
            ),
            "RANGES opening: two halves of the id space with counts and digests",
        ),
        "frame-range-ids": (
            P.RangeIds(
                request_id=9,
                tier=P.Tier.SEMANTIC,
                reply=True,
                ranges=(
                    P.RangeList(
                        b"\x12" + bytes(15),
                        b"\x12" + b"\xff" * 15,
                        tuple(sorted((b"\x12" + _id(n)[1:], _id(n + 50)[:8]) for n in range(3))),
                    ),
                ),
            ),
            "RANGE_IDS reply: the three ids of one range with their row hash prefixes",
        ),
    }


def bad_mesh_vectors(patch: Any) -> dict[str, tuple[str, bytes, dict[str, Any], str]]:
    """Protocol-2 frames a peer has no business sending: refused before anything is read."""
    ranges = P.encode_frame(mesh_frames()["frame-ranges"][0])
    # the second range starts inside the first one: 5 + 8 + 52 is the second range's lo
    overlap = patch(ranges, 5 + 8 + 52, b"\x10")
    done = P.encode_frame(mesh_frames()["frame-barrier-seen"][0])
    return {
        "bad-frame-ranges-overlap": (
            "frame",
            overlap,
            {"class": "BadFieldError", "field": "ranges.ranges[1].lo", "offset": 65},
            "RANGES whose second range overlaps the first",
        ),
        "bad-frame-barrier-done-count": (
            "frame",
            patch(done, 5 + 17, (P.MAX_BARRIER_NODES + 1).to_bytes(2, "big")),
            {"class": "LimitError", "field": "barrier_done.count", "offset": 22},
            "BARRIER_DONE declaring more nodes than the limit, before any is read",
        ),
    }
