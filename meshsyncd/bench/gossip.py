"""The gossip model Serf and Corrosion use, over the same nodes and latencies as the sim.

Theory of operation: an event simulation of hashicorp/memberlist's broadcast queue, which
Serf (user events) and Corrosion (change broadcasts, through foca's SWIM) both follow. A
node that learns a message queues it with a transmit budget of ``ceil(4 log10(N+1))``
(``RetransmitMult`` 4); every gossip round (200 ms, each node on its own phase) it sends its
queued messages to ``GossipNodes`` = 3 random members, each send spending one transmit.
Nothing routes: every member is a possible target, so a message reaches everyone in
O(log N) rounds at the price of about N x budget sends. Convergence after a partition
heals comes from push-pull anti-entropy: each node syncs its whole state with one random
member every push-pull interval (30 s, scaled as memberlist scales it for large clusters),
because the broadcasts made during the partition spent their budgets inside their half.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from typing import Any

__all__ = ["gossip_figures"]

FANOUT = 3
ROUND = 0.2
RETRANSMIT_MULT = 4
PUSH_PULL = 30.0


def _latency(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The simulation's link latency, plus its 1 ms of processing per hop."""
    return 0.003 + 0.08 * math.hypot(a[0] - b[0], a[1] - b[1]) / math.sqrt(2)


def _broadcast(pos: list[tuple[float, float]], rng: random.Random) -> dict[str, Any]:
    n = len(pos)
    budget = RETRANSMIT_MULT * math.ceil(math.log10(n + 1))
    phase = [rng.uniform(0, ROUND) for _ in range(n)]
    origin = rng.randrange(n)
    first: dict[int, tuple[float, int]] = {}
    copies = [0] * n
    left = [0] * n
    sent = 0
    events: list[tuple[float, int, int, int]] = [(0.0, 0, origin, 0)]  # (time, seq, node, hop)
    seq = 1
    while events:
        t, _, node, hop = heapq.heappop(events)
        if hop >= 0:  # a message arrives (hop -1 marks a gossip round of ``node``)
            copies[node] += 1
            if node in first:
                continue
            first[node] = (t, hop)
            left[node] = budget
            rounds_at = t + (phase[node] - t) % ROUND
            heapq.heappush(events, (rounds_at, seq, node, -1 - hop))
            seq += 1
            continue
        my_hop = -1 - hop
        targets = rng.sample(range(n - 1), min(FANOUT, left[node]))
        for target in targets:
            target += target >= node  # never ourselves
            left[node] -= 1
            sent += 1
            heapq.heappush(events, (t + _latency(pos[node], pos[target]), seq, target, my_hop + 1))
            seq += 1
        if left[node] > 0:
            heapq.heappush(events, (t + ROUND, seq, node, hop))
            seq += 1
    hops = [h for i, (_, h) in first.items() if i != origin]
    return {
        "hops": hops,
        "all_s": max(t for t, _ in first.values()) if len(first) == n else -1.0,
        "messages": sent,
        "dups": statistics.mean(max(0, c - 1) for c in copies),
        "reached": len(first) / n,
    }


def _push_pull_interval(n: int) -> float:
    """memberlist's ``pushPullScale``: the interval grows with log2 of the cluster over 32."""
    if n <= 32:
        return PUSH_PULL
    return PUSH_PULL * (math.ceil(math.log2(n) - math.log2(32)) + 1)


def _heal(pos: list[tuple[float, float]], rng: random.Random) -> float:
    """Seconds after a heal until every node holds both halves' partition-time writes."""
    n = len(pos)
    side = [rng.randrange(2) for _ in range(n)]
    state = [{s} for s in side]
    interval = _push_pull_interval(n)
    events = [(rng.uniform(0, interval), i) for i in range(n)]
    heapq.heapify(events)
    full = sum(1 for s in state if len(s) == 2)
    while full < n:
        t, i = heapq.heappop(events)
        j = rng.randrange(n - 1)
        j += j >= i
        merged = state[i] | state[j]
        full += (len(merged) == 2) * ((len(state[i]) < 2) + (len(state[j]) < 2))
        state[i] = state[j] = merged
        heapq.heappush(events, (t + interval + 2 * _latency(pos[i], pos[j]), i))
    return t


def gossip_figures(
    positions: list[tuple[float, float]], seed: int, writes: int, partition_items: int
) -> dict[str, Any]:
    """Urgent-write and heal figures of the gossip model (same keys as the simulation's)."""
    rng = random.Random(seed ^ 0x5EED)
    runs = [_broadcast(positions, rng) for _ in range(writes)]
    hops = sorted(h for r in runs for h in r["hops"])

    def pct(q: float) -> float:
        return float(hops[min(len(hops) - 1, int(q * len(hops)))]) if hops else 0.0

    n = len(positions)
    return {
        "fanout": FANOUT,
        "retransmits": RETRANSMIT_MULT * math.ceil(math.log10(n + 1)),
        "urgent": {
            "hops_p50": pct(0.5),
            "hops_p99": pct(0.99),
            "all_nodes_s": round(max(r["all_s"] for r in runs), 3),
            "messages_per_write": round(statistics.mean(r["messages"] for r in runs), 1),
            "duplicates_per_node": round(statistics.mean(r["dups"] for r in runs), 2),
            "reached": round(min(r["reached"] for r in runs), 4),
        },
        "push_pull_interval_s": _push_pull_interval(n),
        "heal_converged_s": round(_heal(positions, rng), 2),
    }
