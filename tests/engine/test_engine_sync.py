"""Engine: delta batches, cursors, forwarding, incarnations, tombstones, replicate, skew."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from enginekit import Node, pull

import protocol as P
from meshsyncd.clock import ClockSkewError
from meshsyncd.engine import ALL_ITEMS, ItemNotFoundError
from protocol import Batch, Item, Op, Tier, pack_batch, unpack_batch

T = Tier.EPISODIC
MakeNode = Callable[..., Node]


def test_delta_batches_cover_sequence_ranges_on_row_boundaries(make_node: MakeNode) -> None:
    a = make_node(1)
    ids = [a.engine.add(T, b"v%d" % i).item_id for i in range(10)]
    a.engine.merge(T, ids[0], {"k": 1})  # row 0 moves to the end with two versions
    d1 = a.engine.create_delta_batch(T, 2, 0, max_items=4)
    assert (d1.from_seq, d1.to_seq, d1.more, len(d1.batch.items)) == (0, 5, True, 4)
    d2 = a.engine.create_delta_batch(T, 2, d1.to_seq, max_items=100)
    assert (d2.from_seq, d2.to_seq, d2.more) == (5, 11, False)
    assert [i.op for i in d2.batch.items][-2:] == [Op.INSERT, Op.MERGE]
    assert d2.batch.target == 2 and d2.batch.source == 1
    empty = a.engine.create_delta_batch(T, 2, 11)
    assert (empty.to_seq, empty.more, empty.batch.items) == (11, False, ())
    small = a.engine.create_delta_batch(T, 2, 0, max_bytes=1)
    assert len(small.batch.items) == 1 and small.more  # never an empty batch while rows remain
    assert unpack_batch(pack_batch(d2.batch))[0] == d2.batch


def test_cursor_moves_only_with_pulls(make_node: MakeNode) -> None:
    a, b = make_node(1), make_node(2)
    a.engine.add(T, b"x")
    delta = a.engine.create_delta_batch(T, 2, 0)
    b.engine.apply_sync_batch(delta.batch)  # a push
    assert b.store.cursor(1, T) == 0
    b.engine.apply_sync_batch(delta.batch, to_seq=delta.to_seq)
    assert b.store.cursor(1, T) == delta.to_seq
    b.engine.apply_sync_batch(delta.batch, to_seq=0)  # never backwards
    assert b.store.cursor(1, T) == delta.to_seq


def test_late_old_item_is_forwarded_along_a_chain(make_node: MakeNode) -> None:
    a, b, c = make_node(1), make_node(2), make_node(3)
    c.wall.ns -= 10**12  # c writes long before anything else happens...
    old = c.engine.add(T, b"old")
    c.wall.ns += 10**12
    for i in range(5):
        a.engine.add(T, b"a%d" % i)
    pull(b, a, T)
    pull(a, b, T)  # a's cursor on b is past every timestamp b has seen so far
    assert a.store.cursor(2, T) > 0
    pull(b, c, T)  # ...and its old item reaches b only now
    pull(a, b, T)  # b forwards it: cursors are on b's sequence, not on item timestamps
    found = a.engine.get(T, old.item_id)
    assert found is not None and found.value == b"old" and found.key == old.key
    assert old.timestamp_ns < min(
        i.timestamp_ns for i in a.engine.create_delta_batch(T, 9, 0).batch.items if i != old
    )
    for n in (a, b, c):
        for m in (a, b, c):
            if m is not n:
                pull(n, m, T)
    assert a.engine.digest(T) == b.engine.digest(T) == c.engine.digest(T)


def test_recreated_peer_store_gets_a_full_resync(make_node: MakeNode) -> None:
    a = make_node(1)
    b = make_node(2, name="b1")
    b.engine.observe_peer(1, a.engine.incarnation)
    assert not a.engine.observe_peer(2, b.engine.incarnation)  # first sight: no reset
    for i in range(30):
        a.engine.add(T, b"%d" % i)
    pull(b, a, T)
    a.engine.record_ack(2, T, a.store.tier_seq(T))
    assert b.store.cursor(1, T) == a.store.tier_seq(T)
    # b's disk is wiped: a new store, a new incarnation, an empty cursor table.
    b2 = make_node(2, name="b2")
    assert a.engine.observe_peer(2, b2.engine.incarnation) is True
    assert a.store.acked(2, T) == 0  # a will not purge tombstones b2 never saw
    assert b2.engine.observe_peer(1, a.engine.incarnation) is False
    pull(b2, a, T)
    assert b2.store.count(T) == 30 and b2.engine.digest(T) == a.engine.digest(T)
    # The old store of b sees a's incarnation change the other way round as well.
    a2 = make_node(1, name="a2")
    assert b.engine.observe_peer(1, a2.engine.incarnation) is True
    assert b.store.cursor(1, T) == 0


def test_deleted_item_never_returns_from_an_offline_node(make_node: MakeNode) -> None:
    a, b, c = make_node(1), make_node(2), make_node(3)
    item = a.engine.add(T, b"doomed")
    pull(b, a, T), pull(c, a, T)
    # c goes offline; meanwhile a deletes, b learns it, tombstones get old.
    c.store.close()
    a.engine.delete(T, item.item_id)
    pull(b, a, T)
    for n in (a, b):
        n.wall.ns += 8 * 86_400 * 10**9
    a.engine.record_ack(2, T, a.store.tier_seq(T))
    # c has not acknowledged: a keeps its tombstone even after the grace period.
    assert a.engine.purge([2, 3]) == 0
    c.restart()
    c.wall.ns = a.wall.ns
    pull(a, c, T), pull(b, c, T)  # c re-sends its stale live version
    for n in (a, b):
        got = n.engine.get(T, item.item_id)
        assert got is not None and got.deleted
    pull(c, a, T)
    got = c.engine.get(T, item.item_id)
    assert got is not None and got.deleted
    a.engine.record_ack(3, T, a.store.tier_seq(T))
    assert a.engine.purge([2, 3]) == 1
    assert a.engine.get(T, item.item_id) is None


def test_replicate_answers_one_item_or_the_whole_tier(make_node: MakeNode) -> None:
    a, b = make_node(1), make_node(2)
    ids = [a.engine.add(T, b"%d" % i).item_id for i in range(7)]
    a.engine.merge(T, ids[3], {"f": True})
    (one,) = a.engine.answer_replicate(T, ids[3], 2)
    assert (one.from_seq, one.to_seq) == (0, 0)
    assert [i.op for i in one.batch.items] == [Op.INSERT, Op.MERGE]
    whole = list(a.engine.answer_replicate(T, ALL_ITEMS, 2, max_items=3))
    assert len(whole) == 3 and not whole[-1].more
    for delta in whole:
        b.engine.apply_sync_batch(delta.batch, to_seq=delta.to_seq)
    assert b.engine.digest(T) == a.engine.digest(T)
    (none,) = a.engine.answer_replicate(T, b"\x01" * 16, 2)
    assert none.batch.items == ()
    # REPLICATE requests inside a batch are never stored.
    req = Item(item_id=ids[0], timestamp_ns=1, origin=2, tier=T, op=Op.REPLICATE)
    assert b.engine.apply_sync_batch(Batch(batch_id=bytes(16), source=2, tier=T, items=(req,))) == (
        0,
        0,
    )


def test_clock_skewed_batch_is_refused_whole(make_node: MakeNode) -> None:
    a, b = make_node(1), make_node(2)
    a.engine.add(T, b"fine")
    a.wall.ns += 2 * 10**9  # a's clock runs two seconds fast
    a.engine.add(T, b"from the future")
    delta = a.engine.create_delta_batch(T, 2, 0)
    with pytest.raises(ClockSkewError, match="0000000000000001"):
        b.engine.apply_sync_batch(delta.batch, to_seq=delta.to_seq)
    assert b.store.count(T) == 0 and b.store.cursor(1, T) == 0
    assert b.engine.clock.refused == 1


def test_tier_view_is_the_memshadow_interface(make_node: MakeNode) -> None:
    a = make_node(1)
    tier = a.engine.tier(Tier.SEMANTIC)
    item = tier.add(b'{"a":1}')
    iid = item.item_id
    tier.update(iid, b'{"a":2}')
    tier.merge(iid, {"b": [1, 2]})
    got = tier.get_by_id(iid)
    assert got is not None and json.loads(got.value or b"") == {"a": 2, "b": [1, 2]}
    assert [x.item_id for x in tier.get_modified_since(0)] == [iid]
    assert tier.get_modified_since(got.seq) == []
    assert len(tier.list(10)) == 1
    tier.delete(iid)
    assert tier.get_by_id(iid) is None
    assert tier.list(10) == [] and len(tier.list(10, include_deleted=True)) == 1
    with pytest.raises(ItemNotFoundError):
        tier.update(iid, b"x")
    with pytest.raises(ItemNotFoundError):
        tier.delete(b"\x09" * 16)
    big = tier.add(b"z" * 5000, compress=True)
    assert big.flags == P.PAYLOAD_ZSTD | P.BASED
    got = tier.get_by_id(big.item_id)
    assert got is not None and got.value == b"z" * 5000


async def test_async_engine_serialises_calls_off_the_trio_thread(make_node: MakeNode) -> None:
    import trio

    from meshsyncd.aengine import AsyncEngine

    a, b = make_node(1), make_node(2)
    aa, ab = AsyncEngine(a.engine), AsyncEngine(b.engine)
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(aa.write, T, bytes([i]) * 16, Op.INSERT, b"%d" % i)
    delta = await aa.create_delta_batch(T, 2, 0)
    assert len(delta.batch.items) == 10
    assert await ab.apply_sync_batch(delta.batch, to_seq=delta.to_seq) == (10, 0)
    assert await ab.digest(T) == await aa.digest(T)
    assert await ab.observe_peer(1, a.engine.incarnation) is False
    got = await ab.get(T, bytes([3]) * 16)
    assert got is not None and got.value == b"3"


async def test_an_urgent_push_goes_between_slices_of_a_pulled_batch(make_node: MakeNode) -> None:
    """The bulk batch commits its first slice alone, the push runs, then the rest and cursor."""
    import threading

    import trio
    import trio.testing

    from meshsyncd.aengine import AsyncEngine
    from meshsyncd.store.core import APPLY_SLICE
    from protocol import Batch, Item, Priority

    a, b = make_node(1), make_node(2)
    for i in range(3 * APPLY_SLICE):
        a.engine.add(T, b"%d" % i)
    delta = a.engine.create_delta_batch(T, 2, 0, max_items=4 * APPLY_SLICE)
    assert len(delta.batch.items) == 3 * APPLY_SLICE and not delta.more
    ab = AsyncEngine(b.engine)
    store = b.store
    started, go = threading.Event(), threading.Event()
    fold = store._apply_locked

    def first_slice_waits(*args: Any) -> Any:
        if not started.is_set():
            started.set()
            go.wait(5)
        return fold(*args)

    store._apply_locked = first_slice_waits  # type: ignore[method-assign]
    urgent = Item(
        item_id=b"u" * 16,
        timestamp_ns=a.wall.ns + 10**6,
        origin=1,
        tier=T,
        op=Op.INSERT,
        priority=Priority.URGENT,
        payload=b"now",
    )
    seen: dict[str, int] = {}

    async def push() -> None:
        await ab.apply_sync_batch(Batch(batch_id=Batch.new_id(), source=1, tier=T, items=(urgent,)))
        # Runs on the trio thread between the bulk's worker calls: the bulk is mid-way.
        seen["rows"], seen["cursor"] = store.count(T), store.cursor(1, T)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: ab.apply_sync_batch(delta.batch, to_seq=delta.to_seq, peer=1))
        await trio.to_thread.run_sync(started.wait, 5)
        nursery.start_soon(push)
        await trio.testing.wait_all_tasks_blocked()
        assert ab.worker.statistics().urgent_waiting == 1
        go.set()
    assert seen == {"rows": APPLY_SLICE + 1, "cursor": 0}
    assert store.count(T) == 3 * APPLY_SLICE + 1
    assert store.cursor(1, T) == delta.to_seq


def test_a_prefix_committed_without_its_cursor_is_pulled_again(make_node: MakeNode) -> None:
    """A restart after a preempted slice: the next pull resends the batch; nothing is lost."""
    from meshsyncd.store.core import APPLY_SLICE

    a, b = make_node(1), make_node(2)
    for i in range(2 * APPLY_SLICE + 7):
        a.engine.add(T, b"%d" % i)
    delta = a.engine.create_delta_batch(T, 2, 0, max_items=4 * APPLY_SLICE)
    result, done = b.engine.apply_sync_part(
        delta.batch, to_seq=delta.to_seq, peer=1, yield_to=lambda: True
    )
    assert (result.applied, done) == (APPLY_SLICE, APPLY_SLICE)
    b.restart()
    assert b.store.cursor(1, T) == 0 and b.store.count(T) == APPLY_SLICE
    pull(b, a, T)
    assert b.store.cursor(1, T) == delta.to_seq
    assert b.engine.digest(T) == a.engine.digest(T)


async def test_write_early_announces_before_the_commit_only_under_the_lease(
    make_node: MakeNode,
) -> None:
    from meshsyncd.aengine import AsyncEngine
    from protocol import Priority

    node = make_node(1)
    ae = AsyncEngine(node.engine)
    store = node.store
    events: list[tuple[str, bytes]] = []

    def fault(point: str) -> None:
        events.append(("commit", b""))

    def announce(item: Item) -> None:
        events.append(("announce", item.item_id))

    store.fault = fault
    urgent = Priority.URGENT
    one = await ae.write_early(T, b"1" * 16, Op.INSERT, b"1", priority=urgent, announce=announce)
    two = await ae.write_early(T, b"2" * 16, Op.INSERT, b"2", priority=urgent, announce=announce)
    low = await ae.write_early(
        T, b"3" * 16, Op.MERGE, b"{}", priority=Priority.LOW, announce=announce
    )
    assert events == [
        ("commit", b""),  # no lease yet: the first urgent write commits, then goes out
        ("announce", one.item_id),
        ("announce", two.item_id),  # under the lease the first one renewed: out first
        ("commit", b""),
        ("commit", b""),  # a LOW write is never early
        ("announce", low.item_id),
    ]

    def broken(point: str) -> None:
        raise OSError("disk gone")

    store.fault = broken
    events.clear()
    with pytest.raises(OSError):
        await ae.write_early(T, b"4" * 16, Op.INSERT, b"4", priority=urgent, announce=announce)
    assert events == [("announce", b"4" * 16)]  # sent early; the writer got the error
    store.fault = None
    assert node.engine.get(T, b"4" * 16) is None
    assert node.engine.get(T, two.item_id) is not None


def test_pull_answers_build_the_same_versions_as_the_rows_give(make_node: MakeNode) -> None:
    """The pull answer's fast path (trusted items for plain rows) equals Row.versions()."""
    from meshsyncd.store import Row
    from protocol import Priority

    a = make_node(1)
    e = a.engine
    plain = e.add(T, b'{"p":1}', priority=Priority.HIGH)
    packed = e.add(T, b"z" * 3000, compress=True)
    merged = e.add(T, b'{"a":1}')
    e.merge(T, merged.item_id, {"b": 2})
    gone = e.add(T, b"x")
    e.delete(T, gone.item_id)
    only_merge = e.merge(T, b"m" * 16, {"c": 3})
    fast = a.store.changes_since(T, 0, 100)
    slow = a.store.rows_since(T, 0, 100)
    assert [s for s, _ in fast] == [s for s, _ in slow]
    for (_, f), (_, row) in zip(fast, slow, strict=True):
        versions = row.versions(T)
        if isinstance(f, Row):
            assert f.versions(T) == versions and f.fields  # only rows with MERGE fields
        else:
            assert [f] == versions
            assert [type(x) for x in f] == [type(x) for x in versions[0]]  # enums, not ints
    kinds = {s: isinstance(f, Row) for s, f in fast}
    assert list(kinds.values()).count(True) == 2  # the merged row and the MERGE-only row
    assert (
        plain.flags == P.BASED
        and packed.flags == P.BASED | P.PAYLOAD_ZSTD
        and only_merge.op == Op.MERGE
    )


