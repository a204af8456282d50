"""Property: any delivery order, loss or duplication, same final state, the one DESIGN.md says.

N nodes with real SQLite files write random INSERT/UPDATE/DELETE/MERGE versions of a few
items with skewed, stepping wall clocks. Messages (live pushes and pull batches) sit in a
network queue from which they are delivered in random order, dropped or duplicated; nodes
restart at random. Then the nodes pull from each other until a round changes nothing, and
every node must hold identical digests and, for each item, exactly the value the conflict
order dictates, computed here independently from the set of all versions ever written.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

from enginekit import BASE_NS, Node, Wall, pull
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsyncd.clock import ClockSkewError
from meshsyncd.store import Store
from protocol import Batch, Item, Op, Tier, pack_batch, unpack_batch

T = Tier.EPISODIC
IDS = [bytes([i]) * 16 for i in range(3)]
FIELDS = ["a", "b", "c"]
MS = 1_000_000

origins = st.lists(
    st.integers(min_value=1, max_value=(1 << 64) - 1), min_size=2, max_size=4, unique=True
)
json_values = st.one_of(st.integers(-5, 5), st.text("xyz", max_size=2), st.none(), st.booleans())


def expected_value(versions: list[Item]) -> bytes | None:
    """The conflict order of DESIGN.md, written out plainly (no store code involved)."""
    wholes = [v for v in versions if v.op != Op.MERGE]
    base = max(wholes, key=lambda v: v.key, default=None)
    fields: dict[str, tuple[tuple[int, int], Any]] = {}
    for m in (v for v in versions if v.op == Op.MERGE):
        if base is not None and m.key <= base.key:
            continue
        for name, val in json.loads(m.value()).items():
            if name not in fields or fields[name][0] < m.key:
                fields[name] = (m.key, val)
    live = base is not None and base.op != Op.DELETE
    if not fields:
        return base.value() if live and base is not None else None
    obj: dict[str, Any] = {}
    if live and base is not None:
        try:
            parsed = json.loads(base.value())
        except ValueError:
            parsed = None
        obj = parsed if isinstance(parsed, dict) else {}
    obj.update({name: val for name, (_key, val) in fields.items()})
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def deliver(node: Node, batch: Batch, to_seq: int | None) -> None:
    wire, _ = unpack_batch(pack_batch(batch))
    with contextlib.suppress(ClockSkewError):  # refused: as good as lost, pulled again later
        node.engine.apply_sync_batch(wire, to_seq=to_seq)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(origin_ids=origins, data=st.data())
def test_random_histories_converge_to_the_conflict_order(
    tmp_path: Path, origin_ids: list[int], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        nodes = [
            Node(Path(scratch) / f"{i}.db", origin, Wall(BASE_NS), fsync=False)
            for i, origin in enumerate(origin_ids)
        ]
        try:
            run_history(nodes, data)
        finally:
            for node in nodes:
                node.close()


def run_history(nodes: list[Node], data: st.DataObject) -> None:
    n = len(nodes)
    written: dict[bytes, list[Item]] = {iid: [] for iid in IDS}
    queue: list[tuple[int, Batch, int | None]] = []
    now = BASE_NS
    steps = data.draw(st.integers(5, 40), label="steps")
    for _ in range(steps):
        # Coarse ticks and shared clock readings make equal timestamps (origin tie-breaks)
        # common; skews of up to 400 ms between nodes and backward steps happen too.
        now += data.draw(st.sampled_from([0, 0, 1, 3, 20 * MS]), label="tick")
        for node in nodes:
            skew = data.draw(st.sampled_from([0, 0, 0, 1, -200 * MS, 200 * MS]), label="skew")
            node.wall.ns = now + skew
        action = data.draw(st.sampled_from(["write"] * 4 + ["pull", "deliver", "drop", "restart"]))
        if action == "write":
            k = data.draw(st.integers(0, n - 1), label="writer")
            iid = data.draw(st.sampled_from(IDS), label="item")
            op = data.draw(st.sampled_from([Op.INSERT, Op.UPDATE, Op.DELETE, Op.MERGE]))
            if op == Op.MERGE:
                obj = data.draw(st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1))
                payload = json.dumps(obj).encode()
            elif op == Op.DELETE:
                payload = b""
            else:
                obj = data.draw(st.dictionaries(st.sampled_from(FIELDS), json_values))
                raw = data.draw(st.booleans(), label="non-json")
                payload = b"raw bytes" if raw else json.dumps(obj).encode()
            item = nodes[k].engine.write(T, iid, op, payload)
            written[iid].append(item)
            push = Batch(batch_id=bytes(16), source=nodes[k].origin, tier=T, items=(item,))
            queue.extend((dst, push, None) for dst in range(n) if dst != k)
        elif action == "pull":
            dst, src = data.draw(st.permutations(range(n)), label="pair")[:2]
            after = nodes[dst].store.cursor(nodes[src].origin, T)
            size = data.draw(st.integers(1, 4), label="max_items")
            delta = nodes[src].engine.create_delta_batch(T, nodes[dst].origin, after, size)
            queue.append((dst, delta.batch, delta.to_seq))
        elif action in ("deliver", "drop") and queue:
            index = data.draw(st.integers(0, len(queue) - 1), label="message")
            dst, batch, to_seq = queue[index]
            if action == "deliver":
                deliver(nodes[dst], batch, to_seq)
                if not data.draw(st.booleans(), label="duplicate"):
                    queue.pop(index)
            else:
                queue.pop(index)
        elif action == "restart":
            nodes[data.draw(st.integers(0, n - 1), label="restarted")].restart()

    # Whatever is still in flight is lost. Clocks agree again; exchange until quiet.
    for node in nodes:
        node.wall.ns = now + 1_000 * MS
    for _round in range(2 * n + 2):
        before = [node.store.tier_seq(T) for node in nodes]
        for dst, src in itertools.permutations(nodes, 2):
            pull(dst, src, T, max_items=3)
        if [node.store.tier_seq(T) for node in nodes] == before:
            break
    else:
        raise AssertionError("the mesh never went quiet")

    digests = {node.engine.digest(T) for node in nodes}
    assert len(digests) == 1
    assert len({tuple(node.store.bucket_digests(T)) for node in nodes}) == 1
    for iid, versions in written.items():
        want = expected_value(versions)
        for node in nodes:
            got = node.engine.get(T, iid)
            assert (got.value if got is not None else None) == want, (iid.hex(), node.origin)


@st.composite
def version_sets(draw: st.DrawFn) -> list[Item]:
    """Versions of two items with keys from a tiny space, so ties on timestamp abound."""
    out: dict[tuple[bytes, tuple[int, int]], Item] = {}
    for _ in range(draw(st.integers(1, 14))):
        iid = draw(st.sampled_from(IDS[:2]))
        key = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, (1 << 63) + 1, (1 << 64) - 1])))
        op = draw(st.sampled_from([Op.INSERT, Op.UPDATE, Op.DELETE, Op.MERGE, Op.MERGE]))
        if op == Op.DELETE:
            payload = b""
        else:
            obj = draw(st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1))
            payload = json.dumps(obj).encode()
        item = Item(item_id=iid, timestamp_ns=key[0], origin=key[1], tier=T, op=op, payload=payload)
        out.setdefault((iid, key), item)  # one version per key: equal keys are duplicates
    return list(out.values())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(versions=version_sets(), data=st.data())
def test_any_order_and_duplication_of_versions_gives_one_state(
    tmp_path: Path, versions: list[Item], data: st.DataObject
) -> None:
    orders = [versions, *(data.draw(st.permutations(versions + versions[:3])) for _ in range(2))]
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        stores = [
            Store.open(Path(scratch) / f"{i}.db", replicated_synchronous="OFF") for i in range(3)
        ]
        try:
            for store, order in zip(stores, orders, strict=True):
                cut = data.draw(st.integers(0, len(order)), label="cut")
                store.apply(T, order[:cut])
                for item in order[cut:]:
                    store.apply(T, [item])
            assert len({store.digest(T) for store in stores}) == 1
            for iid in IDS[:2]:
                want = expected_value([v for v in versions if v.item_id == iid])
                for store in stores:
                    found = store.get_row(T, iid)
                    assert (found[1].value() if found else None) == want
                # The versions a row re-sends rebuild it exactly.
                found = stores[0].get_row(T, iid)
                if found is not None:
                    with Store.open(Path(scratch) / "copy.db") as copy:
                        copy.apply(T, found[1].versions(T))
                        assert copy.get_row(T, iid)[1].value() == found[1].value()  # type: ignore[index]
                    (Path(scratch) / "copy.db").unlink()
        finally:
            for store in stores:
                store.close()
