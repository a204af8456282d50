"""Soak: five nodes, mixed writes on all of them, periodic restarts; converged, nothing lost.

Not run by default (``slow``). ``MESHSYNCD_SOAK_MINUTES`` (default 10) sets the length and
``MESHSYNCD_SOAK_SEED`` the random seed. One thread drives everything, so a node is never
stopped while a write to it is in flight: every write the ledger holds was acknowledged, and
every acknowledged write must survive into the final converged state (as the winner of its
key, or beaten by a greater-keyed acknowledged write).

Run: ``MESHSYNCD_SOAK_MINUTES=2 .venv/bin/pytest -m slow -s tests/faults/test_soak.py``
"""

from __future__ import annotations

import os
import random
import time

import pytest
from faultnodes import TIERS, FaultNode, Fleet, converged, wait_for
from ledger import Expect

from meshsyncd.client import ClientError

PRIORITIES = ("urgent", "high", "normal", "low", "background")


@pytest.mark.slow
def test_soak_five_nodes_mixed_writes_and_restarts(fleet: Fleet) -> None:
    minutes = float(os.environ.get("MESHSYNCD_SOAK_MINUTES", "10"))
    seed = int(os.environ.get("MESHSYNCD_SOAK_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    print(f"\nsoak: {minutes} min, seed {seed}")
    nodes = fleet.mesh(["a", "b", "c", "d", "e"], sync_interval="2s")
    for n in nodes:
        n.start()
    expect = Expect()
    counts = dict.fromkeys(("put", "delete", "merge", "refused", "restart"), 0)
    down: dict[str, float] = {}
    by_name = {n.name: n for n in nodes}
    end = time.monotonic() + minutes * 60
    next_stop = time.monotonic() + rng.uniform(5, 15)

    while time.monotonic() < end:
        now = time.monotonic()
        for name, back_at in list(down.items()):
            if now >= back_at:
                by_name[name].start()
                del down[name]
        up = [n for n in nodes if n.name not in down]
        if now >= next_stop and len(up) > 3:
            victim = rng.choice(up)
            assert victim.stop() == 0, f"{victim.name} did not exit cleanly: {victim.tail()}"
            counts["restart"] += 1
            down[victim.name] = now + rng.uniform(1, 6)
            next_stop = now + rng.uniform(8, 20)
            continue
        _one_write(rng, rng.choice(up), expect, counts)
        time.sleep(rng.uniform(0, 0.03))

    for name in list(down):
        by_name[name].start()
    print(f"soak: writing done, {counts}; waiting for convergence")
    started = time.monotonic()
    wait_for(lambda: converged(nodes), 300, "the five nodes to converge", every=1.0)
    took = time.monotonic() - started
    lost = [bad for n in nodes for bad in expect.mismatches(n)]
    items = {n.name: sum(n.items(t) for t in TIERS) for n in nodes}
    acked = counts["put"] + counts["delete"] + counts["merge"]
    print(
        f"soak: {acked} acknowledged writes ({counts['put']} put, {counts['delete']} delete, "
        f"{counts['merge']} merge), {counts['refused']} refused (not found), "
        f"{counts['restart']} restarts, {len(expect.writes)} keys + {len(expect.merges)} merged "
        f"keys, converged {took:.1f} s after the last write, live items per node {items}, "
        f"lost acknowledged writes: {len(lost)}"
    )
    assert not lost, lost[:10]
    assert len(set(items.values())) == 1, items


def _one_write(rng: random.Random, node: FaultNode, expect: Expect, counts: dict[str, int]) -> None:
    prio = rng.choice(PRIORITIES)
    roll = rng.random()
    try:
        if roll < 0.15:
            expect.merge(
                node, "semantic", f"m{rng.randrange(40)}", {f"f{rng.randrange(6)}": rng.random()}
            )
            counts["merge"] += 1
        elif roll < 0.27:
            expect.delete(node, rng.choice(TIERS), f"k{rng.randrange(300)}", prio)
            counts["delete"] += 1
        else:
            key = f"k{rng.randrange(300)}"
            expect.put(node, rng.choice(TIERS), key, f"{node.name}:{rng.random()}", prio)
            counts["put"] += 1
    except ClientError as exc:
        if exc.code != "not_found":  # deleting what is not there is refused, not lost
            raise
        counts["refused"] += 1
