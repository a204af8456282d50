"""``meshsyncd bench sim``: N nodes in one process, model time, reproducible from a seed.

Theory of operation (``simnet.py`` has the machinery). One run goes through four phases in
model time (trio's ``MockClock`` with autojump: a 30 s sync interval costs nothing to wait):

1. **Join.** Node 0 is the introducer: its config lists every other node, and each of them
   lists only node 0, ``introducer = true``, exactly what ``peers add`` writes. Every node
   learns all the others from node 0's VOUCH and keeps at most ``max_peers`` sessions.
2. **The introducer leaves** (crashes): the mesh keeps running on introduced links, at most
   ``max_peers`` sessions per node. Its death spreads (MEMBERS GOSSIP).
3. **Urgent writes** from random origins, each written twice: the first is the origin's
   first (before protocol 6 it flooded and built the tree; now it follows the link-state
   tree, ``mesh/linkstate.py``), the second follows the settled tree. For each: hops
   p50/p99 of first arrivals (the hop count the HOP_PUSH carried, plus
   one; for a pull, one more than the source's), the session graph's BFS distances from
   the writer for comparison, time until every live node has it, messages (pushes, the
   pulls that delivered it, and every PRUNE/GRAFT frame sent meanwhile) and duplicates
   received per node. Then one node crashes: the LINKS traffic that change costs.
   LINKS traffic (frames, records, bytes, every node) is reported apart, never in a
   write's messages: after the join, when the introducer leaves, and for that crash.
4. **Partition and heal**: a random half is cut off; each side writes LOW items; after the
   heal, the time until every node holds every item. With ``--churn``, a tenth of the
   nodes crash, writes go on, they restart (same store, same introduced peers): all
   stores must end with equal digests.

The same figures for the gossip model Serf and Corrosion use (memberlist: each node that
learns a message sends it to 3 random members per 200 ms round until it has sent it
``ceil(4 log10(N+1))`` times; push-pull anti-entropy with one random member per scaled
interval) come from ``gossip.py``, over the same node positions and latencies.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import trio
import trio.testing

from protocol import Priority, Tier

from ..config import PeerConfig
from ..logs import configure_logging
from .gossip import gossip_figures
from .simnet import SimNet, SimNode, host_of, inline_threads, sim_config

__all__ = ["run_sim"]

EPOCH_MS = 1_790_000_000_000
WRITE_TIMEOUT = 60.0
CONVERGE_TIMEOUT = 600.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _until(cond: Callable[[], bool], limit: float = 30.0, step: float = 0.05) -> float:
    """Model seconds until ``cond`` holds (``limit`` when it never does)."""
    start = trio.current_time()
    while not cond():
        if trio.current_time() - start >= limit:
            return limit
        await trio.sleep(step)
    return trio.current_time() - start


class Run:
    """One simulation run: its nodes and the figures gathered so far."""

    def __init__(
        self,
        n: int,
        seed: int,
        max_peers: int,
        root: Path,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.n, self.seed, self.max_peers, self.root = n, seed, max_peers, root
        self.progress = progress
        self.rng = random.Random(seed)
        self.net = SimNet(seed, lambda: EPOCH_MS + int(trio.current_time() * 1000))
        self.ids = [hashlib.sha256(b"sim-%d-%d" % (seed, i)).digest() for i in range(n)]
        for node_id in self.ids:
            self.net.pos[node_id] = (self.rng.random(), self.rng.random())
        self.nodes: list[SimNode] = []
        self.figures: dict[str, Any] = {"nodes": n, "seed": seed, "max_peers": max_peers}
        self.nursery: trio.Nursery

    def build(self) -> None:
        """The nodes (inside the run: they read the model clock)."""
        hub = self.ids[0]
        for i, node_id in enumerate(self.ids):
            if i == 0:
                peers = tuple(PeerConfig(p, host_of(j), 7700) for j, p in enumerate(self.ids) if j)
            else:
                peers = (PeerConfig(hub, host_of(0), 7700, introducer=True),)
            config = sim_config(self.root, i, peers, self.max_peers)
            self.nodes.append(SimNode(self.net, i, node_id, config, {}))
        for node in self.nodes:
            self.net.nodes[node.node_id] = node

    def live(self) -> list[SimNode]:
        return [node for node in self.nodes if node.running]

    async def start(self, node: SimNode) -> None:
        await self.nursery.start(node.run)

    def crash(self, node: SimNode) -> None:
        for session in list(node.sessions.values()):
            self.nursery.start_soon(session.stream.aclose)
        node.scope.cancel()

    async def restart(self, node: SimNode) -> SimNode:
        """The same node id, store and introduced peers (``introduced.json``), a new process."""
        fresh = SimNode(self.net, node.index, node.node_id, node.config, node.membership.introduced)
        self.nodes[node.index] = fresh
        self.net.nodes[node.node_id] = fresh
        await self.start(fresh)
        return fresh

    async def join(self) -> None:
        for node in self.nodes:
            await self.start(node)
            await trio.sleep(0.001)
        want = self.n - 2
        took = await _until(
            lambda: all(len(n.membership.introduced) == want for n in self.nodes[1:]), 300, 0.25
        )
        await trio.sleep(5)
        degrees = [len(n.sessions) for n in self.nodes[1:]]
        self.figures["join"] = {
            "introduced_all_s": round(took, 2),
            "sessions_per_node": round(statistics.mean(degrees), 2),
            "max_sessions": max(degrees),
        }
        self.figures["link_state"] = {"startup": self._links()}

    def _links(self, since: dict[str, int] | None = None) -> dict[str, int]:
        """LINKS traffic so far, every node (or since ``since``): frames, records, bytes."""
        total = {
            key: sum(getattr(n.linkstate.stats, f"{key}_out") for n in self.nodes)
            for key in ("frames", "records", "bytes")
        }
        return {k: v - (since or {}).get(k, 0) for k, v in total.items()}

    async def urgent(self, writes: int) -> None:
        before = self._links()
        self.crash(self.nodes[0])  # the introducer leaves; the mesh carries on without it
        await trio.sleep(10)
        self.figures["link_state"]["introducer_left"] = self._links(before)
        live = self.live()
        self.figures["after_introducer_left"] = {
            "sessions_per_node": round(statistics.mean(len(n.sessions) for n in live), 2),
            "max_sessions": max(len(n.sessions) for n in live),
        }
        flood: list[dict[str, Any]] = []
        tree: list[dict[str, Any]] = []
        for w in range(writes):
            origin = self.rng.choice(live)
            for rnd, out in ((0, flood), (1, tree)):
                key = hashlib.sha256(b"urgent-%d-%d" % (w, rnd)).digest()[:16]
                item = await origin.write(key, Priority.URGENT)
                out.append(await self._spread(item, live))
                await trio.sleep(1)
        self.figures["urgent_first_write"] = _summary(flood)
        self.figures["urgent"] = _summary(tree)
        # one membership change: a node crashes; its neighbours' records change, spread,
        # and they link to others (more records). What the link state costs for it:
        before = self._links()
        self.crash(self.rng.choice(live[1:]))
        await trio.sleep(10)
        self.figures["link_state"]["one_crash"] = self._links(before)

    async def _spread(self, item: Any, live: list[SimNode]) -> dict[str, Any]:
        key = self.net.track(item)
        t0 = trio.current_time()
        tree_frames = self.net.tree_frames
        bfs = _bfs(live, item.origin)
        indexes = {n.index for n in live}
        first = self.net.first[key]
        await _until(lambda: indexes <= set(first), WRITE_TIMEOUT, 0.01)
        await trio.sleep(0.5)  # late duplicates still in flight are counted too
        hops = [float(first[i][1]) for i in indexes if i in first and first[i][1] > 0]
        copies = self.net.copies[key]
        got = [i for i in indexes if i in first]
        return {
            "hops": hops,
            "all_s": max(first[i][0] for i in got) - t0 if len(got) == len(indexes) else -1.0,
            # every frame the write caused: pushes, the pulls that delivered it, and the
            # PRUNE/GRAFT frames sent meanwhile (this window has no other write in flight)
            "messages": float(sum(copies.values()) + self.net.tree_frames - tree_frames),
            "tree_frames": self.net.tree_frames - tree_frames,
            "dups": statistics.mean(max(0, copies[i] - 1) for i in got if i != live[0].index),
            "reached": len(got) / len(indexes),
            # the session graph's own distances from the origin, for comparison
            "bfs": [float(d) for i, d in bfs.items() if d > 0],
        }

    async def partition(self, items: int) -> None:
        live = self.live()
        sides = {n.node_id: self.rng.randrange(2) for n in self.nodes}
        self.net.cut(sides)
        await trio.sleep(10)
        keys = []
        for side in (0, 1):
            writers = [n for n in live if sides[n.node_id] == side]
            for k in range(items):
                node = self.rng.choice(writers)
                key = hashlib.sha256(b"split-%d-%d" % (side, k)).digest()[:16]
                keys.append(self.net.track(await node.write(key, Priority.LOW)))
        await trio.sleep(5)
        indexes = {n.index for n in live}
        cross = sum(1 for n in live for p in n.sessions if sides[p] != sides[n.node_id])
        before = sum(1 for k in keys if indexes <= set(self.net.first[k]))
        self.net.heal()
        took = await _until(
            lambda: all(indexes <= set(self.net.first[k]) for k in keys), CONVERGE_TIMEOUT, 0.1
        )
        self.figures["partition_heal"] = {
            "items": len(keys),
            "cross_sessions_before_heal": cross,
            "items_everywhere_before_heal": before,
            "converged_s": round(took, 2),
            "sync_intervals": round(took / 30.0, 2),
        }

    async def churn(self) -> None:
        """A tenth of the nodes crash; writes go on; they come back; every digest agrees."""
        live = self.live()
        victims = self.rng.sample(live, max(1, len(live) // 10))
        for node in victims:
            self.crash(node)
        await trio.sleep(8)
        survivors = [n for n in live if n not in victims]
        for k in range(10):
            node = self.rng.choice(survivors)
            await node.write(hashlib.sha256(b"churn-%d" % k).digest()[:16], Priority.NORMAL)
        for node in victims:
            await self.restart(node)
        nodes = self.live()

        def same() -> bool:
            digests = {tuple(n.engine.engine.digest(t) for t in Tier) for n in nodes}
            return len(digests) == 1

        took = await _until(same, CONVERGE_TIMEOUT, 0.5)
        self.figures["churn"] = {
            "crashed": len(victims),
            "converged_s": round(took, 2),
            "converged": same(),
        }

    async def main(self, writes: int, partition_items: int, churn: bool) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.build()
            for phase, step in (
                ("join", self.join()),
                ("urgent writes", self.urgent(writes)),
                ("partition", self.partition(partition_items)),
                *([("churn", self.churn())] if churn else []),
            ):
                self.progress(f"{phase}: model {trio.current_time():.1f} s")
                await step
            self.figures["model_s"] = round(trio.current_time(), 1)
            self.figures["membership"] = {
                key: sum(getattr(n.membership.stats, key) for n in self.nodes)
                for key in ("gossip_in", "changes", "deaths", "refutations")
            }
            nursery.cancel_scope.cancel()


def _bfs(live: list[SimNode], origin: int) -> dict[int, int]:
    """Hops from the writer to every live node over the sessions open now (shortest paths)."""
    by_id = {n.node_id: n for n in live}
    start = next(n for n in live if n.engine.engine.origin == origin)
    dist = {start.index: 0}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for pid in node.sessions:
                peer = by_id.get(pid)
                if peer is not None and peer.index not in dist:
                    dist[peer.index] = dist[node.index] + 1
                    nxt.append(peer)
        frontier = nxt
    return dist


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    hops = [h for r in runs for h in r["hops"]]
    bfs = [h for r in runs for h in r["bfs"]]
    return {
        "hops_p50": _pct(hops, 0.5),
        "hops_p99": _pct(hops, 0.99),
        "bfs_hops_p99": _pct(bfs, 0.99),
        "bfs_eccentricity": max(max(r["bfs"], default=0.0) for r in runs),
        "all_nodes_s": round(max(r["all_s"] for r in runs), 3),
        "messages_per_write": round(statistics.mean(r["messages"] for r in runs), 1),
        "max_messages_per_write": max(r["messages"] for r in runs),
        "prunes_grafts_per_write": round(statistics.mean(r["tree_frames"] for r in runs), 1),
        "duplicates_per_node": round(statistics.mean(r["dups"] for r in runs), 2),
        "reached": round(min(r["reached"] for r in runs), 4),
    }


def run_sim(
    n: int,
    seed: int = 1,
    *,
    max_peers: int = 8,
    writes: int = 5,
    partition_items: int = 20,
    churn: bool = False,
    root: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the simulation; return its figures and the gossip model's (see module doc)."""
    rng_state = trio._core._run._r.getstate()
    trio._core._run._r.seed(seed)  # trio shuffles its run queue with this generator
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(dir=root or _tmp_root()) as tmp, inline_threads():
            run = Run(n, seed, max_peers, Path(tmp), progress)
            clock = trio.testing.MockClock(autojump_threshold=0)
            trio.run(run.main, writes, partition_items, churn, clock=clock)
    finally:
        trio._core._run._r.setstate(rng_state)
    figures = run.figures
    positions = [run.net.pos[i] for i in run.ids[1:]]
    figures["gossip_model"] = gossip_figures(positions, seed, writes * 2, partition_items)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    return figures


