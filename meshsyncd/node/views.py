"""The operator's views of a running node: peers table, status line, metrics, sync, check.

These are the methods of the control server's ``DaemonView`` (``control/ops.py``) and the
callbacks of the service manager and the metrics endpoint: what ``meshsyncd peers``,
``sync``, ``check``, ``systemctl status`` and a metrics scrape see. They read the node's
state (sessions, peers, membership, relay, barrier and repair counters); ``sync_now`` also
runs a barrier or a two-node sync through the mesh modules and the sessions.

Why a module of its own: ``daemon.py`` owns the node's lifetime, reload and data flow;
these views are a separate concern with its own users (the operator), and they grow with
every counter the operator is shown. ``OperatorViews`` is a mixin of
:class:`~meshsyncd.node.daemon.Daemon` (listed after ``MemberLinks``, which provides
``_introduced_by``): the attributes it declares are the daemon's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

import protocol as P

from .. import __version__
from ..aengine import AsyncEngine
from ..config import Config
from ..identity import Identity, node_id_text
from ..mesh.barrier import Barriers
from ..mesh.linkstate import LinkState
from ..mesh.membership import Membership
from ..mesh.relay import Relay, RelayStats
from ..mesh.repair import Repair
from ..metrics import Snapshot, tier_counts
from .admission import HandshakeGate
from .links import PeerState
from .session import Session

__all__ = ["OperatorViews"]


class OperatorViews:
    """The operator's views (mixed into ``Daemon``; see the module doc)."""

    config: Config
    identity: Identity
    node_id: bytes
    engine: AsyncEngine
    sessions: dict[bytes, Session]
    peers: dict[bytes, PeerState]
    listen_port: int
    reloads: int
    refused_unknown: int
    gate: HandshakeGate
    relay: Relay
    membership: Membership
    linkstate: LinkState
    barriers: Barriers
    repair: Repair
    _introduced_by: Callable[[bytes], list[str]]  # MemberLinks's (members.py)

    async def sync_now(
        self,
        peers: list[bytes] | None,
        timeout: float,  # noqa: ASYNC109 - the operator's deadline, part of the request
    ) -> dict[str, Any]:
        """The sync barrier: mesh-wide by default (``mesh/barrier.py``), or with ``peers``
        only, two-node syncs with each of them (our pulls done, their acks caught up)."""
        if peers is None:
            result = await self.barriers.run(timeout)
            nodes = {node_id_text(n): s.name.lower() for n, s in result.nodes.items()}
            me = node_id_text(self.node_id)
            return {
                "synced": sorted(node_id_text(n) for n in result.covered if n != self.node_id),
                "failed": sorted(node_id_text(n) for n in result.failed),
                "nodes": {n: s for n, s in sorted(nodes.items()) if n != me},
            }
        synced: list[str] = []

        async def one(pid: bytes) -> None:
            session = self.sessions.get(pid)
            if session is None:
                return
            seqs = await session.announce()
            await session.wait_synced()
            await session.wait_acked(seqs)
            synced.append(node_id_text(pid))

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for pid in peers:
                    nursery.start_soon(one, pid)
        failed = [node_id_text(p) for p in peers if node_id_text(p) not in synced]
        return {"synced": sorted(synced), "failed": sorted(failed)}

    def sync_progress(self) -> dict[str, int]:
        """Nodes the latest (or running) barrier from here has covered, of those it knows."""
        states = self.barriers.progress
        covered = sum(1 for state in states.values() if state == P.NodeState.COVERED)
        return {"covered": covered, "known": len(states)}

    def peers_table(self) -> list[dict[str, Any]]:
        """One JSON-able row per configured peer for ``meshsyncd peers``."""
        rows = []
        for pid, state in self.peers.items():
            session = self.sessions.get(pid)
            row: dict[str, Any] = {
                "id": state.config.text,
                "address": state.config.address,
                "state": "connected" if session else state.state,
                "tiers": sorted(t.name.lower() for t in state.config.tiers),
                "write_tiers": sorted(t.name.lower() for t in state.config.write_tiers),
                "last_error": state.last_error,
                "reason": "" if session else state.reason or _waiting(state),
                "connects": state.connects,
                "refused": state.refused,
                "last_seen": state.last_seen or None,
                "cursors": dict(state.cursors),
                "lag": dict(state.lag),
                "introduced_by": self._introduced_by(pid),
                "membership_refused": self.membership.stats.refused.get(pid, 0)
                + self.linkstate.stats.refused.get(pid, 0),
            }
            if session is not None:
                st = session.stats
                relay = self.relay.stats.get(pid) or RelayStats()
                row |= {
                    "rtt_ms": st.rtt_ms,
                    "last_seen": st.last_seen,
                    "clock_offset_ms": st.clock_offset_ms,
                    "items_in": st.items_in,
                    "items_out": st.items_out,
                    "batches_in": st.batches_in,
                    "batches_out": st.batches_out,
                    "bytes_in": session.conn.bytes_in,
                    "bytes_out": session.conn.bytes_out,
                    "pushes_dropped": st.pushes_dropped,
                    "relayed": relay.relayed,
                    "relay_dropped": relay.relay_dropped,
                    "announced": relay.announced,
                    "rejected": st.rejected,
                    "conflicts": st.conflicts,
                    "cursors": {t.name.lower(): c for t, c in session.cursors.items()},
                    "lag": {
                        t.name.lower(): max(0, session.remote_seq.get(t, c) - c)
                        for t, c in session.cursors.items()
                    },
                }
            rows.append(row)
        return rows

    # -- service manager and metrics --------------------------------------------------------

    def describe(self, stored: int | None = None) -> str:
        """One line for ``systemctl status`` (STATUS=): peers connected, items, reloads."""
        items = f"{stored} items stored, " if stored is not None else ""
        return (
            f"{len(self.sessions)}/{len(self.peers)} peers connected, {items}"
            f"listening on {self.config.listen_host}:{self.listen_port}, reloads {self.reloads}"
        )

    async def _describe_now(self) -> str:
        tiers = await self.engine.run(tier_counts, self.engine.engine.store)
        return self.describe(sum(row["items"] for row in tiers.values()))

    async def metrics_snapshot(self) -> Snapshot:
        """State for a metrics scrape: tier counts (on the store's thread), the peers table."""
        return {
            "node": self.identity.text,
            "version": __version__,
            "reloads": self.reloads,
            "refused_unknown": self.refused_unknown,
            "handshakes_in_progress": self.gate.admission.in_progress,
            "tiers": await self.engine.run(tier_counts, self.engine.engine.store),
            "peers": self.peers_table(),
            "repair": self.repair.status(),
        }

    async def check_mesh(self) -> dict[str, Any]:
        """Per-tier digests here and at every connected peer (``meshsyncd check``)."""
        sessions = list(self.sessions.values())
        return await self.repair.check(self.engine, sessions, list(self.peers), self.node_id)


def _waiting(state: PeerState) -> str:
    """The reason shown before anything went wrong: the first dial has not answered yet."""
    return "not connected yet" if state.connects == 0 else "reconnecting"
