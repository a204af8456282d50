"""Trust beyond the config: introducers' VOUCHes, their capped grants, the introduced set.

Theory of operation (DESIGN.md "The mesh", Membership; SPEC.md section 4.3).

Trust comes from the config or from an introducer (Syncthing's model). When a session
with a peer the config marks ``introducer`` opens, we send it ``MEMBERS(ASK)``; it answers
with ``MEMBERS(VOUCH)``: its configured peers (minus us), each with the tiers it shares
with them. Each VOUCH replaces that introducer's previous one. A vouched peer's grant is
capped by what we grant the introducer, so an introduction never widens anything; the
node itself and hand-configured ids are never taken from a VOUCH (hand config wins); a
VOUCH from a peer we did not ask, or that is not a configured introducer, is refused. An
introduced peer no introducer vouches for any more is dropped. Every refusal is counted
and logged naming the peer, and changes nothing.

Why a module of its own: trust is the part of membership that changes only when the config
is loaded or an introducer answers, that is saved to disk (``introduced.json``, through
``config/introduced.py``), and that decides whether an id may connect at all and with which
grant. Liveness and fan-out (``membership.py``) change every tick, are never saved, and
never add trust. ``Trust`` is a mixin of :class:`~meshsyncd.mesh.membership.Membership`: the
attributes it declares are the membership's, set in its ``__init__``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

import protocol as P
from protocol import Member, MemberKind, Tier

from ..config import PeerConfig
from ..config.introduced import Grant, IntroducedPeer, save_introduced
from ..identity import short_text_of

if TYPE_CHECKING:
    from .membership import MembershipStats, Record

__all__ = ["Trust", "mask_tiers", "tier_mask"]

LOGGED_IDS = 16  # ids named in one log line (the counts say how many there were)

log: Any = structlog.get_logger("meshsyncd.membership")


def tier_mask(tiers: Iterable[Tier]) -> int:
    return sum(1 << int(t) for t in tiers)


_MASKS = {m: frozenset(t for t in Tier if m & (1 << int(t))) for m in range(8)}


def mask_tiers(mask: int) -> frozenset[Tier]:
    return _MASKS[mask & 7]


class Trust:
    """Introducer trust, mixed into ``Membership`` (see the module doc)."""

    node_id: bytes
    node_dir: Path | None
    configured: dict[bytes, PeerConfig]
    introduced: dict[bytes, IntroducedPeer]
    records: dict[bytes, Record]
    asked: set[bytes]
    askers: set[bytes]
    _live: list[bytes] | None
    stats: MembershipStats

    def set_config(self, peers: Iterable[PeerConfig]) -> list[bytes]:
        """Take the (re)loaded config; return the introduced ids that are no longer trusted.

        Hand config wins: an introduced id now configured leaves the introduced set, and a
        voucher that is no longer a configured introducer stops vouching.
        """
        self.configured = {p.node_id: p for p in peers}
        self._live = None
        introducers = {pid for pid, p in self.configured.items() if p.introducer}
        self.asked &= introducers
        self.askers &= set(self.configured)
        gone = []
        for pid, peer in list(self.introduced.items()):
            for voucher in [v for v in peer.vouchers if v not in introducers]:
                del peer.vouchers[voucher]
            if pid in self.configured or pid == self.node_id or not peer.vouchers:
                del self.introduced[pid]
                if pid not in self.configured:
                    gone.append(pid)
        self._save()
        return gone

    def peer_config(self, node_id: bytes) -> PeerConfig | None:
        """The peer as we treat it: configured, or introduced with its capped grant."""
        if node_id in self.configured:
            return self.configured[node_id]
        peer = self.introduced.get(node_id)
        if peer is None:
            return None
        grant = peer.grant
        host, port = self.address(node_id)
        return PeerConfig(node_id, host, port, grant.tiers, grant.write_tiers)

    def address(self, node_id: bytes) -> tuple[str, int]:
        """Where to dial an introduced member: its own latest record, else the voucher's."""
        record = self.records.get(node_id)
        if record is not None and record.host and record.port:
            return record.host, record.port
        peer = self.introduced[node_id]
        return peer.host, peer.port

    def trusted(self) -> set[bytes]:
        return set(self.configured) | set(self.introduced)

    def vouch_for(self, recipient: bytes) -> P.Members:
        """Our VOUCH for ``recipient``: every configured peer but it, with our grants."""
        members = [
            Member(
                pid,
                tiers=tier_mask(p.tiers),
                write_tiers=tier_mask(p.write_tiers),
                host=p.host if _hostable(p.host) else "",
                port=p.port,
            )
            for pid, p in sorted(self.configured.items())
            if pid != recipient
        ]
        return P.Members(kind=MemberKind.VOUCH, members=tuple(members[: P.MAX_MEMBERS]))

    def vouch_updates(self) -> dict[bytes, P.Members]:
        """After a config change: a fresh VOUCH for every peer that asked us."""
        return {peer: self.vouch_for(peer) for peer in sorted(self.askers)}

    def _refuse(self, peer: bytes, reason: str, **kw: Any) -> None:
        self.stats.refused[peer] = self.stats.refused.get(peer, 0) + 1
        log.warning("membership refused", peer=short_text_of(peer), reason=reason, **kw)

    def on_vouch(self, peer: bytes, frame: P.Members) -> tuple[list[bytes], list[bytes]]:
        """An introducer's VOUCH: return (ids newly trusted, ids no longer trusted).

        Raises:
            BadFieldError: the VOUCH lists its sender (no node vouches for itself).
        """
        if any(m.node_id == peer for m in frame.members):
            raise P.BadFieldError("a VOUCH lists its own sender", field="members.node_id")
        intro = self.configured.get(peer)
        if intro is None or not intro.introducer or peer not in self.asked:
            self._refuse(peer, "VOUCH from a peer that is not our introducer")
            return [], []
        listed: set[bytes] = set()
        added = []
        self._live = None
        for m in frame.members:
            if m.node_id == self.node_id or m.node_id in self.configured:
                why = "itself" if m.node_id == self.node_id else "configured by hand"
                self._refuse(peer, f"introduced id is {why}", member=short_text_of(m.node_id))
                continue
            listed.add(m.node_id)
            grant = Grant(
                mask_tiers(m.tiers) & intro.tiers, mask_tiers(m.write_tiers) & intro.write_tiers
            )
            known = self.introduced.get(m.node_id)
            if known is None:
                known = self.introduced[m.node_id] = IntroducedPeer(m.node_id, m.host, m.port)
                added.append(m.node_id)
            elif m.host:
                known.host, known.port = m.host, m.port
            known.vouchers[peer] = grant
        removed = []
        for pid, known in list(self.introduced.items()):
            if pid in listed or peer not in known.vouchers:
                continue
            del known.vouchers[peer]
            if not known.vouchers:
                del self.introduced[pid]
                removed.append(pid)
        if added or removed:
            log.info(
                "introduced",
                peer=short_text_of(peer),
                added=[short_text_of(p) for p in added[:LOGGED_IDS]],
                removed=[short_text_of(p) for p in removed[:LOGGED_IDS]],
                counts=(len(added), len(removed)),
            )
        self._save()
        return added, removed

    def on_ask(self, peer: bytes) -> P.Members | None:
        """A peer treats us as its introducer: our VOUCH, if its id is configured here."""
        if peer not in self.configured:
            self._refuse(peer, "ASK from a peer not configured here")
            return None
        self.askers.add(peer)
        return self.vouch_for(peer)

    def _save(self) -> None:
        if self.node_dir is not None:
            try:
                save_introduced(self.node_dir, self.introduced)
            except OSError as exc:
                log.error("cannot write introduced peers", error=str(exc))

    def introduced_by(self, node_id: bytes) -> list[bytes]:
        peer = self.introduced.get(node_id)
        return sorted(peer.vouchers) if peer else []


def _hostable(host: str) -> bool:
    """Whether a host can go into a member record (a wildcard listen address cannot)."""
    return bool(host) and host not in ("0.0.0.0", "::") and len(host) <= P.memberframes.HOST_FIELD
