"""Golden vectors of protocol 2's capability MEMBERSHIP: MEMBERS and PRUNE (SPEC.md section
4.3), good and bad.

Kept apart from ``make_vectors.py`` (which calls these), like ``mesh_vectors.py``, as the
twins ``memberframes.py`` and ``memberschema.py`` are apart from the protocol-1 frames: fixed
inputs only, and vectors are only ever added.
"""

from __future__ import annotations

import hashlib
from typing import Any

import protocol as P

ORIGIN_A = 0x0123456789ABCDEF
ORIGIN_B = 0xFEDCBA9876543210
TS = 1_790_000_000_123_456_789


def member_frames() -> dict[str, tuple[P.Frame, str]]:
    """Protocol 2, capability MEMBERSHIP: introductions, gossip and pruning (SPEC.md 4.3).

    Kept out of ``make_vectors.frames()``, where the mesh frames already are, so that the
    stored ``stream-session`` vector does not drift further from what the generator makes
    (vectors are add-only: that one predates the mesh frames and is never rewritten).
    """
    node_b = hashlib.sha256(b"node-b public key").digest()
    node_c = hashlib.sha256(b"node-c public key").digest()
    b, c = sorted((node_b, node_c))
    return {
        "frame-members-vouch": (
            P.Members(
                kind=P.MemberKind.VOUCH,
                members=(
                    P.Member(b, tiers=0b111, write_tiers=0b100, host="10.0.0.2", port=7700),
                    P.Member(c, tiers=0b110, write_tiers=0b000, host="node-c.lan", port=7701),
                ),
            ),
            "MEMBERS VOUCH: an introducer's peers with the tiers it shares with each",
        ),
        "frame-members-gossip": (
            P.Members(
                kind=P.MemberKind.GOSSIP,
                members=(
                    P.Member(b, heartbeat=TS // 1_000_000, host="10.0.0.2", port=7700),
                    P.Member(c, state=P.MemberState.DEAD, heartbeat=TS // 1_000_000 - 9000),
                ),
            ),
            "MEMBERS GOSSIP: B alive at its latest heartbeat, C dead (address unknown)",
        ),
        "frame-members-ask": (
            P.Members(kind=P.MemberKind.ASK),
            "MEMBERS ASK: the sender treats us as its introducer",
        ),
        "frame-prune": (
            P.Prune(graft=False, origins=(ORIGIN_A, ORIGIN_B)),
            "PRUNE: stop pushing these origins' urgent versions to the sender eagerly",
        ),
        "frame-graft": (
            P.Prune(graft=True, origins=(ORIGIN_A,)),
            "PRUNE with graft set: push this origin's urgent versions to the sender again",
        ),
    }


def bad_member_vectors(patch: Any) -> dict[str, tuple[str, bytes, dict[str, Any], str]]:
    """Membership frames that must be refused before any record is believed."""
    vouch = P.encode_frame(member_frames()["frame-members-vouch"][0])
    return {
        "bad-frame-members-count": (
            "frame",
            patch(vouch, 6, (P.MAX_MEMBERS + 1).to_bytes(2, "big")),
            {"class": "LimitError", "field": "members.count", "offset": 6},
            "MEMBERS declaring more records than the limit, before any is read",
        ),
        "bad-frame-members-order": (
            "frame",
            patch(vouch, 8 + 110, vouch[8 : 8 + 32]),
            {"class": "BadFieldError", "field": "members.members[1].node_id", "offset": 118},
            "MEMBERS naming one node twice (records must be sorted by node id, each once)",
        ),
        "bad-frame-members-host": (
            "frame",
            patch(vouch, 8 + 46, b"10.0.0.2 "),
            {"class": "BadFieldError", "field": "members.members[0].host", "offset": 54},
            "MEMBERS whose host holds a space",
        ),
    }
