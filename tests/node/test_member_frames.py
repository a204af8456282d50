"""Hostile MEMBERS frames against the daemon's own membership wiring (``node/members.py``).

Three nodes of the simulation's kind (``MemberLinks`` over real sessions and stores, with
in-memory links): a hub, a member ``b`` that marks the hub ``introducer``, and ``x``, a
peer ``b`` lists by hand without that mark. The attacks are sent from the far side of a
live session, bypassing the sender's own rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import protocol as P
from meshsyncd.bench.sim import _until
from meshsyncd.bench.simnet import SimNet, SimNode, inline_threads, sim_config
from meshsyncd.config import PeerConfig
from protocol import Member, MemberKind, MemberState

HUB, B, X, C = (hashlib.sha256(b"member-%d" % i).digest() for i in range(4))


@pytest.fixture
async def trio_nodes(tmp_path: Path, autojump_clock: object) -> AsyncIterator[dict[str, SimNode]]:
    net = SimNet(1, lambda: int(trio.current_time() * 1000) + 10**12)
    configs = {
        "hub": (HUB, (PeerConfig(B, "10.0.0.2", 7700), PeerConfig(C, "10.0.0.4", 7700))),
        "b": (B, (PeerConfig(HUB, "10.0.0.1", 7700, introducer=True), PeerConfig(X, "x", 1))),
        "x": (X, (PeerConfig(B, "10.0.0.2", 7700),)),
    }
    nodes = {}
    for i, (name, (node_id, peers)) in enumerate(configs.items()):
        node = SimNode(net, i, node_id, sim_config(tmp_path, i, peers, 8), {})
        net.nodes[node_id] = nodes[name] = node
        net.pos[node_id] = (0.1 * i, 0.0)
    with inline_threads():
        async with trio.open_nursery() as nursery:
            for node in nodes.values():
                await nursery.start(node.run)
            b = nodes["b"]
            took = await _until(
                lambda: set(b.sessions) == {HUB, X} and bool(b.membership.introduced)
            )
            assert took < 30
            yield nodes
            nursery.cancel_scope.cancel()


async def _settle() -> None:
    await trio.sleep(1)


async def test_only_an_asked_introducer_introduces(trio_nodes: dict[str, SimNode]) -> None:
    b, x = trio_nodes["b"], trio_nodes["x"]
    assert set(b.membership.introduced) == {C}  # from the hub's VOUCH
    assert b.membership.introduced_by(C) == [HUB]
    # x is configured at b but not an introducer: its VOUCH is refused, counted, harmless
    x.sessions[B].send_nowait(P.Members(kind=MemberKind.VOUCH, members=(Member(HUB[:1] * 32),)))
    await _settle()
    assert set(b.membership.introduced) == {C}
    assert b.membership.stats.refused[X] == 1
    assert X in b.sessions  # a refusal, not a protocol error


async def test_gossip_declaring_its_sender_dead_ends_the_session(
    trio_nodes: dict[str, SimNode],
) -> None:
    b, hub = trio_nodes["b"], trio_nodes["hub"]
    before = dict(b.membership.records)
    dead = P.Members(kind=MemberKind.GOSSIP, members=(Member(HUB, MemberState.DEAD, heartbeat=1),))
    session = hub.sessions[B]
    session.send_nowait(dead)
    await _settle()
    assert session.conn.their_state is P.State.CLOSED  # b answered with ERROR
    assert b.membership.records == before
    assert set(b.membership.introduced) == {C}


async def test_a_vouch_listing_its_sender_ends_the_session(trio_nodes: dict[str, SimNode]) -> None:
    b, hub = trio_nodes["b"], trio_nodes["hub"]
    members = tuple(sorted((Member(HUB), Member(X)), key=lambda m: m.node_id))
    session = hub.sessions[B]
    session.send_nowait(P.Members(kind=MemberKind.VOUCH, members=members))
    await _settle()
    assert session.conn.their_state is P.State.CLOSED
    assert set(b.membership.introduced) == {C}  # nothing changed: C still vouched


async def test_an_oversized_members_frame_is_refused_before_reading(
    trio_nodes: dict[str, SimNode],
) -> None:
    b, x = trio_nodes["b"], trio_nodes["x"]
    session = x.sessions[B]
    body = bytes([MemberKind.GOSSIP]) + (P.MAX_MEMBERS + 1).to_bytes(2, "big")
    session._queue_urgent((len(body) + 1).to_bytes(4, "big") + bytes([P.Members.TYPE]) + body)
    await _settle()
    assert session.conn.their_state is P.State.CLOSED
    assert X not in b.sessions or b.sessions[X] is not session
