"""Repair on one session: digests heard and told, suspicion, and the reconciliations.

Theory of operation (DESIGN.md "The mesh", Repair; SPEC.md 4 DIGEST and 4.2). A
:class:`RepairLink` belongs to one session. It has three jobs:

* DIGEST bookkeeping. It remembers the last DIGEST heard from the peer and the last one told
  to it, per tier; a DIGEST from the peer is answered with ours when ours changed since we
  last told it, so two nodes that talk learn each other's current digest and the exchange
  stops by itself. ``meshsyncd check`` reads what was heard.
* Detection (``reconcile.judge``, pure). A peer announcing a sequence *below* our cursor on it has
  lost data (a store restored from an old backup keeps its incarnation): our cursor goes
  back to its sequence, so what it writes next is pulled again. Equal sequences (our cursor
  at its announced sequence, its ack at ours) with different digests of a shared tier are a
  divergence; it is confirmed after a quiet period with no change on either side (data in
  flight must not trigger it), then a reconciliation starts, by the end with the lower node
  id first and by the other end only if none came.
* The exchange. Frames of reconciliations (``reconcile.py`` vets them and decides) are
  handled one at a time by the link's task, in arrival order, so every frame is judged
  against the state its predecessors left. Reading our rows goes through the store's worker
  in chunks (``store/ranges.py``); fetching what differs is REPLICATE per id, run beside
  the exchange with a bounded number in flight.

Request ids: the initiator's ``request_id`` is even when the initiator has the lower node id
and odd otherwise (SPEC.md 4.2), so a frame says whose reconciliation it belongs to.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

import protocol as P
from protocol import Tier

from ..aengine import AsyncEngine
from ..store.ranges import (
    bucket_ranges,
    digest16,
    hash8,
    read_range,
    set_cursor,
    split_range,
    summarize,
)
from .reconcile import (
    LIST_MAX,
    PARTS,
    Entries,
    Range,
    Reconciliation,
    Verdict,
    compare,
    diff_entries,
    judge,
    pack_lists,
    pack_ranges,
)
from .share import narrowed

__all__ = ["QUIET", "RepairLink", "RepairStats", "SessionLike"]

QUIET = 0.5  # seconds without change before a suspected divergence is acted on
MIN_GAP = 5.0  # seconds between two reconciliations of one tier with one peer
FETCH_WINDOW = 16  # REPLICATEs in flight per reconciliation
STALLED = 120.0  # seconds after which an unfinished reconciliation is given up
CONFIRM_TRIES = 20  # quiet periods to wait for the pulls to catch up before judging


class SessionLike(Protocol):
    """What repair needs from a session (``meshsyncd/node/session.py`` implements it)."""

    engine: AsyncEngine
    node_id: bytes
    peer_hello: P.Hello | None
    send_tiers: frozenset[Tier]
    accept_tiers: frozenset[Tier]
    cursors: dict[Tier, int]
    log: Any
    stats: Any

    @property
    def peer_short(self) -> int: ...

    def peer_speaks(self, capability: P.Capability) -> bool: ...

    def send_nowait(self, event: P.Frame) -> bool: ...

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None: ...

    def poke(self) -> None: ...

    async def replicate(self, tier: Tier, item_id: bytes) -> int: ...


@dataclass
class RepairStats:
    """Counters shown in ``status`` and the metrics (one set per daemon)."""

    reconciliations: int = 0  # exchanges run (either end started them)
    repairs: int = 0  # exchanges that changed something here
    items_fetched: int = 0  # REPLICATEs answered
    items_repaired: int = 0  # versions those changed here
    cursor_rewinds: int = 0  # peers found restored from an older copy
    digest_fixes: int = 0  # buckets whose stored digest did not match the rows
    verify_rounds: int = 0


@dataclass
class _Rec:
    """A reconciliation and what it fetched (for the log line at its end)."""

    state: Reconciliation
    started: float
    fetching: int = 0
    fetched: int = 0
    repaired: int = 0
    logged: bool = False


class RepairLink:
    """Repair's state and task for one session (module docstring)."""

    def __init__(self, session: SessionLike, stats: RepairStats) -> None:
        self.session = session
        self.stats = stats
        peer = session.peer_hello.node_id if session.peer_hello else b""
        self.lower = session.node_id < peer
        self._rids = itertools.count()
        self.recs: dict[int, _Rec] = {}
        self.heard: dict[Tier, tuple[int, bytes, float]] = {}
        self.told: dict[Tier, tuple[int, bytes]] = {}
        self.last_run: dict[Tier, float] = {}
        self._confirming: set[Tier] = set()
        self.fetching = 0  # fetch jobs running (a finished exchange may still be fetching)
        self._inbox_send, self._inbox = trio.open_memory_channel[P.Frame](64)
        self._running = False

    @property
    def engine(self) -> AsyncEngine:
        return self.session.engine

    def shared(self, tier: Tier) -> bool:
        """Both ways, whole: a tier narrowed to namespaces (``share.py``) never agrees."""
        s = self.session
        return tier in s.send_tiers and tier in s.accept_tiers and not narrowed(s, tier)

    def _ensure_task(self) -> None:
        if not self._running:
            self._running = True
            self.session.spawn(self._run)

    # -- digests ------------------------------------------------------------------------

    async def announce(self, *, force: bool = False) -> None:
        """Tell the peer our digest of each tier it receives, if it changed (or ``force``)."""
        store = self.engine.engine.store
        for tier in sorted(self.session.send_tiers):
            now = await self.engine.run(lambda t=tier: (store.tier_seq(t), store.digest(t)))
            if force or self.told.get(tier) != now:
                self.told[tier] = now
                self.session.send_nowait(P.Digest(tier=tier, seq=now[0], digest=now[1]))

    async def _local(self, tier: Tier) -> tuple[int, int, bytes, int]:
        """Our cursor on the peer, our sequence and digest, and the peer's ack of ours."""
        store, peer = self.engine.engine.store, self.session.peer_short
        found: tuple[int, int, bytes, int] = await self.engine.run(
            lambda: (
                store.cursor(peer, tier),
                store.tier_seq(tier),
                store.digest(tier),
                store.acked(peer, tier),
            )
        )
        return found

    async def on_digest(self, digest: P.Digest) -> None:
        """A DIGEST from the peer: remember it, answer it, and judge it (module docstring)."""
        s, tier = self.session, digest.tier
        self.heard[tier] = (digest.seq, digest.digest, time.monotonic())
        if tier not in s.accept_tiers:
            return
        cursor, our_seq, ours, acked = await self._local(tier)
        store, peer = self.engine.engine.store, s.peer_short
        if (
            tier in s.send_tiers
            and s.peer_speaks(P.Capability.REPAIR)
            and self.told.get(tier) != (our_seq, ours)
        ):
            self.told[tier] = (our_seq, ours)
            s.send_nowait(P.Digest(tier=tier, seq=our_seq, digest=ours))
        verdict = judge(
            announced=digest.seq,
            theirs=digest.digest,
            cursor=cursor,
            ours=ours,
            our_seq=our_seq,
            acked=acked,
        )
        if verdict == Verdict.RESTORED:
            await self.engine.run(set_cursor, store, peer, tier, digest.seq)
            s.cursors[tier] = digest.seq
            self.stats.cursor_rewinds += 1
            s.log.warning(
                "repair: peer's sequence went back (restored from an older copy?); our cursor"
                " on it goes back too",
                tier=tier.name,
                announced=digest.seq,
                cursor=cursor,
            )
            s.poke()
        if (
            verdict != Verdict.FINE
            and self.shared(tier)
            and s.peer_speaks(P.Capability.REPAIR)
            and tier not in self._confirming
        ):
            # A restored peer may have written before it told us its sequence: what it
            # wrote below it is found by the digests once the pull has caught up.
            self._confirming.add(tier)
            s.spawn(lambda: self._confirm(tier))

    async def _confirm(self, tier: Tier) -> None:
        """Judge again after a quiet period; start a reconciliation if it still diverges.

        Waits while our pull (or the peer's) is still catching up, for a bounded number of
        quiet periods; a divergence that is only data in flight goes away by itself.
        """
        try:
            for _ in range(CONFIRM_TRIES):
                asked = time.monotonic()
                await trio.sleep(QUIET if self.lower else 3 * QUIET)
                cursor, our_seq, ours, acked = await self._local(tier)
                heard = self.heard.get(tier)
                if heard is None:
                    return
                verdict = judge(
                    announced=heard[0],
                    theirs=heard[1],
                    cursor=cursor,
                    ours=ours,
                    our_seq=our_seq,
                    acked=acked,
                )
                if verdict == Verdict.DIVERGED:
                    if self.last_run.get(tier, -MIN_GAP) > asked - MIN_GAP or self._active(tier):
                        return
                    self.session.log.info(
                        "repair: digests differ at equal sequences", tier=tier.name
                    )
                    await self.start(tier)
                    return
                if heard[0] == cursor and acked >= our_seq:
                    return  # caught up both ways, and the digests agree
        finally:
            self._confirming.discard(tier)

    def _active(self, tier: Tier) -> bool:
        """Is a reconciliation of ``tier`` running? One stalled past the limit is dropped
        (a peer that stopped answering must not block repair of the tier for ever)."""
        stale = time.monotonic() - STALLED
        for rid, r in list(self.recs.items()):
            if r.started < stale:
                del self.recs[rid]
                self.session.log.warning("repair: reconciliation stalled, dropped", rid=rid)
        return any(r.state.tier == tier for r in self.recs.values())

    # -- the exchange -------------------------------------------------------------------

    async def start(self, tier: Tier) -> int:
        """Open a reconciliation of ``tier`` with the peer; return its request id."""
        self._ensure_task()
        rid = 2 * next(self._rids) + (0 if self.lower else 1)
        rec = Reconciliation(rid, tier, initiator=True)
        self._add(rec)
        store = self.engine.engine.store
        top = await self.engine.run(bucket_ranges, store, tier)
        rec.ask((lo, hi) for lo, hi, _ in top)
        rec.close_turn()
        ranges = tuple(P.RangeDigest(lo, hi, 0, d) for lo, hi, d in top)
        self.session.send_nowait(P.Ranges(request_id=rid, tier=tier, reply=False, ranges=ranges))
        return rid

    def _add(self, rec: Reconciliation) -> None:
        self.recs[rec.request_id] = _Rec(rec, time.monotonic())
        self.last_run[rec.tier] = time.monotonic()
        self.stats.reconciliations += 1

    async def receive(self, frame: P.Frame) -> None:
        """Queue a RANGES or RANGE_IDS frame for the link's task (the session's handler)."""
        self._ensure_task()
        await self._inbox_send.send(frame)

    async def _run(self) -> None:
        async for frame in self._inbox:
            await self.handle(frame)

    async def handle(self, frame: P.Frame) -> None:
        """Act on one frame of a reconciliation.

        Raises:
            SessionStateError: the frame breaks a rule of SPEC.md 4.2 (``reconcile.py``).
        """
        if isinstance(frame, P.Ranges) and not frame.reply:
            await self._opening(frame)
            return
        assert isinstance(frame, P.Ranges | P.RangeIds)
        entry = self.recs.get(frame.request_id)
        if entry is None or entry.state.tier != frame.tier:
            raise P.SessionStateError(
                f"{frame.NAME} for reconciliation {frame.request_id}, which is not running",
                field=f"{frame.NAME.lower()}.request_id",
            )
        rec = entry.state
        if isinstance(frame, P.Ranges):
            if frame.ranges:
                rec.receive_refinement(frame.ranges)
                await self._answer_parts(rec, frame.ranges)
            elif rec.receive_close():
                self._close(rec)
        elif not frame.reply:
            rec.receive_list(frame.ranges)
            await self._answer_lists(rec, frame.ranges)
        else:
            mine = rec.receive_list_reply(frame.ranges)
            want = {
                iid
                for r in frame.ranges
                for iid, h in r.entries
                if mine[(r.lo, r.hi)].get(iid) != h
            }
            self._fetch(entry, want)
        self._maybe_done(entry)

    async def _opening(self, frame: P.Ranges) -> None:
        rid, tier = frame.request_id, frame.tier
        if rid % 2 != (1 if self.lower else 0) or rid in self.recs:
            raise P.SessionStateError(
                f"RANGES opening with request id {rid}", field="ranges.request_id"
            )
        if self._theirs(tier):
            raise P.SessionStateError("a second reconciliation of one tier", field="ranges.tier")
        rec = Reconciliation(rid, tier, initiator=False)
        store = self.engine.engine.store
        top = await self.engine.run(bucket_ranges, store, tier)
        if [(r.lo, r.hi) for r in frame.ranges] != [(lo, hi) for lo, hi, _ in top]:
            raise P.SessionStateError("RANGES opening not cut as SPEC.md 4.2 says", field="ranges")
        self._add(rec)
        entry = self.recs[rid]
        if self.shared(tier):
            differ = compare(frame.ranges, [(0, d) for _, _, d in top])
            await self._answer(rec, [(r.lo, r.hi) for r in differ])
        self._close(rec)
        self._maybe_done(entry)

    def _theirs(self, tier: Tier) -> bool:
        mine = 0 if self.lower else 1
        return any(r.state.tier == tier and rid % 2 != mine for rid, r in self.recs.items())

    def _close(self, rec: Reconciliation) -> None:
        """Send the empty RANGES(reply 1) that ends our turn."""
        rec.close_turn()
        self.session.send_nowait(
            P.Ranges(request_id=rec.request_id, tier=rec.tier, reply=True, ranges=())
        )

    async def _answer_parts(self, rec: Reconciliation, parts: tuple[P.RangeDigest, ...]) -> None:
        """Compare the peer's parts with ours; list or refine those that differ.

        One part's rows are read once and serve both the comparison and the answer.
        """
        lists: list[tuple[Range, Entries]] = []
        refined: list[P.RangeDigest] = []
        for p in parts:
            r = (p.lo, p.hi)
            rows = await self._rows(rec.tier, r)
            if digest16(sum(h for _, h in rows)) == p.digest:
                continue
            rec.differing += 1
            if len(rows) <= LIST_MAX:
                lists.append((r, {iid: hash8(h) for iid, h in rows}))
            else:
                subs = split_range(p.lo, p.hi, PARTS)
                refined.extend(
                    P.RangeDigest(lo, hi, n, d)
                    for (lo, hi), (n, d) in zip(subs, summarize(rows, subs), strict=True)
                )
        self._send_turn(rec, lists, refined)

    async def _answer(self, rec: Reconciliation, ranges: list[Range]) -> None:
        """List or refine each differing range of the opening, reading it part by part."""
        lists: list[tuple[Range, Entries]] = []
        refined: list[P.RangeDigest] = []
        for r in ranges:
            rec.differing += 1
            parts = split_range(r[0], r[1], PARTS)
            sums, rows = await self._survey(rec.tier, parts)
            if rows is not None:
                lists.append((r, {iid: hash8(h) for iid, h in rows}))
            else:
                refined.extend(
                    P.RangeDigest(lo, hi, n, d)
                    for (lo, hi), (n, d) in zip(parts, sums, strict=True)
                )
        self._send_turn(rec, lists, refined)

    def _send_turn(
        self, rec: Reconciliation, lists: list[tuple[Range, Entries]], refined: list[P.RangeDigest]
    ) -> None:
        for r, entries in lists:
            rec.add_list(r, entries)
        rec.ask((d.lo, d.hi) for d in refined)
        for frame in pack_lists(rec.request_id, rec.tier, lists, reply=False):
            self.session.send_nowait(frame)
        for ranges_frame in pack_ranges(rec.request_id, rec.tier, refined):
            self.session.send_nowait(ranges_frame)

    async def _answer_lists(self, rec: Reconciliation, lists: tuple[P.RangeList, ...]) -> None:
        """Reply to the peer's lists with our differing entries; fetch what it has."""
        entry = self.recs[rec.request_id]
        back: list[tuple[Range, Entries]] = []
        want: set[bytes] = set()
        for r in lists:
            ours = {iid: hash8(h) for iid, h in await self._rows(rec.tier, (r.lo, r.hi))}
            send, fetch = diff_entries(r.entries, ours)
            back.append(((r.lo, r.hi), send))
            want |= fetch
        for frame in pack_lists(rec.request_id, rec.tier, back, reply=True):
            self.session.send_nowait(frame)
        self._fetch(entry, want)

    async def _rows(self, tier: Tier, r: Range) -> list[tuple[bytes, int]]:
        store, rows = self.engine.engine.store, []
        after: bytes | None = None
        while True:
            chunk, after = await self.engine.run(read_range, store, tier, r[0], r[1], after)
            rows.extend(chunk)
            if after is None:
                return rows

    async def _survey(
        self, tier: Tier, parts: list[Range]
    ) -> tuple[list[tuple[int, bytes]], list[tuple[bytes, int]] | None]:
        """Our ``(count, digest16)`` of each part, and our rows if all hold <= LIST_MAX."""
        sums: list[tuple[int, bytes]] = []
        kept: list[tuple[bytes, int]] | None = []
        for part in parts:
            rows = await self._rows(tier, part)
            sums.append((len(rows), digest16(sum(h for _, h in rows))))
            if kept is not None:
                kept.extend(rows)
                if len(kept) > LIST_MAX:
                    kept = None
        return sums, kept

    def _fetch(self, entry: _Rec, ids: set[bytes]) -> None:
        if not ids:
            return
        entry.fetching += 1
        self.fetching += 1
        self.session.spawn(lambda: self._fetch_all(entry, sorted(ids)))

    async def _fetch_all(self, entry: _Rec, ids: list[bytes]) -> None:
        tier, limit = entry.state.tier, trio.CapacityLimiter(FETCH_WINDOW)

        async def one(iid: bytes) -> None:
            async with limit:
                changed = await self.session.replicate(tier, iid)
                entry.repaired += changed  # after the await: concurrent siblings add too
                entry.fetched += 1

        async with trio.open_nursery() as nursery:
            for iid in ids:
                nursery.start_soon(one, iid)
        self.stats.items_fetched += len(ids)
        entry.fetching -= 1
        self.fetching -= 1
        self._maybe_done(entry)

    def _maybe_done(self, entry: _Rec) -> None:
        rec = entry.state
        if not rec.finished:
            return
        self.recs.pop(rec.request_id, None)
        if entry.fetching or entry.logged:
            return
        entry.logged = True
        self.stats.items_repaired += entry.repaired
        if entry.repaired:  # a difference that changed nothing here (expired) is no repair
            self.stats.repairs += 1
        self.session.log.info(
            "repair: reconciliation done",
            tier=rec.tier.name,
            started_here=rec.initiator,
            ranges_differing=rec.differing,
            items_fetched=entry.fetched,
            items_repaired=entry.repaired,
            seconds=round(time.monotonic() - entry.started, 3),
        )
