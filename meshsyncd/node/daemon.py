"""The node daemon: store, listener, peer sessions, push lanes, control socket, reload.

Theory of operation: nurseries nest by lifetime. ``Daemon.run`` opens the store (off the
trio thread), then under one nursery starts the TLS listener, one dialer per configured
peer, the control server, the NORMAL-priority linger task, periodic maintenance and the
signal handler, and only then reports readiness (``task_status.started``).

Dialing, accepting and the rule for duplicate sessions live in ``links.py`` (``Links``, mixed
in), the operator's views (peers table, status line, metrics, sync, check) in ``views.py``
(``OperatorViews``, mixed in); this module owns the node's lifetime, reload and the data flow.

Local writes reach peers by priority (DESIGN.md "Priorities"): URGENT and HIGH are pushed
to every session at once, NORMAL after a short linger that batches bursts, LOW and
BACKGROUND only by the periodic pull. Pushes never move cursors, so a dropped push loses
nothing. SIGHUP reloads the config: peers added are dialled, removed ones are closed
(BYE REMOVED), unchanged ones keep their sessions; a bad config is refused and logged.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

import protocol as P
from protocol import Item, Priority, Tier

from ..aengine import AsyncEngine
from ..clock import HybridClock
from ..config import Config, ConfigError, PeerConfig, load_config, parse_address
from ..control.server import ChangeFeed, ControlServer, ControlSocketError
from ..engine import Engine
from ..identity import Identity, short_text_of
from ..mesh.barrier import Barriers
from ..mesh.linkstate import forward_filter
from ..mesh.relay import Relay
from ..mesh.repair import Repair
from ..mesh.tree import Trees
from ..metrics import MeteredEngine, Metrics
from ..store import Store
from .admission import HandshakeGate
from .links import PeerState
from .members import MemberLinks, link_state, load_membership
from .notify import Notifier
from .session import FrameHandler, Session
from .startup import STORE_ERRORS, check_store_path, step
from .transport import TrustStore
from .views import OperatorViews

__all__ = ["Daemon", "PeerState"]

SHUTDOWN_GRACE = 3.0
STORE_CLOSE_TIMEOUT = 15.0
MAINTENANCE_EVERY = 300.0

log: Any = structlog.get_logger("meshsyncd.daemon")


class Daemon(MemberLinks, OperatorViews):
    """One running node; implements the control server's ``DaemonView``."""

    def __init__(self, config: Config, identity: Identity) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.started_at = time.time()
        self.feed = ChangeFeed()
        self.sessions: dict[bytes, Session] = {}
        self.peers: dict[bytes, PeerState] = {p.node_id: PeerState(p) for p in config.peers}
        self.trust = TrustStore(identity, config.node_dir, set(self.peers))
        self.listen_port = 0
        self.refused_unknown = 0
        self.reloads = 0
        self.relay = Relay()
        self._nursery: trio.Nursery | None = None
        self.engine: AsyncEngine
        self.ready = trio.Event()
        self.on_ready: Callable[[Daemon], None] | None = None
        # service manager and metrics (docs/operations.md)
        self.notifier = Notifier()
        self.metrics = Metrics()
        # mesh (meshsyncd/mesh/): frame handlers by class, and the HELLO bits they add
        self.barriers = Barriers(
            self.node_id, links=lambda: self.sessions, configured=lambda: list(self.config_ids)
        )
        self.membership = load_membership(config, self.node_id)  # members.py
        self.trust.reload(allowed=self.membership.trusted())
        self.trees = Trees()
        self.linkstate = link_state(self.membership)  # members.py: trees before the flood
        self.relay.skip = forward_filter(self.linkstate, self.trees)
        self.relay.sent = self.trees.sent
        self.extensions: dict[type[P.Frame], FrameHandler] = {
            P.Barrier: self._on_barrier,
            P.BarrierDone: self._on_barrier_done,
            P.Members: self._on_members,
            P.Prune: self._on_prune,
            P.Links: self._on_links,
        }
        self.capabilities = int(P.Capability.BARRIER)
        # unauthenticated connections: limits, refusal log lines, heap relief (admission.py)
        self.gate = HandshakeGate(
            config.handshakes,
            [p.host for p in config.peers],
            count=self.metrics.observe_refusal,
            is_peer=lambda pid: pid in self.trust.allowed,
        )
        # repair (mesh/repair.py): self-check, digest announcements, range reconciliation
        self.repair = Repair(
            verify_interval=config.verify_interval, announce_every=config.sync_interval
        )
        self.extensions.update(self.repair.handlers())
        self.capabilities |= P.Capability.REPAIR | P.Capability.MEMBERSHIP

    @property
    def config_ids(self) -> list[bytes]:
        """The configured peers (introduced ones are not the barrier's business)."""
        return [p.node_id for p in self.config.peers]

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (or SIGTERM/SIGINT when ``handle_signals`` ran).

        Raises:
            StartupError: the store cannot be opened, or the listen address, control
                socket or metrics address cannot be bound (the message names which).
        """
        cfg = self.config
        with step(f"cannot open the store {cfg.store_path}", *STORE_ERRORS):
            check_store_path(cfg.store_path)
            store = await trio.to_thread.run_sync(
                lambda: Store.open(
                    cfg.store_path,
                    retention_ns=cfg.retention_ns,
                    local_synchronous=cfg.durability.upper(),
                    conflict_bytes=cfg.conflict_bytes,
                    history_versions=cfg.history_versions,
                    history_bytes=cfg.history_bytes,
                    snapshot_bytes=cfg.snapshot_bytes,
                )
            )
        try:
            clock = HybridClock(max_skew_ns=cfg.max_clock_skew_ns)
            self.engine = MeteredEngine(
                Engine(store, node_id=self.node_id, clock=clock), self.metrics
            )
            wait = self.engine.engine.lease_wait_s()
            if wait:
                # Restarted within a second of an urgent write that may have been pushed
                # before it committed: let the wall clock pass it (engine.py, clock lease).
                log.info("waiting for the clock lease", seconds=round(wait, 3))
                await trio.sleep(wait)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.barriers.start(nursery)
                listen = f"{cfg.listen_host}:{cfg.listen_port}"
                with step(f"cannot listen on {listen} (peer listener)", OSError):
                    listeners = await trio.open_tcp_listeners(cfg.listen_port, host=cfg.listen_host)
                self.listen_port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(trio.serve_listeners, self._inbound, listeners)
                where = f"cannot serve the control socket {cfg.control_socket}"
                with step(where, OSError, ControlSocketError):
                    await nursery.start(ControlServer(self, cfg.control_socket).serve)
                for state in self.peers.values():
                    self._start_dialer(state)
                nursery.start_soon(self.relay.run_linger, lambda: self.sessions)
                nursery.start_soon(self.relay.run_announcer, self._announce)
                nursery.start_soon(self._maintenance_loop)
                nursery.start_soon(self.gate.run)
                nursery.start_soon(self.repair.run, self.engine, self.sessions.values)
                nursery.start_soon(self._membership_loop)
                if cfg.metrics_listen:
                    host, port = parse_address(cfg.metrics_listen, "metrics.listen")
                    where = f"cannot listen on {cfg.metrics_listen} (metrics endpoint)"
                    with step(where, OSError):
                        await nursery.start(self.metrics.serve, host, port, self.metrics_snapshot)
                self._write_pid()
                log.info(
                    "daemon ready",
                    node=self.identity.text,
                    listen=f"{cfg.listen_host}:{self.listen_port}",
                    peers=len(self.peers),
                    incarnation=store.incarnation.hex(),
                )
                self.ready.set()
                self.notifier.ready(self.describe())
                nursery.start_soon(self.notifier.watchdog_loop)
                nursery.start_soon(self.notifier.status_loop, self._describe_now)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                if hasattr(self, "engine"):
                    with trio.move_on_after(STORE_CLOSE_TIMEOUT) as closing:
                        await self.engine.run(store.close)
                    if closing.cancelled_caught:  # SQLite's WAL keeps the data safe anyway
                        log.error("store did not close in time; exiting without closing it")
                else:
                    store.close()
            if self.ready.is_set():  # a start that failed says so once, in run's one line
                self._remove_pid()
                log.info("daemon stopped", node=self.identity.text)

    async def shutdown(self) -> None:
        """Say BYE to every peer (bounded), then stop everything."""
        self.notifier.stopping()
        log.info("shutting down", sessions=len(self.sessions))
        with trio.move_on_after(SHUTDOWN_GRACE):
            async with trio.open_nursery() as nursery:
                for session in list(self.sessions.values()):
                    nursery.start_soon(session.close, P.ByeCode.SHUTDOWN, "shutting down")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def handle_signals(self) -> None:
        """SIGHUP reloads; SIGTERM and SIGINT shut down gracefully."""
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    await self.shutdown()
                    return

    def _write_pid(self) -> None:
        path = self.config.node_dir / "meshsyncd.pid"
        with contextlib.suppress(OSError):
            path.write_text(f"{os.getpid()}\n")

    def _remove_pid(self) -> None:
        """Remove the pid file only if it is ours: never what another daemon wrote."""
        path = self.config.node_dir / "meshsyncd.pid"
        with contextlib.suppress(OSError, ValueError):
            if int(path.read_text(encoding="ascii").strip()) == os.getpid():
                path.unlink()

    # -- reload -----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config; apply peer changes; keep the old config if the new one is bad.

        Tells systemd RELOADING=1, then READY=1 whether the new config was taken or refused.
        """
        self.notifier.reloading()
        try:
            return self._reload()
        finally:
            self.notifier.ready(self.describe())

    def _reload(self) -> bool:
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config", error=str(exc))
            return False
        old = {p.node_id: p for p in self.config.peers}
        fresh = {p.node_id: p for p in new.peers}
        removed = [pid for pid in old if pid not in fresh]
        added = [pid for pid in fresh if pid not in old]
        changed = [pid for pid in fresh if pid in old and fresh[pid] != old[pid]]
        self.config = new
        self._members_reloaded(new)
        self.gate.reconfigure(new.handshakes, [p.host for p in new.peers])
        for pid in removed + changed:
            self._stop_peer(pid, P.ByeCode.REMOVED, "removed from config")
        for pid in added + changed:
            state = PeerState(fresh[pid])
            self.peers[pid] = state
            self._start_dialer(state)
        self.reloads += 1
        log.info(
            "config reloaded",
            added=[short_text_of(p) for p in added],
            removed=[short_text_of(p) for p in removed],
            changed=[short_text_of(p) for p in changed],
        )
        return True

    # -- data flow --------------------------------------------------------------------------

    def on_local_write(self, item: Item) -> None:
        """Fan a fresh local write out by priority (``mesh/relay.py``)."""
        self.relay.local_write(self.sessions, item)

    def _on_applied(
        self, session: Session, batch: P.Batch, changed: list[Item] | None, hops: int | None
    ) -> None:
        """A peer's batch was applied: relay what changed, or announce it (pulls)."""
        if session.peer_hello is not None:
            source = session.peer_hello.node_id
            if changed is None or changed:
                self.relay.applied(self.sessions, batch.tier, source, changed, hops or 0)
            if changed is not None:
                self.relay.settled(batch.items)
            self._tree_applied(session, batch, changed, hops)

    def _on_received(self, session: Session, batch: P.Batch, hops: int) -> None:
        if session.peer_hello is not None:
            source = session.peer_hello.node_id
            self.relay.received(self.sessions, batch.tier, source, batch.items, hops)

    async def _on_barrier(self, session: Session, frame: P.Frame) -> None:
        assert isinstance(frame, P.Barrier) and session.peer_hello is not None
        await self.barriers.on_barrier(session.peer_hello.node_id, session, frame)

    async def _on_barrier_done(self, session: Session, frame: P.Frame) -> None:
        assert isinstance(frame, P.BarrierDone) and session.peer_hello is not None
        await self.barriers.on_done(session.peer_hello.node_id, frame)

    async def _announce(self, peer: bytes, tier: Tier) -> bool:
        session = self.sessions.get(peer)
        return session is not None and await session.announce_tier(tier)

    def _on_remote(self, batch: P.Batch, peer: PeerConfig) -> None:
        source = peer.text
        now_ns = time.time_ns()
        for item in batch.items:
            if item.priority == Priority.URGENT:
                self.metrics.observe_urgent_latency((now_ns - item.timestamp_ns) / 1e9)
            self.feed.publish(
                {
                    "tier": item.tier.name,
                    "item_id": item.item_id.hex(),
                    "op": item.op.name,
                    "origin": item.origin,
                    "timestamp_ns": item.timestamp_ns,
                    "source": source,
                }
            )

    async def _maintenance_loop(self) -> None:
        # A store can open with its tail above the limit (written by a version that allowed
        # a tail per tier): fold it now, in steps an urgent write can pass, rather than
        # inline in whatever apply comes first.
        await self.engine.maintain()
        while True:
            await trio.sleep(MAINTENANCE_EVERY)
            peers = [short(p) for p in self.peers]
            grace = self.config.tombstone_grace_ns
            purge = functools.partial(self.engine.engine.purge, peers, grace_ns=grace)
            purged = await self.engine.run(purge)
            if purged:
                log.info("purged", versions=purged)


def short(node_id: bytes) -> int:
    return int.from_bytes(node_id[:8], "big")


def freeze_startup_heap() -> None:
    """Move everything allocated so far out of the cyclic GC's reach.

    Why: a full collection walks every tracked object, and the imported modules alone
    (trio, cryptography, structlog, click...) make one take ~30 ms here; traced during a
    bulk transfer, those collections were the 30-45 ms stalls of the event loop that set
    the urgent-push tail. The startup heap lives as long as the process anyway, so
    ``gc.freeze()`` loses nothing; later garbage is still collected.
    """
    gc.collect()
    gc.freeze()


async def run_daemon(config: Config, identity: Identity) -> None:
    """Run a daemon with signal handling until SIGTERM/SIGINT (the ``run`` command)."""
    daemon = Daemon(config, identity)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        freeze_startup_heap()
        nursery.start_soon(_signals_then_stop, daemon, nursery)


async def _signals_then_stop(daemon: Daemon, nursery: trio.Nursery) -> None:
    await daemon.handle_signals()
    nursery.cancel_scope.cancel()


def default_socket(node_dir: Path) -> Path:
    return node_dir / "control.sock"