async def test_an_early_pushed_write_commits_even_if_its_caller_is_cancelled(
    make_node: MakeNode,
) -> None:
    import trio

    from meshsyncd.aengine import AsyncEngine
    from protocol import Priority

    node = make_node(1)
    ae = AsyncEngine(node.engine)
    urgent = Priority.URGENT
    await ae.write_early(T, b"1" * 16, Op.INSERT, b"1", priority=urgent, announce=lambda i: None)
    sent: list[Item] = []
    with trio.CancelScope() as scope:

        def announce(item: Item) -> None:
            sent.append(item)
            scope.cancel()  # e.g. the daemon stopping right after the push left

        await ae.write_early(T, b"2" * 16, Op.INSERT, b"2", priority=urgent, announce=announce)
    assert [i.item_id for i in sent] == [b"2" * 16]
    assert node.engine.get(T, b"2" * 16) is not None


def test_tally_in_slices_counts_rows_and_tombstones(make_node: MakeNode) -> None:
    node = make_node(1)
    e = node.engine
    ids = [e.add(T, b"%d" % i).item_id for i in range(25)]
    for iid in ids[:7]:
        e.delete(T, iid)
    e.merge(T, ids[0], {"back": True})  # a MERGE on a tombstone makes the item visible
    e.add(Tier.WORKING, b"other tier")
    rows = dead = after = 0
    while True:
        n, d, after = node.store.tally(T, after, 4)
        rows, dead = rows + n, dead + d
        if n < 4:
            break
    assert (rows, dead) == (node.store.count(T), 6)
    assert after == node.store.tier_seq(T)
