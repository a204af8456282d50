"""Links to peers: dial the configured ones, accept the ones that dial us, run their sessions.

Theory of operation (DESIGN.md "Identity and trust", SPEC.md section 3). Both sides dial.
One dialer task per configured peer connects with mutual TLS (``transport.py``), runs a
session until it ends, and redials with exponential backoff and jitter; a session that
lasted ``STABLE_SESSION`` resets the backoff, one refused at HELLO or dying young backs off
like a failed dial, so a bad peer never causes a redial storm. Inbound connections are
authenticated by the same trust store; an unknown id is refused and counted. Before that,
``admission.py`` bounds the handshakes in progress and aggregates the refusals' log lines.

When two sessions with the same peer open, the one initiated by the node with the lower node
id is kept on both sides (the same rule everywhere, so both ends agree without talking); a
newer session from the same initiator replaces an older one, which is usually a dead link not
yet noticed. ``Links`` is a mixin of :class:`~meshsyncd.node.daemon.Daemon`: the attributes
it declares are the daemon's.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

import protocol as P

from ..aengine import AsyncEngine
from ..config import Config, PeerConfig
from ..identity import short_text_of
from ..ids import short_text
from ..mesh.relay import Relay
from ..mesh.share import parse_share
from .admission import AdmissionRefused, HandshakeGate
from .endings import DuplicateSession, SessionClosed
from .reasons import dial_reason, session_reason
from .session import FrameHandler, Session
from .transport import HandshakeRefused, TrustStore, dial_tls

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "Links", "PeerState"]

BACKOFF_MIN = 0.25
BACKOFF_MAX = 30.0
STABLE_SESSION = 10.0  # a session that lasted this long resets the redial backoff

log: Any = structlog.get_logger("meshsyncd.daemon")


@dataclass
class PeerState:
    """What the operator's peers table shows about one configured peer."""

    config: PeerConfig
    state: str = "connecting"
    last_error: str = ""
    reason: str = ""  # plain words for the peers table (reasons.py); "" while connected
    last_seen: float = 0.0  # kept from the last session, so a table row survives its end
    cursors: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    refused: int = 0
    backoff: float = BACKOFF_MIN
    wake: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope | None = None
    ended: trio.Event = field(default_factory=trio.Event)