def _tmp_root() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


@click.command("sim")
@click.option("--nodes", "n", type=click.IntRange(3, 5000), default=100, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--max-peers", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--writes", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--churn", is_flag=True, help="Also crash a tenth of the nodes and restart them.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def sim_cmd(n: int, seed: int, max_peers: int, writes: int, churn: bool, as_json: bool) -> None:
    """Simulate N nodes (real sessions, relay, membership, stores) in model time.

    \b
    Examples:
      meshsyncd bench sim --nodes 100
      meshsyncd bench sim --nodes 1000 --seed 7 --json
    """
    configure_logging("console", "error")  # a thousand nodes' session logs say nothing here
    started = time.perf_counter()

    def progress(text: str) -> None:
        click.echo(f"[{time.perf_counter() - started:7.1f} s] {text}", err=True)

    figures = run_sim(n, seed, max_peers=max_peers, writes=writes, churn=churn, progress=progress)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    ours, gossip = figures["urgent"], figures["gossip_model"]
    click.echo(f"{n} nodes, seed {seed}, max_peers {max_peers}; {figures['wall_s']} s wall")
    click.echo(f"join: {figures['join']}; after the introducer left: "
               f"{figures['after_introducer_left']}")  # fmt: skip
    click.echo(f"{'urgent write':<28}{'meshsyncd':>14}{'gossip model':>14}")
    rows = [
        ("hops p50", "hops_p50"),
        ("hops p99", "hops_p99"),
        ("until every node has it, s", "all_nodes_s"),
        ("messages per write", "messages_per_write"),
        ("duplicates per node", "duplicates_per_node"),
    ]
    for label, key in rows:
        click.echo(f"{label:<28}{ours[key]:>14}{gossip['urgent'][key]:>14}")
    first = figures["urgent_first_write"]
    for label, key in (("first write: messages", "messages_per_write"),
                       ("first write: duplicates", "duplicates_per_node"),
                       ("first write: hops p99", "hops_p99")):  # fmt: skip
        click.echo(f"{label:<28}{first[key]:>14}{gossip['urgent'][key]:>14}")
    click.echo(f"(session graph BFS from the writer: hops p99 {ours['bfs_hops_p99']}, "
               f"eccentricity {ours['bfs_eccentricity']})")  # fmt: skip
    click.echo(f"(an origin's first write: {first})")
    click.echo(f"link state, LINKS sent by all nodes: {figures['link_state']}")
    heal = figures["partition_heal"]["converged_s"]
    click.echo(f"{'converged after heal, s':<28}{heal:>14}{gossip['heal_converged_s']:>14}")
    if "churn" in figures:
        click.echo(f"churn: {figures['churn']}")
