"""The resumable change feed across a daemon restart and client reconnects (issue 13).

A watcher that keeps the last cursor it saw and reconnects with it, while writes go on and
the node restarts (a new server over the same store file), sees every change exactly once:
its events' sequences are strictly increasing, they are exactly the sequences of the
rows changed after its starting cursor, and folding them gives the node's final state.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import trio
from controlkit import serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsyncd.client import Client, ClientError
from protocol import Tier

KEYS = ["k0", "k1", "k2", "k3"]
OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "merge"]), st.sampled_from(KEYS)),
    min_size=1,
    max_size=12,
)


def _write(path: Path, op: str, key: str, n: int) -> None:
    with Client(path) as c:
        if op == "put":
            c.put(f'{{"v": {n}}}', namespace="agents/x", key=key, tier="working")
        elif op == "merge":
            c.merge({"n": n}, namespace="agents/x", key=key, tier="working")
        else:
            with contextlib.suppress(ClientError):  # nothing live to delete: no change
                c.delete(namespace="agents/x", key=key, tier="working")


def _read(path: Path, since: str, until_seq: int, out: list[dict[str, Any]]) -> str:
    """Collect events after ``since`` up to ``until_seq``; return the last cursor."""
    cursor = since
    if until_seq <= int(since.split(":")[1]):
        return cursor
    with Client(path) as c:
        for event in c.watch("working", since=since, values=True, timeout=10):
            out.append(event)
            cursor = event["cursor"]
            if event["seq"] >= until_seq:
                return cursor
    return cursor


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(OPS, OPS, OPS, st.data())
def test_replay_and_live_equal_the_changes_across_restart_and_reconnect(
    tmp_path_factory: Any, before: list[Any], during: list[Any], after: list[Any], data: Any
) -> None:
    root = tmp_path_factory.mktemp("resume")
    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    async def phase(writes: list[Any], cursor: str, first: int) -> tuple[str, int]:
        async with serving(root) as (daemon, path, _server):
            store = daemon.engine.engine.store
            for n, (op, key) in enumerate(writes):
                await trio.to_thread.run_sync(_write, path, op, key, first + n)
                if data.draw(st.booleans(), label="reconnect here"):
                    top = store.tier_seq(Tier.WORKING)
                    cursor = await trio.to_thread.run_sync(_read, path, cursor, top, events)
            top = store.tier_seq(Tier.WORKING)
            cursor = await trio.to_thread.run_sync(_read, path, cursor, top, events)
            for seq, row in store.rows_since(Tier.WORKING, 0, 1000):
                state[row.name.key if row.name else row.item_id.hex()] = (seq, row.value())
            return cursor, first + len(writes)

    cursor, n = trio.run(phase, before, "working:0", 0)
    cursor, n = trio.run(phase, during, cursor, n)  # a restart: new server, same store
    trio.run(phase, after, cursor, n)

    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "a duplicate or out-of-order event"
    latest = {e["key"]: e for e in events}
    assert {k: (e["seq"], e.get("value", "").encode() or None) for k, e in latest.items()} == {
        k: (seq, value) for k, (seq, value) in state.items()
    }
