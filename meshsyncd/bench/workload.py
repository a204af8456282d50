"""The apply benchmark's workload: deterministic items and batches (``bench apply``).

Why its own module: the workload is the benchmark's contract (what a figure means), kept
apart from the timing machinery in ``apply.py`` so that changing one cannot silently change
the other; the same seed gives the same ids, names and payloads in every build compared.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from protocol import NAMED, Item, Op, Tier, name_block, name_id

__all__ = ["BATCH", "OTHER", "PEER", "TIER", "Workload", "batches"]

TIER = Tier.EPISODIC
PEER = 0xB0B0_0000_0000_0001
OTHER = 0xC0C0_0000_0000_0002
BATCH = 1000
_WORDS = (
    "agent observed user asked tool returned plan step memory context file error retry "
    "summary fact pattern result success failure latency token model prompt answer cache"
).split()
_KINDS = ("prefs", "episodes", "findings", "patterns")
_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


class Workload:
    """Deterministic item generator: ids from a seeded RNG, ~200-byte JSON payloads.

    ``named``: NAMED items (SPEC.md section 2.1) instead, in a namespace of three labels
    (``agents/agent-NN/<kind>``) with a random 16-character key, their ids derived from
    the names; ``blocks`` keeps the name block of the ids the scenario will touch again.
    """

    def __init__(self, seed: int, base_ns: int, named: bool = False) -> None:
        self.rnd = random.Random(seed)
        self.base_ns = base_ns
        self.counter = 0
        self.named = named
        self.blocks: dict[bytes, bytes] = {}

    def name(self) -> tuple[bytes, bytes]:
        """A new (item id, name block)."""
        rnd = self.rnd
        ns = ("agents", f"agent-{rnd.randrange(16):02d}", rnd.choice(_KINDS))
        key = "".join(rnd.choice(_KEY_CHARS) for _ in range(16))
        block = name_block(ns, key)
        return name_id(block), block

    def payload(self) -> bytes:
        rnd = self.rnd
        doc = {
            "agent": f"agent-{rnd.randrange(16):02d}",
            "kind": rnd.choice(("observation", "finding", "plan", "summary")),
            "step": self.counter,
            "score": round(rnd.random(), 4),
            "text": " ".join(rnd.choice(_WORDS) for _ in range(16)),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def item(self, item_id: bytes, ts: int, origin: int, block: bytes = b"") -> Item:
        self.counter += 1
        if self.named and not block:
            block = self.blocks[item_id]
        return Item(
            item_id=item_id,
            timestamp_ns=ts,
            origin=origin,
            tier=TIER,
            op=Op.UPDATE,
            flags=NAMED if block else 0,
            payload=block + self.payload(),
        )

    def fresh(self, n: int) -> list[Item]:
        out = []
        for _ in range(n):
            iid, block = self.name() if self.named else (self.rnd.randbytes(16), b"")
            out.append(self.item(iid, self.base_ns + self.counter, PEER, block))
        return out


def batches(
    work: Workload, total: int, existing: list[bytes], hit_every: int = 10
) -> Iterator[list[Item]]:
    """Batches of BATCH items; every ``hit_every``-th touches an existing id (if any)."""
    made = 0
    while made < total:
        items = work.fresh(BATCH)
        if existing:
            for k in range(0, BATCH, hit_every):
                iid = existing[work.rnd.randrange(len(existing))]
                newer = (made + k) % (2 * hit_every) == 0
                ts = work.base_ns + (10**12 if newer else -(10**12)) + made + k
                items[k] = work.item(iid, ts, OTHER)
        made += BATCH
        yield items
