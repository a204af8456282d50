"""Partition and heal through a fault-injecting proxy between real daemons.

Every node lists every other at the address of a :class:`FaultProxy` that forwards to it, so
all traffic between two nodes crosses the two proxies they dial each other through. Both
sides write during the partition (conflicting writes to the same keys and writes nobody else
touches); after healing every node must hold, for every key, the version with the greatest
``(timestamp_ns, origin)`` key returned by ``put`` (DESIGN.md "Conflict order"), and no
non-conflicting write may be missing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack

import pytest
from faultnodes import FaultNode, Fleet, converged, wait_for
from ledger import Expect
from proxy import FaultProxy

from meshsyncd.client import ClientError


def _proxied_mesh(
    fleet: Fleet, stack: ExitStack, names: Sequence[str]
) -> tuple[list[FaultNode], dict[tuple[str, str], FaultProxy]]:
    """Nodes that reach each other only through proxies: ``proxies[a, b]`` is the one
    ``a`` dials ``b`` through."""
    nodes = [fleet.node(n) for n in names]
    proxies: dict[tuple[str, str], FaultProxy] = {}
    for a, b in itertools.permutations(nodes, 2):
        p = stack.enter_context(FaultProxy(b.port))
        proxies[a.name, b.name] = p
        a.set_option("sync_interval", "1s")
        a.add_peer(b, f"127.0.0.1:{p.port}")
    return nodes, proxies


def _between(
    proxies: dict[tuple[str, str], FaultProxy], left: Sequence[str], right: Sequence[str]
) -> Iterator[FaultProxy]:
    for (a, b), p in proxies.items():
        if (a in left and b in right) or (a in right and b in left):
            yield p


def test_partition_cut_then_heal_converges_to_the_winners(fleet: Fleet) -> None:
    with ExitStack() as stack:
        nodes, proxies = _proxied_mesh(fleet, stack, ["a", "b", "c"])
        a, b, c = nodes
        for n in nodes:
            n.start()
        expect = Expect()
        # shared history before the partition
        for i in range(10):
            expect.put(nodes[i % 3], "episodic", f"shared{i}", f"v0-{i}", "urgent")
        expect.merge(a, "semantic", "profile", {"name": "x", "role": "r0"})
        wait_for(lambda: converged(nodes), 30, "a, b and c to converge before the partition")
        hops = sum(p.connections for p in proxies.values())
        assert hops >= 3, "the nodes did not talk through the proxies"

        # partition {a, c} | {b}: live sessions close, new ones are refused
        for p in _between(proxies, ["a", "c"], ["b"]):
            p.cut()
        wait_for(
            lambda: not any(x.connected_to(b) for x in (a, c)) and not b.connected_to(a),
            15,
            "the partition to close the sessions across it",
        )
        assert a.connected_to(c), "a and c are on the same side and must stay connected"

        for i in range(10):  # conflicting: both sides update the same shared items
            side = a if i % 2 else c
            expect.put(side, "episodic", f"shared{i}", f"{side.name}-{i}", "urgent")
            expect.put(b, "episodic", f"shared{i}", f"b-{i}", "high")
        for i in range(5):  # conflicting new keys, several priorities and tiers
            expect.put(b, "working", f"new{i}", f"b-new{i}", "normal")
            expect.put(a, "working", f"new{i}", f"a-new{i}", "low")
        expect.delete(a, "episodic", "shared3")  # a tombstone against b's update
        expect.put(b, "episodic", "shared4", "b-late", "urgent")
        expect.delete(b, "episodic", "shared4")
        expect.merge(b, "semantic", "profile", {"role": "rb", "b": 1})
        expect.merge(c, "semantic", "profile", {"role": "rc", "c": 2})
        for n in nodes:  # writes only one node makes
            for i in range(20):
                tier = ("working", "episodic", "semantic")[i % 3]
                prio = ("urgent", "normal", "low", "background")[i % 4]
                expect.put(n, tier, f"only-{n.name}-{i}", f"{n.name}:{i}", prio)

        # the side without b converges on its own, b does not see it
        wait_for(lambda: converged([a, c]), 30, "a and c to converge during the partition")
        with b.client() as cl, pytest.raises(ClientError):
            cl.get(tier="working", key="only-a-0")

        for p in _between(proxies, ["a", "c"], ["b"]):
            p.resume(delay=0.01)  # heal, with some latency on the healed links
        wait_for(lambda: converged(nodes), 90, "all three nodes to converge after healing")
        for n in nodes:
            expect.check(n)
        counts = {
            n.name: {t: n.items(t) for t in ("working", "episodic", "semantic")} for n in nodes
        }
        assert len({json.dumps(v, sort_keys=True) for v in counts.values()}) == 1, counts
        assert counts["a"]["working"] == 5 + 3 * 7, counts  # new0-4 and every only-*-working


def test_drop_holds_traffic_and_resume_delivers_it(fleet: Fleet) -> None:
    """A short black hole (shorter than the dead-link timeout): sessions survive it, the
    writes made on both sides during it are delivered in order when forwarding resumes."""
    with ExitStack() as stack:
        nodes, proxies = _proxied_mesh(fleet, stack, ["a", "b"])
        a, b = nodes
        for n in nodes:
            n.start()
        wait_for(lambda: a.connected_to(b) and b.connected_to(a), 20, "a and b to connect")
        connects = (a.peer_row(b) or {})["connects"], (b.peer_row(a) or {})["connects"]
        expect = Expect()
        expect.put(a, "working", "k", "before", "urgent")
        wait_for(lambda: converged(nodes), 20, "a and b to converge before the black hole")

        for p in proxies.values():
            p.drop()
        for i in range(10):
            expect.put(a, "working", "k", f"a{i}", "urgent")
            expect.put(b, "working", "k", f"b{i}", "urgent")
            expect.put(a, "episodic", f"a{i}", "x", "normal")
            expect.put(b, "episodic", f"b{i}", "y", "low")
        with b.client() as cl:  # nothing crosses the black hole
            assert cl.get(tier="working", key="k")["value"] == "b9"
            with pytest.raises(ClientError):
                cl.get(tier="episodic", key="a0")

        for p in proxies.values():
            p.resume(delay=0.05)
        wait_for(lambda: converged(nodes), 25, "a and b to converge after the black hole")
        for n in nodes:
            expect.check(n)
        # the same sessions carried it: nobody reconnected
        after = (a.peer_row(b) or {})["connects"], (b.peer_row(a) or {})["connects"]
        assert after == connects, (connects, after)