class Links:
    """Dialers, the accept path and session bookkeeping (mixed into ``Daemon``)."""

    config: Config
    node_id: bytes
    engine: AsyncEngine
    trust: TrustStore
    sessions: dict[bytes, Session]
    peers: dict[bytes, PeerState]
    refused_unknown: int
    gate: HandshakeGate
    _nursery: trio.Nursery | None
    # The mesh modules' frame handlers and the capabilities they add to our HELLO.
    extensions: dict[type[P.Frame], FrameHandler]
    capabilities: int
    relay: Relay

    def _on_remote(self, batch: P.Batch, peer: PeerConfig) -> None:
        raise NotImplementedError

    def _on_applied(
        self, session: Session, batch: P.Batch, changed: list[P.Item] | None, hops: int | None
    ) -> None:
        raise NotImplementedError

    def _on_received(self, session: Session, batch: P.Batch, hops: int) -> None:
        raise NotImplementedError

    def _peer_config(self, node_id: bytes) -> PeerConfig | None:
        """Whom an authenticated inbound id is (None: not now); membership widens this."""
        return self.config.peer(node_id)

    def _refused_inbound(self, claimed: str | None) -> None:
        """A refused handshake claiming ``claimed``; membership may dial it to learn it."""

    def _stop_peer(self, pid: bytes, code: int, text: str) -> None:
        state = self.peers.pop(pid, None)
        if state is not None and state.scope is not None:
            state.scope.cancel()
        session = self.sessions.pop(pid, None)
        if session is not None and self._nursery is not None:
            self._nursery.start_soon(session.close, code, text)

    def _start_dialer(self, state: PeerState) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._dialer, state)

    async def _dialer(self, state: PeerState) -> None:
        peer = state.config
        plog = log.bind(peer=short_text(peer.text), address=peer.address)
        with trio.CancelScope() as scope:
            state.scope = scope
            while True:
                if peer.node_id in self.sessions:
                    state.ended = trio.Event()
                    await state.ended.wait()
                    continue
                try:
                    stream = await dial_tls(self.trust, peer.node_id, peer.host, peer.port)
                except (OSError, HandshakeRefused, trio.TooSlowError) as exc:
                    state.state = "backoff"
                    state.last_error = str(exc) or type(exc).__name__
                    state.reason = dial_reason(exc, peer.address)
                    delay = state.backoff * random.uniform(0.5, 1.5)
                    state.backoff = min(state.backoff * 2, BACKOFF_MAX)
                    plog.info("dial failed", error=state.last_error, retry_in=round(delay, 2))
                    state.wake = trio.Event()
                    with trio.move_on_after(delay):
                        await state.wake.wait()
                    continue
                session = await self._run_session(stream, peer, initiator=True)
                lasted = time.time() - session.opened_at if session.opened_at else 0.0
                if lasted >= STABLE_SESSION:
                    state.backoff = BACKOFF_MIN
                    await trio.sleep(random.uniform(0.05, 0.25))
                else:
                    # Refused at HELLO (clock skew, wrong id), a protocol error, or a link
                    # that keeps dying: back off like a failed dial, not a redial storm.
                    delay = state.backoff * random.uniform(0.5, 1.5)
                    state.backoff = min(state.backoff * 2, BACKOFF_MAX)
                    state.wake = trio.Event()
                    with trio.move_on_after(delay):
                        await state.wake.wait()

    async def _inbound(self, tcp: trio.SocketStream) -> None:
        try:  # the gate counts and logs refusals (admission.py)
            stream, pid = await self.gate.accept(self.trust, tcp)
        except AdmissionRefused:
            return
        except HandshakeRefused as exc:
            self.refused_unknown += 1
            for state in self.peers.values():
                if state.config.text == exc.claimed:
                    state.refused += 1
                    state.wake.set()  # our dialer learns its certificate, then it is trusted
            self._refused_inbound(exc.claimed)
            return
        peer = self._peer_config(pid)
        if peer is None:  # removed by a reload during the handshake
            await trio.aclose_forcefully(stream)
            return
        await self._run_session(stream, peer, initiator=False)

    async def _run_session(
        self, stream: trio.abc.Stream, peer: PeerConfig, *, initiator: bool
    ) -> Session:
        session = Session(
            self.engine,
            stream,
            node_id=self.node_id,
            peer_id=peer.node_id,
            send_tiers=peer.tiers,
            accept_tiers=peer.write_tiers,
            send_share=parse_share(peer.share, "share"),
            accept_share=parse_share(peer.write_share, "write_share"),
            pull_interval=self.config.sync_interval,
            on_open=self._on_open,
            on_change=functools.partial(self._on_remote, peer=peer),
            on_applied=self._on_applied,
            on_received=self._on_received,
            initiator=initiator,
            extensions=self.extensions,
            capabilities=self.capabilities,
        )
        plog = log.bind(peer=short_text(peer.text), address=peer.address, inbound=not initiator)
        try:
            await session.run()
        except SessionClosed as exc:
            plog.info("session closed", reason=exc.reason)
            state = self.peers.get(peer.node_id)
            if state is not None:
                state.last_error = exc.reason
                state.reason = session_reason(exc, opened=session.peer_hello is not None)
        finally:
            if self.sessions.get(peer.node_id) is session:
                del self.sessions[peer.node_id]
                self.relay.forget(peer.node_id)
                state = self.peers.get(peer.node_id)
                if state is not None:
                    state.state = "disconnected"
                    remember(state, session)
                    state.ended.set()
            await _close_gracefully(stream)
        return session

    def _on_open(self, session: Session) -> None:
        """Register a session whose HELLO arrived; collapse duplicates (see module doc)."""
        assert session.peer_hello is not None
        pid = session.peer_hello.node_id
        existing = self.sessions.get(pid)
        if existing is not None and existing is not session:
            lower = min(self.node_id, pid)

            def initiator(s: Session) -> bytes:
                return self.node_id if s.initiator else pid

            if initiator(existing) != initiator(session) and initiator(existing) == lower:
                raise DuplicateSession
            if self._nursery is not None:
                self._nursery.start_soon(
                    existing.close, P.ByeCode.DUPLICATE, "duplicate connection"
                )
        self.sessions[pid] = session
        state = self.peers.get(pid)
        if state is not None:
            state.state = "connected"
            state.connects += 1
            state.last_error = ""
            state.reason = ""
        log.info("peer connected", peer=short_text_of(pid), inbound=not session.initiator)
        self.relay.session_opened(self.sessions, pid)


def remember(state: PeerState, session: Session) -> None:
    """Keep what the peers table shows of an ended session: last seen, cursors, lag."""
    if session.stats.last_seen:
        state.last_seen = session.stats.last_seen
    if session.cursors:
        state.cursors = {t.name.lower(): c for t, c in session.cursors.items()}
        state.lag = {
            t.name.lower(): max(0, session.remote_seq.get(t, c) - c)
            for t, c in session.cursors.items()
        }


async def _close_gracefully(stream: trio.abc.Stream) -> None:
    """TLS close_notify first (bounded), so a final ERROR or BYE reaches the peer.

    Closing a socket with unread input makes the kernel send RST, and an RST can make the
    peer drop what it has received but not yet read: our last frame, the one explaining why.
    """
    with trio.CancelScope(shield=True):
        with trio.move_on_after(1):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()
                return
        await trio.aclose_forcefully(stream)
