"""A session's lanes: keepalive, the pullers, and the answers to the peer's pulls.

Theory of operation (DESIGN.md "Delta sync", SPEC.md sections 4 and 5). These are the
session's long-running tasks, apart from the reader and writer that move frames
(``session.py``). One puller per tier the peer may write to us sends PULL after our cursor,
applies each BATCH with its cursor in one transaction and ACKs the last one, then waits for
the interval or a poke; the next PULL leaves before a chunk is applied, so at most two chunks
are in flight. The responder answers PULL and REPLICATE one chunk at a time into the bulk
lane (a queue of one), so an urgent PUSH waits behind at most one chunk. The pinger measures
RTT and ends a session whose peer went silent. Batch bodies are decoded off the trio thread
when they are large.

``SessionLanes`` is a mixin of :class:`~meshsyncd.node.session.Session`: the attributes it
declares are the session's, set in ``Session.__init__``.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import trio

import protocol as P
from protocol import Tier

from ..aengine import AsyncEngine
from ..mesh.share import ShareRule, namespace_of
from .endings import SessionClosed

__all__ = ["DEAD_AFTER_PINGS", "SessionLanes"]

DEAD_AFTER_PINGS = 3

INLINE_DECODE_BYTES = 16 * 1024


async def _decode(frame: P.BatchFrame | P.Push | P.HopPush) -> P.Batch:
    """Parse a batch: small ones (a live push) inline, large ones on a worker thread.

    A thread hop costs more than decoding a few dozen items; a 1000-item chunk would hold
    the event loop for a millisecond or more, so it goes to a thread.
    """
    if len(frame.batch) <= INLINE_DECODE_BYTES:
        await trio.lowlevel.checkpoint()
        return frame.decode()
    return await trio.to_thread.run_sync(frame.decode)


class SessionLanes:
    """The pull, answer and keepalive tasks of a session (mixed into ``Session``)."""

    engine: AsyncEngine
    stats: Any
    log: Any
    ping_interval: float
    pull_interval: float
    chunk_items: int
    chunk_bytes: int
    send_tiers: frozenset[Tier]
    accept_tiers: frozenset[Tier]
    send_share: ShareRule | None
    accept_share: ShareRule | None
    cursors: dict[Tier, int]
    remote_seq: dict[Tier, int]
    on_change: Any
    on_applied: Any
    on_received: Any
    _last_rx: float
    _rounds: dict[Tier, int]
    _round_done: trio.Event
    _poke: dict[Tier, trio.Event]
    _request_ids: itertools.count[int]
    _waiting: dict[int, trio.MemorySendChannel[P.BatchFrame]]
    _requests_recv: trio.MemoryReceiveChannel[P.Frame]
    _ack_event: trio.Event
    _hello_seen: trio.Event
    _running: bool
    acked: dict[Tier, int]
    conn: P.Connection

    @property
    def peer_short(self) -> int:
        raise NotImplementedError

    def _frame(self, event: P.Frame) -> bytes:
        raise NotImplementedError

    def _queue_urgent(self, data: bytes) -> None:
        raise NotImplementedError

    async def _send_bulk(self, frame: P.Frame) -> None:
        raise NotImplementedError

    # -- sync points (sync --now, the barrier, the relay's announcements) ------------------

    def poke(self) -> None:
        """Start a pull round on every tier now (``sync --now``)."""
        for event in self._poke.values():
            event.set()

    async def wait_synced(self) -> None:
        """Wait until every pulled tier has completed a round that started after this call."""
        start = dict(self._rounds)
        self.poke()
        while any(self._rounds[t] <= start[t] for t in self.accept_tiers):
            done = self._round_done
            await done.wait()

    async def announce(self) -> dict[Tier, int]:
        """Send a DIGEST per tier the peer receives, so it pulls now; return our sequences.

        A peer whose cursor is behind the announced sequence starts a pull round at once
        (see ``_on_digest``): the "their direction" half of ``sync --now``.
        """
        store = self.engine.engine.store
        seqs: dict[Tier, int] = {}
        for tier in sorted(self.send_tiers):
            seq, digest = await self.engine.run(lambda t=tier: (store.tier_seq(t), store.digest(t)))
            seqs[tier] = seq
            self._queue_urgent(self._frame(P.Digest(tier=tier, seq=seq, digest=digest)))
        return seqs

    async def announce_tier(self, tier: Tier) -> bool:
        """Send one DIGEST of ``tier`` (the relay's "pull now"); False if not for this peer."""
        if tier not in self.send_tiers or not self._running:
            return False
        with trio.move_on_after(5):
            await self._hello_seen.wait()
        if not self._hello_seen.is_set() or self.conn.our_state is not P.State.OPEN:
            return False
        store = self.engine.engine.store
        seq, digest = await self.engine.run(lambda: (store.tier_seq(tier), store.digest(tier)))
        if self.conn.our_state is not P.State.OPEN:
            return False
        self._queue_urgent(self._frame(P.Digest(tier=tier, seq=seq, digest=digest)))
        return True

    async def wait_acked(self, targets: dict[Tier, int]) -> None:
        """Wait until the peer has acknowledged applying each tier through its target."""
        while any(self.acked.get(t, 0) < seq for t, seq in targets.items() if seq > 0):
            event = self._ack_event
            await event.wait()

    async def _pinger(self) -> None:
        """Keepalive: measure RTT, and end a session whose peer has gone silent.

        A peer answers every PING, so ``DEAD_AFTER_PINGS`` intervals without a single byte
        from it means the link is dead (a half-open TCP connection never says so itself).
        """
        nonce = itertools.count(1)
        dead_after = max(DEAD_AFTER_PINGS * self.ping_interval, 2.0)
        while True:  # the first ping goes at once, so the peers table has an RTT early
            silent = trio.current_time() - self._last_rx
            if silent > dead_after:
                raise SessionClosed(f"peer silent for {silent:.1f} s: link presumed dead")
            ping = P.Ping(nonce=next(nonce), timestamp_ns=time.time_ns())
            self._queue_urgent(self._frame(ping))
            await trio.sleep(self.ping_interval)

    async def _puller(self, tier: Tier) -> None:
        while True:
            await self._pull_round(tier)
            self._rounds[tier] += 1
            done, self._round_done = self._round_done, trio.Event()
            done.set()
            self._poke[tier] = trio.Event()
            with trio.move_on_after(
                self.pull_interval if math.isfinite(self.pull_interval) else 1e9
            ):
                await self._poke[tier].wait()

    def _request_pull(
        self, tier: Tier, after: int
    ) -> tuple[int, trio.MemoryReceiveChannel[P.BatchFrame]]:
        """Send one PULL; the answer is exactly one BATCH (SPEC.md section 4)."""
        request_id = next(self._request_ids)
        send, recv = trio.open_memory_channel[P.BatchFrame](1)
        self._waiting[request_id] = send
        pull = P.Pull(
            request_id=request_id,
            tier=tier,
            after_seq=after,
            max_items=self.chunk_items,
            max_bytes=self.chunk_bytes,
        )
        self._queue_urgent(self._frame(pull))
        return request_id, recv

    async def _pull_round(self, tier: Tier) -> None:
        """Pull a tier up to the peer's current sequence, one chunk per request.

        Flow control: the next PULL goes out as soon as a BATCH arrives and before it is
        applied, so the peer prepares chunk k+1 while we apply chunk k, yet never more
        than two chunks are in flight. An urgent PUSH therefore queues behind at most that
        much bulk, in socket buffers included, instead of behind a whole transfer.
        """
        engine = self.engine.engine
        peer = self.peer_short
        cursor = await self.engine.run(engine.store.cursor, peer, tier)
        last = cursor
        request_id, recv = self._request_pull(tier, cursor)
        pending = [request_id]
        try:
            while True:
                frame = await recv.receive()
                if frame.tier != tier or frame.from_seq != last or frame.request_id != request_id:
                    raise P.BadFieldError(
                        f"BATCH for tier {frame.tier} from {frame.from_seq}, expected tier "
                        f"{tier} from {last}",
                        field="batch_frame",
                    )
                if frame.more:  # ask for the next chunk before applying this one
                    request_id, recv = self._request_pull(tier, frame.to_seq)
                    pending.append(request_id)
                batch = self._screen(await _decode(frame))
                if frame.to_seq > last or batch.items:
                    result = await self.engine.apply_sync_batch(
                        batch, to_seq=frame.to_seq, peer=peer
                    )
                    self._count_in(batch, result)
                last = frame.to_seq
                self.cursors[tier] = last
                if not frame.more:
                    self.remote_seq[tier] = max(self.remote_seq.get(tier, 0), last)
                    break
        finally:
            for rid in pending:
                self._waiting.pop(rid, None)
        if last > cursor:
            ack = P.Ack(request_id=request_id, tier=tier, seq=last)
            self._queue_urgent(self._frame(ack))

    async def replicate(self, tier: Tier, item_id: bytes) -> int:
        """Fetch the peer's current version of one item and apply it like a push.

        Repair's way to fetch what differs (SPEC.md 4.2): REPLICATE is answered by one BATCH
        covering ``(0, 0]``, applied without a cursor. Returns the versions that changed our
        state.

        Raises:
            BadFieldError: the answer is not that one item of that tier.
        """
        request_id = next(self._request_ids)
        send, recv = trio.open_memory_channel[P.BatchFrame](1)
        self._waiting[request_id] = send
        try:
            ask = P.Replicate(request_id=request_id, tier=tier, item_id=item_id)
            self._queue_urgent(self._frame(ask))
            frame = await recv.receive()
        finally:
            self._waiting.pop(request_id, None)
        batch = await _decode(frame)
        if frame.more or frame.tier != tier or any(i.item_id != item_id for i in batch.items):
            raise P.BadFieldError("not the answer to a one-item REPLICATE", field="batch_frame")
        if not batch.items:
            return 0
        result = await self.engine.apply_sync_batch(batch, peer=self.peer_short)
        self._count_in(batch, result)
        return int(result[0])

    def _count_in(
        self,
        batch: P.Batch,
        result: Any,
        changed: list[P.Item] | None = None,
        hops: int | None = None,
    ) -> None:
        """Count a batch in; if it changed our state, tell the daemon (feed and relay).

        ``changed``: for a push, the versions that changed a row (relayed as they are);
        None for a pull, whose changes the daemon announces to the other peers instead.
        ``hops``: a push's hop count (the broadcast tree compares them); None for a pull.
        """
        self.stats.batches_in += 1
        self.stats.items_in += len(batch.items)
        applied, conflicts = result[0], result[1]
        self.stats.conflicts += conflicts if isinstance(conflicts, int) else len(conflicts)
        if applied and self.on_change is not None:
            self.on_change(batch)
        if self.on_applied is not None and (applied or changed is not None):
            self.on_applied(self, batch, changed, hops)  # a push always: early relays settle

    async def _apply_push(self, push: P.Push | P.HopPush) -> None:
        if push.tier not in self.accept_tiers:
            self.stats.rejected += 1
            self.log.warning("push rejected: tier not writable by peer", tier=push.tier.name)
            return
        batch = self._screen(await _decode(push))
        hops = push.hops if isinstance(push, P.HopPush) else 0
        if self.on_received is not None:
            self.on_received(self, batch, hops)  # the relay may send it on before our apply
        changed: list[P.Item] = []
        result = await self.engine.apply_sync_batch(batch, peer=self.peer_short, changed=changed)
        self._count_in(batch, result, changed, hops)

    def _screen(self, batch: P.Batch) -> P.Batch:
        """``batch`` without the versions the peer may not write (``write_share``).

        Each refusal is counted and logged with the peer and the namespace; a pulled batch
        keeps its cursor range, so the refused versions are not asked for again.
        """
        rule = self.accept_share
        if rule is None or not rule.restricts(batch.tier):
            return batch
        kept, refused = rule.split(batch.tier, batch.items)
        if not refused:
            return batch
        self.stats.rejected += len(refused)
        spaces = sorted({namespace_of(item) for item in refused})
        self.log.warning(
            "write refused: namespace not writable by peer",
            tier=batch.tier.name,
            namespaces=spaces[:8],
            count=len(refused),
        )
        return P.Batch(
            batch_id=batch.batch_id,
            source=batch.source,
            target=batch.target,
            tier=batch.tier,
            items=tuple(kept),
        )

    def _shared(self, tier: Tier, items: tuple[P.Item, ...]) -> tuple[P.Item, ...]:
        """``items`` the peer may receive (``share``); the rest is never sent to it."""
        rule = self.send_share
        if rule is None or not rule.restricts(tier):
            return items
        return tuple(rule.split(tier, items)[0])

    async def _responder(self) -> None:
        """Answer PULL and REPLICATE one chunk at a time, in arrival order."""
        engine = self.engine.engine
        async for request in self._requests_recv:
            if isinstance(request, P.Pull):
                await self._answer_pull(request)
            elif isinstance(request, P.Replicate):
                if request.tier not in self.send_tiers:
                    await self._answer_empty(request.request_id, request.tier, 0)
                    continue
                deltas = await self.engine.run(
                    lambda r=request: list(
                        engine.answer_replicate(
                            r.tier, r.item_id, self.peer_short, self.chunk_items, self.chunk_bytes
                        )
                    )
                )
                for delta in deltas:
                    await self._send_delta(request.request_id, delta)

    async def _answer_empty(self, request_id: int, tier: Tier, seq: int) -> None:
        batch = P.Batch(
            batch_id=P.Batch.new_id(), source=self.engine.engine.origin, tier=tier, items=()
        )
        frame = P.BatchFrame(
            request_id=request_id, from_seq=seq, to_seq=seq, more=False, batch=P.pack_batch(batch)
        )
        await self._send_bulk(frame)

    async def _answer_pull(self, pull: P.Pull) -> None:
        if pull.tier not in self.send_tiers:
            self.stats.rejected += 1
            self.log.warning("pull refused: tier not given to peer", tier=pull.tier.name)
            await self._answer_empty(pull.request_id, pull.tier, pull.after_seq)
            return
        delta = await self.engine.create_delta_batch(
            pull.tier,
            self.peer_short,
            pull.after_seq,
            min(pull.max_items, self.chunk_items),
            min(pull.max_bytes, self.chunk_bytes),
        )
        await self._send_delta(pull.request_id, delta)

    async def _send_delta(self, request_id: int, delta: Any) -> None:
        batch = delta.batch
        shared = self._shared(batch.tier, batch.items)
        if len(shared) != len(batch.items):  # the cursor range stays: nothing is missing
            batch = P.Batch(
                batch_id=batch.batch_id,
                source=batch.source,
                target=batch.target,
                tier=batch.tier,
                items=shared,
            )
        data = await trio.to_thread.run_sync(P.pack_batch, batch)
        frame = P.BatchFrame(
            request_id=request_id,
            from_seq=delta.from_seq,
            to_seq=delta.to_seq,
            more=delta.more,
            batch=data,
        )
        self.stats.batches_out += 1
        self.stats.items_out += len(batch.items)
        await self._send_bulk(frame)
