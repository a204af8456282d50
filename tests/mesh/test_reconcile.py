"""Range reconciliation (SPEC.md 4.2) between two real stores over in-memory sessions.

Why this shape: the differences are made in the store files directly and the cursors are set
as if both sides had pulled everything, so the pull sees nothing to do and only the repair
exchange can converge the stores. What crosses the wire is counted with the sessions' own
REPLICATE statistics: the exchange must fetch the differing ids and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import protocol as P
from meshsyncd.aengine import AsyncEngine
from meshsyncd.engine import Engine
from meshsyncd.mesh.reconcile import Reconciliation, Verdict, judge
from meshsyncd.mesh.repair import Repair
from meshsyncd.node.session import Session, SessionClosed
from meshsyncd.store import Store
from meshsyncd.store.ranges import ID_MAX, ID_MIN, read_range, set_cursor
from meshsyncd.store.rows import to_db
from protocol import Item, Op, Tier

TIER = Tier.EPISODIC
BASE_NS = 1_700_000_000_000_000_000
A_ID, B_ID = bytes([1]) * 32, bytes([2]) * 32


def _engine(path: Path, node_id: bytes) -> Engine:
    store = Store.open(path, tail_limit=2000, local_synchronous="OFF", replicated_synchronous="OFF")
    return Engine(store, node_id=node_id)


def _as_pulled(dst: Engine, src: Engine) -> None:
    """Set dst's cursors on src to src's sequences: the pull has nothing left to do."""
    conn = dst.store._conn
    conn.execute("INSERT OR REPLACE INTO peers VALUES (?, ?)", (to_db(src.origin), src.incarnation))
    for tier in Tier:
        conn.execute(
            "INSERT OR REPLACE INTO cursors (peer, tier, applied, acked) VALUES (?, ?, ?, ?)",
            (to_db(src.origin), int(tier), src.store.tier_seq(tier), dst.store.tier_seq(tier)),
        )


def _all_rows(engine: Engine) -> dict[bytes, int]:
    rows, after = {}, None
    while True:
        chunk, after = read_range(engine.store, TIER, ID_MIN, ID_MAX, after)
        rows.update(chunk)
        if after is None:
            return rows


async def _pair(
    a: Engine, b: Engine, body: Callable[[Session, Session, Repair, Repair], Awaitable[None]]
) -> None:
    left, right = trio.testing.memory_stream_pair()
    ra, rb = (Repair(verify_interval=3600, announce_every=3600) for _ in range(2))
    sa = Session(
        AsyncEngine(a),
        left,
        node_id=A_ID,
        peer_id=B_ID,
        pull_interval=3600,
        extensions=ra.handlers(),
        capabilities=P.Capability.REPAIR,
    )
    sb = Session(
        AsyncEngine(b),
        right,
        node_id=B_ID,
        peer_id=A_ID,
        pull_interval=3600,
        extensions=rb.handlers(),
        capabilities=P.Capability.REPAIR,
    )

    async def run(s: Session) -> None:
        with contextlib.suppress(SessionClosed):
            await s.run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, sa)
        nursery.start_soon(run, sb)
        await sa._hello_seen.wait()
        await sb._hello_seen.wait()
        await sa.wait_synced()
        await sb.wait_synced()
        await body(sa, sb, ra, rb)
        nursery.cancel_scope.cancel()


async def _settled(ra: Repair, rb: Repair, rounds: int = 1) -> None:
    """Wait until both ends have run ``rounds`` reconciliations and finished fetching."""
    with trio.fail_after(30):
        while True:
            done = ra.stats.reconciliations >= rounds and rb.stats.reconciliations >= rounds
            if done and not ra.status()["running"] and not rb.status()["running"]:
                return
            await trio.sleep(0.01)


def _common(rng: random.Random, n: int) -> list[Item]:
    """Items both stores got from a third node (origin 3)."""
    return [
        Item(
            item_id=rng.randbytes(16),
            timestamp_ns=BASE_NS + i,
            origin=3,
            tier=TIER,
            op=Op.INSERT,
            payload=json.dumps({"v": i}).encode(),
        )
        for i in range(n)
    ]


# 300 and 3000 rows: the opening's differing ranges are listed at once; 20,000: they hold
# more than 256 rows each, so they are refined into parts first.
@pytest.mark.parametrize(("seed", "size"), [(1, 300), (2, 3000), (3, 20_000)])
async def test_random_differences_converge_fetching_only_them(
    tmp_path: Path, seed: int, size: int
) -> None:
    rng = random.Random(seed)
    a, b = _engine(tmp_path / "a.db", A_ID), _engine(tmp_path / "b.db", B_ID)
    try:
        items = _common(rng, size)
        for start in range(0, size, 1000):
            a.store.apply(TIER, items[start : start + 1000])
            b.store.apply(TIER, items[start : start + 1000])
        common = [item.item_id for item in items]
        only_a = rng.sample(common, 5)
        edited = rng.sample([i for i in common if i not in only_a], 4)
        with b.store._conn:  # rows lost behind the daemon's back on b
            b.store._conn.executemany(
                "DELETE FROM items WHERE tier = ? AND item_id = ?", [(int(TIER), i) for i in only_a]
            )
        b.store.close()
        b = _engine(tmp_path / "b.db", B_ID)
        for iid in edited:  # newer versions on one side or the other
            (a if rng.random() < 0.5 else b).write(TIER, iid, Op.UPDATE, b'"newer"')
        only_b = [rng.randbytes(16) for _ in range(3)]
        for iid in only_b:
            b.write(TIER, iid, Op.INSERT, b'"b only"')
        _as_pulled(a, b)
        _as_pulled(b, a)
        # what the verifier does at start: b's digests must describe b's rows
        repair = Repair(verify_interval=3600, announce_every=3600)
        assert await repair.verify(AsyncEngine(b)) > 0
        assert a.digest(TIER) != b.digest(TIER)
        # an id both hold differently is fetched by both ends; the conflict order picks
        differing = len(only_a) + 2 * len(edited) + len(only_b)

        async def body(sa: Session, sb: Session, ra: Repair, rb: Repair) -> None:
            before = sa.stats.items_in + sb.stats.items_in
            await ra.link(sa).start(TIER)
            await _settled(ra, rb)
            fetched = sa.stats.items_in + sb.stats.items_in - before
            assert fetched == differing  # one version per differing id, nothing else
            assert ra.stats.repairs == 1 and rb.stats.repairs == 1

        await _pair(a, b, body)
        assert a.digest(TIER) == b.digest(TIER)
        assert _all_rows(a) == _all_rows(b)
        for iid in only_a:
            assert b.get(TIER, iid) is not None
        for iid in edited:
            got = a.get(TIER, iid), b.get(TIER, iid)
            assert got[0] is not None and got[1] is not None
            assert (
                (got[0].key, got[0].value) == (got[1].key, got[1].value) == (got[0].key, b'"newer"')
            )
    finally:
        a.store.close()
        b.store.close()


async def test_equal_stores_exchange_one_round_and_fetch_nothing(tmp_path: Path) -> None:
    a, b = _engine(tmp_path / "a.db", A_ID), _engine(tmp_path / "b.db", B_ID)
    try:
        for i in range(500):
            b.store.apply(TIER, [a.write(TIER, i.to_bytes(16, "big"), Op.INSERT, b"1")])

        async def body(sa: Session, sb: Session, ra: Repair, rb: Repair) -> None:
            await ra.link(sa).start(TIER)
            await _settled(ra, rb)
            assert ra.stats.repairs == rb.stats.repairs == 0
            assert ra.stats.items_fetched == rb.stats.items_fetched == 0

        await _pair(a, b, body)
    finally:
        a.store.close()
        b.store.close()


def test_turn_rules_refuse_ranges_nobody_asked_about() -> None:
    rec = Reconciliation(0, TIER, initiator=True)
    asked = (bytes(16), bytes([3]) + b"\xff" * 15)
    rec.ask([asked])
    rec.close_turn()
    inside = P.RangeDigest(bytes(16), bytes([1]) + bytes(15), 3, bytes(16))
    outside = P.RangeDigest(bytes([4]) + bytes(15), bytes([5]) + bytes(15), 3, bytes(16))
    with pytest.raises(P.SessionStateError):
        rec.receive_refinement([outside])
    rec.receive_refinement([inside])
    with pytest.raises(P.SessionStateError):  # the same range answered a second time
        rec.receive_refinement([inside])
    with pytest.raises(P.SessionStateError):  # a list for a range we never sent
        rec.receive_list([P.RangeList(inside.lo, inside.hi, ())])
    with pytest.raises(P.SessionStateError):  # a reply to a list we never sent
        rec.receive_list_reply([P.RangeList(*asked, ())])


async def _hostile(tmp_path: Path, frames: list[P.Frame]) -> list[P.Frame]:
    """A raw peer says HELLO with REPAIR, sends ``frames``; return what the node said back."""
    a = _engine(tmp_path / "a.db", A_ID)
    try:
        for i in range(50):
            a.write(TIER, i.to_bytes(16, "big"), Op.INSERT, b"x")
        before = (a.digest(TIER), a.store.tier_seq(TIER), a.store.cursor(2, TIER))
        left, right = trio.testing.memory_stream_pair()
        repair = Repair(verify_interval=3600, announce_every=3600)
        session = Session(
            AsyncEngine(a),
            left,
            node_id=A_ID,
            pull_interval=3600,
            extensions=repair.handlers(),
            capabilities=P.Capability.REPAIR,
        )
        peer = P.Connection()
        hello = P.Hello(
            version=P.PROTOCOL_VERSION,
            node_id=B_ID,
            incarnation=bytes(16),
            capabilities=P.Capability.REPAIR,
            timestamp_ns=1,
        )
        data = peer.send(hello) + b"".join(peer.send(f) for f in frames)
        seen: list[P.Frame] = []

        async def drain() -> None:
            while True:
                chunk = await right.receive_some(65536)
                if not chunk:
                    return
                peer.receive_data(chunk)
                while (event := peer.next_event()) is not P.NEED_DATA:
                    if isinstance(event, P.ConnectionClosed):
                        return
                    seen.append(event)
                    if isinstance(event, P.Pull):  # answer like an empty peer
                        empty = P.Batch(batch_id=bytes(16), source=2, tier=event.tier, items=())
                        reply = P.BatchFrame(
                            request_id=event.request_id,
                            from_seq=event.after_seq,
                            to_seq=event.after_seq,
                            more=False,
                            batch=P.pack_batch(empty),
                        )
                        await right.send_all(peer.send(reply))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await right.send_all(data)
            with pytest.raises(SessionClosed, match="protocol error"):
                with trio.fail_after(10):
                    await session.run()
            await left.aclose()  # the drain sees the end of the stream
        assert (a.digest(TIER), a.store.tier_seq(TIER), a.store.cursor(2, TIER)) == before
        return seen
    finally:
        a.store.close()


async def test_reply_for_a_reconciliation_nobody_started_closes_the_session(
    tmp_path: Path,
) -> None:
    stray = P.Ranges(request_id=6, tier=TIER, reply=True, ranges=())
    seen = await _hostile(tmp_path, [stray])
    assert isinstance(seen[-1], P.Error) and seen[-1].code == P.ErrorCode.PROTOCOL
    assert "not running" in seen[-1].text


async def test_range_outside_what_was_found_different_closes_the_session(
    tmp_path: Path,
) -> None:
    top = [
        P.RangeDigest(bytes([4 * i]) + bytes(15), bytes([4 * i + 3]) + b"\xff" * 15, 0, bytes(16))
        for i in range(64)
    ]
    # B (higher id) opens with an odd request id; every range differs from A's digests, so A
    # answers by listing or refining; B then lists a range A never sent.
    opening = P.Ranges(request_id=1, tier=TIER, reply=False, ranges=tuple(top))
    bogus = P.RangeIds(
        request_id=1,
        tier=TIER,
        reply=False,
        ranges=(P.RangeList(bytes([9]) + bytes(15), bytes([9]) + b"\x01" * 15, ()),),
    )
    seen = await _hostile(tmp_path, [opening, bogus])
    assert any(isinstance(f, P.RangeIds) and not f.reply for f in seen)  # A answered the opening
    assert isinstance(seen[-1], P.Error) and "not asked about" in seen[-1].text


async def test_restored_peer_rewinds_our_cursor(tmp_path: Path) -> None:
    a = _engine(tmp_path / "a.db", A_ID)
    try:
        a.store.apply(TIER, [], peer=7, to_seq=40)
        a.store.record_ack(7, Tier.WORKING, 12)
        assert set_cursor(a.store, 7, TIER, 25) == 40
        assert a.store.acked(7, Tier.WORKING) == 0  # what it acked, it may no longer hold
        assert a.store.cursor(7, TIER) == 25
        assert set_cursor(a.store, 7, TIER, 30) == 25  # never forwards
        assert a.store.cursor(7, TIER) == 25
    finally:
        a.store.close()


def test_judge_tells_a_restored_peer_a_divergence_and_data_in_flight_apart() -> None:
    same, other = bytes(32), b"\x01" * 32
    kw = {"ours": same, "our_seq": 9, "acked": 9}
    assert judge(announced=5, theirs=same, cursor=7, **kw) == Verdict.RESTORED
    assert judge(announced=7, theirs=other, cursor=7, **kw) == Verdict.DIVERGED
    assert judge(announced=7, theirs=same, cursor=7, **kw) == Verdict.FINE
    assert judge(announced=8, theirs=other, cursor=7, **kw) == Verdict.FINE  # still pulling
    kw["acked"] = 8  # the peer has not applied our last change yet
    assert judge(announced=7, theirs=other, cursor=7, **kw) == Verdict.FINE
