"""The daemon's side of membership: MEMBERS and PRUNE handlers, the tick, introduced links.

Theory of operation (SPEC.md 4.3; ``meshsyncd/mesh/membership.py`` decides, this module
acts). ``MemberLinks`` is a mixin of :class:`~meshsyncd.node.daemon.Daemon`, listed before
``Links`` so that it wraps the session bookkeeping: when a session opens it sends what
membership says (ASK to an introducer, our view of the members) and resets the broadcast
trees for that peer; when one ends it tells membership (the start of death detection) and
re-grafts. Every ``TICK`` it sends the gossip of changes, dials the introduced members
membership wants (bounded by ``max_peers``), and drops the dialers of those it no longer
wants. A change of trust (a VOUCH, a reload) rebuilds the TLS trust store, and a peer no
introducer vouches for any more is closed with BYE REMOVED. Introduced peers get a
``PeerState`` like configured ones, so the peers table shows them ("introduced by").
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
import trio

import protocol as P
from protocol import MemberKind

from ..aengine import AsyncEngine
from ..config import Config, ConfigError, PeerConfig
from ..config.introduced import INTRODUCED_FILE, load_introduced
from ..identity import node_id_text, parse_node_id, short_text_of
from ..mesh.linkstate import LinkState
from ..mesh.membership import Membership
from ..mesh.relay import Relay
from ..mesh.tree import Trees
from .links import Links, PeerState
from .session import Session

__all__ = ["TICK", "MemberLinks"]

TICK = 0.5
GOSSIP_BACKLOG = 64  # a peer with this many urgent frames queued misses a tick's gossip

log: Any = structlog.get_logger("meshsyncd.daemon")


def load_membership(config: Config, node_id: bytes) -> Membership:
    """Membership with the introduced peers saved by the last run (a bad file is set aside)."""
    try:
        introduced = load_introduced(config.node_dir)
    except ConfigError as exc:
        log.error("introduced peers file unreadable, set aside", error=str(exc))
        path = config.node_dir / INTRODUCED_FILE
        with contextlib.suppress(OSError):
            path.rename(path.with_suffix(".bad"))
        introduced = {}
    membership = Membership(
        node_id,
        host=config.listen_host,
        port=config.listen_port,
        max_peers=config.max_peers,
        node_dir=config.node_dir,
        introduced=introduced,
        rng=random.Random(),
    )
    membership.set_config(config.peers)
    return membership


def link_state(membership: Membership, **kw: Any) -> LinkState:
    """Link state (``mesh/linkstate.py``) that keeps records of the nodes we trust only;
    a complete view holds one per member we believe alive, and ours."""
    m = membership
    return LinkState(
        m.node_id,
        trusted=lambda pid: pid in m.configured or pid in m.introduced,
        expected=lambda: 1 + sum(1 for p in (*m.configured, *m.introduced) if m.alive(p)),
        **kw,
    )


class MemberLinks(Links):
    """Membership wiring (mixed into ``Daemon`` ahead of ``Links``)."""

    config: Config
    node_id: bytes
    engine: AsyncEngine
    relay: Relay
    membership: Membership
    trees: Trees
    linkstate: LinkState
    listen_port: int

    # -- hooks of Links ---------------------------------------------------------------------

    def _peer_config(self, node_id: bytes) -> PeerConfig | None:
        if not self.membership.accepts(node_id, self.sessions):
            log.info("introduced peer refused: enough sessions", peer=short_text_of(node_id))
            return None
        return self.membership.peer_config(node_id)

    def _refused_inbound(self, claimed: str | None) -> None:
        """A trusted introduced peer we hold no certificate of: dial it (learning it)."""
        try:
            pid = parse_node_id(claimed or "")
        except ValueError:
            return
        if pid in self.membership.introduced and pid not in self.peers:
            self._dial_introduced(pid)

    def _on_open(self, session: Session) -> None:
        super()._on_open(session)
        assert session.peer_hello is not None
        pid = session.peer_hello.node_id
        if pid in self.membership.introduced and pid not in self.peers:
            peer = self.membership.peer_config(pid)
            if peer is not None:  # inbound: shown in the peers table, no dialer of ours
                self.peers[pid] = PeerState(peer, state="connected", connects=1)
        if session.peer_speaks(P.Capability.MEMBERSHIP):
            self.trees.opened(pid)
            for frame in self.membership.session_opened(pid):
                session.send_nowait(frame)
            self.linkstate.set_live(self._link_peers())
            for frame in self.linkstate.opened(pid):
                session.send_nowait(frame)

    async def _run_session(
        self, stream: trio.abc.Stream, peer: PeerConfig, *, initiator: bool
    ) -> Session:
        session = await super()._run_session(stream, peer, initiator=initiator)
        if peer.node_id not in self.sessions and session.peer_hello is not None:
            # a peer that said BYE NORMAL (e.g. it shed the link: enough sessions) is alive
            parted = session.bye is not None and session.bye.code == P.ByeCode.NORMAL
            self.membership.session_closed(peer.node_id, parted=parted)
            self._send_prunes(self.trees.closed(peer.node_id).items())
            self.linkstate.closed(peer.node_id)
            self.linkstate.set_live(self._link_peers())
        return session

    # -- frames -----------------------------------------------------------------------------

    async def _on_members(self, session: Session, frame: P.Frame) -> None:
        assert isinstance(frame, P.Members) and session.peer_hello is not None
        pid = session.peer_hello.node_id
        if frame.kind == MemberKind.ASK:
            reply = self.membership.on_ask(pid)
            if reply is not None:
                session.send_nowait(reply)
        elif frame.kind == MemberKind.VOUCH:
            added, removed = self.membership.on_vouch(pid, frame)
            if added or removed:
                self._trust_changed(removed)
        else:
            self.membership.on_gossip(pid, frame)

    async def _on_links(self, session: Session, frame: P.Frame) -> None:
        assert isinstance(frame, P.Links) and session.peer_hello is not None
        _, answer = self.linkstate.on_links(session.peer_hello.node_id, frame)
        for reply in answer:
            session.send_nowait(reply)

    def _link_peers(self) -> list[bytes]:
        """Sessions the link-state graph may route over: MEMBERSHIP, every tier both ways,
        no namespace rule (a tree must never route a write over a session that drops it)."""
        every = frozenset(P.Tier)
        return [
            pid
            for pid, s in self.sessions.items()
            if s.peer_speaks(P.Capability.MEMBERSHIP)
            and s.send_tiers == every == s.accept_tiers
            and s.send_share is None
            and s.accept_share is None
        ]

    def _send_links(self) -> None:
        """This tick's link records (bounded like gossip: a backed-up peer misses them)."""
        self.linkstate.set_live(self._link_peers())
        for pid, frames in self.linkstate.tick(self.sessions).items():
            self._send_bounded(pid, frames)

    def _send_bounded(self, pid: bytes, frames: Sequence[P.Frame]) -> None:
        """Membership frames to one peer, dropped (and counted) while its urgent lane is
        backed up: the news reaches it through its other peers, or at reconnect."""
        session = self.sessions.get(pid)
        if session is None or not session.peer_speaks(P.Capability.MEMBERSHIP):
            return
        if session.urgent_backlog >= GOSSIP_BACKLOG:
            self.membership.stats.gossip_dropped += 1
            return
        for frame in frames:
            with contextlib.suppress(P.LocalProtocolError):
                session.send_nowait(frame)

    async def _on_prune(self, session: Session, frame: P.Frame) -> None:
        assert isinstance(frame, P.Prune) and session.peer_hello is not None
        self.trees.on_prune(session.peer_hello.node_id, frame)

    def _tree_applied(
        self, session: Session, batch: P.Batch, changed: list[P.Item] | None, hops: int | None
    ) -> None:
        """A batch was applied: prune for urgent duplicates (or re-parent on a shorter
        path), graft after a pull."""
        if session.peer_hello is None or not session.peer_speaks(P.Capability.MEMBERSHIP):
            return
        pid = session.peer_hello.node_id
        if changed is None:
            self._send_prunes(self.trees.pulled(pid, batch.items).items())
            return
        self._send_prunes(self.trees.pushed(pid, batch.items, changed, hops or 0))

    def _send_prunes(self, frames: Iterable[tuple[bytes, P.Prune]]) -> None:
        for pid, frame in frames:
            session = self.sessions.get(pid)
            if session is not None and session.peer_speaks(P.Capability.MEMBERSHIP):
                with contextlib.suppress(P.LocalProtocolError):
                    session.send_nowait(frame)

    # -- trust and links --------------------------------------------------------------------

    def _members_reloaded(self, config: Config) -> None:
        """The config was reloaded: new trust, and fresh VOUCH lists for those who asked."""
        gone = self.membership.set_config(config.peers)
        self._trust_changed(gone)
        for pid, frame in self.membership.vouch_updates().items():
            session = self.sessions.get(pid)
            if session is not None:
                with contextlib.suppress(P.LocalProtocolError):
                    session.send_nowait(frame)

    def _trust_changed(self, removed: list[bytes]) -> None:
        self.trust.reload(allowed=self.membership.trusted())
        if removed:
            self.linkstate.forget(lambda pid: pid not in removed)
        for pid in removed:
            log.info("introduced peer dropped: no introducer vouches", peer=short_text_of(pid))
            self._stop_peer(pid, P.ByeCode.REMOVED, "no introducer vouches for it")

    def _dial_introduced(self, pid: bytes) -> None:
        peer = self.membership.peer_config(pid)
        if peer is None or self._nursery is None:
            return
        state = PeerState(peer)
        self.peers[pid] = state
        self._start_dialer(state)

    async def _membership_loop(self) -> None:
        """Every TICK: gossip the changes, dial wanted members, let go of unwanted dialers."""
        self.membership.move(self.config.listen_host, self.listen_port)
        while True:
            for pid, frame in self.membership.tick(self.sessions).items():
                self._send_bounded(pid, [frame])
            self._send_links()
            for pid in self.membership.shed(self.sessions, self._dialled()):
                log.info("session shed: enough sessions", peer=short_text_of(pid))
                self._stop_peer(
                    pid,
                    P.ByeCode.NORMAL,
                    f"enough sessions here (max_peers {self.config.max_peers})",
                )
            order = self.membership.wanted(self.sessions)  # a list: dial order is reproducible
            wanted = set(order)
            for pid in order:
                if pid not in self.peers and pid not in self.sessions:
                    self._dial_introduced(pid)
            for pid, state in list(self.peers.items()):
                if pid in self.membership.configured or pid in wanted or pid in self.sessions:
                    continue
                self.peers.pop(pid)  # an introduced member we no longer want (or that died)
                if state.scope is not None:
                    state.scope.cancel()
            await trio.sleep(TICK)

    def _dialled(self) -> set[bytes]:
        """Peers whose current session we initiated."""
        return {pid for pid, session in self.sessions.items() if session.initiator}

    def _introduced_by(self, pid: bytes) -> list[str]:
        return [node_id_text(v) for v in self.membership.introduced_by(pid)]
