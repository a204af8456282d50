"""One peer session over any trio byte stream: HELLO, the reader, the writer and its lanes.

Theory of operation (DESIGN.md "Delta sync", SPEC.md sections 4 and 5): the session owns a
``protocol.Connection`` and three kinds of tasks under one nursery.

* The reader turns bytes into events and dispatches them. BATCH and PUSH bodies are parsed
  and applied off the trio thread (``trio.to_thread`` for the codec, the engine's serial
  worker for SQLite), so a 1000-item batch never stalls the loop.
* One puller per tier the peer may write to us: PULL after our cursor, apply each BATCH and
  its cursor in one transaction, ACK the last one, then wait for the interval or a poke.
* One writer drains two bounded queues, urgent first. Pull answers are produced one chunk
  at a time into a queue of size 1, so an urgent PUSH waits behind at most one chunk.
  A full urgent queue drops the push (counted): the next pull carries the data anyway.

The pullers, the responder and the keepalive are the session's lanes, in ``lanes.py``
(:class:`SessionLanes`, mixed in); this module moves frames and decides how a session ends.
The transport (TLS, identity) is not this module's business: the caller hands over an
authenticated stream and the peer's expected node id. Errors from the peer close this
session only; ``trio.Cancelled`` is never swallowed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
import trio

import protocol as P
from protocol import Tier

from ..aengine import AsyncEngine
from ..clock import ClockSkewError
from ..engine import short_id
from ..identity import node_id_text, short_text_of
from ..mesh.share import ShareRule
from .endings import DuplicateSession, SessionClosed
from .lanes import SessionLanes

__all__ = ["DuplicateSession", "PeerStats", "Session", "SessionClosed"]

CHUNK_ITEMS = 1000
CHUNK_BYTES = 256 * 1024
READ_SIZE = 65536
# How long the last ERROR/BYE may wait behind the chunk being written to a slow peer.
FINAL_FLUSH_TIMEOUT = 5.0


_TRANSPORT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


def _last_word(exc: BaseException) -> P.Frame | None:
    """The frame that tells the peer why we end the session, if the protocol has one."""
    if isinstance(exc, P.RemoteProtocolError):
        return P.Error(code=P.ErrorCode.PROTOCOL, text=_text(str(exc)))
    if isinstance(exc, ClockSkewError):
        return P.Error(code=P.ErrorCode.CLOCK_SKEW, text=_text(str(exc)))
    if isinstance(exc, DuplicateSession):
        return P.Bye(code=P.ByeCode.DUPLICATE, text="duplicate connection")
    return None


def _text(message: str) -> str:
    """Cut a message to MAX_TEXT bytes of UTF-8 without splitting a character."""
    return message.encode("utf-8")[: P.MAX_TEXT].decode("utf-8", errors="ignore")


FrameHandler = Callable[["Session", P.Frame], Awaitable[None]]

# Which HELLO capability allows each protocol-2 frame (SPEC.md 4.1, 4.2).
EXTENSION_CAPABILITY: dict[type[P.Frame], P.Capability] = {
    P.Barrier: P.Capability.BARRIER,
    P.BarrierDone: P.Capability.BARRIER,
    P.Ranges: P.Capability.REPAIR,
    P.RangeIds: P.Capability.REPAIR,
    P.Members: P.Capability.MEMBERSHIP,
    P.Prune: P.Capability.MEMBERSHIP,
    P.Links: P.Capability.MEMBERSHIP,  # protocol 6
}

# How a session may end without it being a bug in this node.
_ENDINGS = (
    SessionClosed,
    DuplicateSession,
    P.RemoteProtocolError,
    ClockSkewError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


@dataclasses.dataclass(slots=True)
class PeerStats:
    """Counters shown in the operator's peers table."""

    items_in: int = 0
    items_out: int = 0
    batches_in: int = 0
    batches_out: int = 0
    pushes_dropped: int = 0
    rejected: int = 0
    conflicts: int = 0
    rtt_ms: float | None = None
    clock_offset_ms: float | None = None
    last_seen: float = 0.0


class Session(SessionLanes):
    """Sync with one peer over ``stream`` until either side closes.

    ``send_tiers``: tiers this peer receives from us. ``accept_tiers``: tiers it may write.
    ``send_share``/``accept_share`` narrow those to namespaces (``meshsyncd/mesh/share.py``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        stream: trio.abc.Stream,
        *,
        node_id: bytes,
        peer_id: bytes | None = None,
        send_tiers: Iterable[Tier] = tuple(Tier),
        accept_tiers: Iterable[Tier] = tuple(Tier),
        pull_interval: float = 30.0,
        ping_interval: float = 10.0,
        chunk_items: int = CHUNK_ITEMS,
        chunk_bytes: int = CHUNK_BYTES,
        push_queue: int = 256,
        on_change: Callable[[P.Batch], None] | None = None,
        on_open: Callable[[Session], None] | None = None,
        on_applied: Callable[[Session, P.Batch, list[P.Item] | None, int | None], None]
        | None = None,
        on_received: Callable[[Session, P.Batch, int], None] | None = None,
        initiator: bool = False,
        extensions: Mapping[type[P.Frame], FrameHandler] | None = None,
        capabilities: int = 0,
        send_share: ShareRule | None = None,
        accept_share: ShareRule | None = None,
    ) -> None:
        self.engine = engine
        self.send_share = send_share
        self.accept_share = accept_share
        self.stream = stream
        self.node_id = node_id
        self.expected_peer = peer_id
        self.send_tiers = frozenset(send_tiers)
        self.accept_tiers = frozenset(accept_tiers)
        self.pull_interval = pull_interval
        self.ping_interval = ping_interval
        self.chunk_items = chunk_items
        self.chunk_bytes = chunk_bytes
        self.on_change = on_change
        self.on_open = on_open
        self.on_applied = on_applied
        self.bye: P.Bye | None = None  # the peer's BYE, when it ended the session so
        self.on_received = on_received
        # Handlers of the protocol-2 frames (meshsyncd/mesh/), by frame class; a frame the
        # peer's HELLO did not announce, or that this node has no handler for, is refused.
        self.extensions = dict(extensions or {})
        self.capabilities = capabilities
        self.initiator = initiator
        self.opened_at = 0.0
        self.acked: dict[Tier, int] = {}
        self.cursors: dict[Tier, int] = {}  # our cursor on the peer's sequence, per tier
        self.remote_seq: dict[Tier, int] = {}  # the peer's sequence as last announced
        self._ack_event = trio.Event()
        self.conn = P.Connection()
        self.stats = PeerStats()
        self.peer_hello: P.Hello | None = None
        self.log: Any = structlog.get_logger("meshsyncd.session").bind(
            peer=short_text_of(peer_id) if peer_id else "?"
        )
        # Urgent lane: pushes (bounded, dropped when full) and small control frames.
        self._urgent: collections.deque[bytes] = collections.deque()
        self._push_limit = push_queue
        # Bulk lane: pull answers, one chunk buffered at most.
        self._bulk_send, self._bulk_recv = trio.open_memory_channel[bytes](1)
        self._wake = trio.Event()
        self._requests_send, self._requests_recv = trio.open_memory_channel[P.Frame](16)
        self._request_ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[P.BatchFrame]] = {}
        self._poke = {tier: trio.Event() for tier in Tier}
        self._rounds = {tier: 0 for tier in Tier}
        self._round_done = trio.Event()
        self._hello_seen = trio.Event()
        self._running = False
        self._last_rx = 0.0
        self._failure: BaseException | None = None  # how the session is ending
        self._nursery: trio.Nursery
        self._final: bytes | None = None  # the last ERROR/BYE, sent through the writer
        self._final_sent = trio.Event()

    # -- public -----------------------------------------------------------------------------

    @property
    def peer_short(self) -> int:
        return short_id(self.peer_hello.node_id) if self.peer_hello else 0

    def push_nowait(self, item: P.Item) -> bool:
        """Queue a live push of one fresh local write; False (and counted) if dropped."""
        return self.push_items_nowait(item.tier, [item])

    def push_items_nowait(self, tier: Tier, items: list[P.Item], hops: int = 0) -> bool:
        """Queue one push of fresh writes of one tier; False (and counted) if dropped.

        ``hops``: sessions the versions crossed before this one (0: written here); it goes
        on the wire (HOP_PUSH, SPEC.md 4.4) so the receiver's broadcast tree can prefer
        shorter paths. A dropped push loses nothing: the items are in the store and ride
        the next pull.
        """
        if tier not in self.send_tiers or not self._hello_seen.is_set() or not items:
            return False
        items = list(self._shared(tier, tuple(items)))  # relays leave this way too
        if not items:
            return False
        batch = P.Batch(
            batch_id=P.Batch.new_id(),
            source=self.engine.engine.origin,
            target=self.peer_short,
            tier=tier,
            items=tuple(items),
        )
        if len(self._urgent) >= self._push_limit:
            self.stats.pushes_dropped += 1
            return False
        try:
            push = P.HopPush(hops=min(hops, P.MAX_HOPS), batch=P.pack_batch(batch))
            data = self.conn.send(push)
        except P.LocalProtocolError:
            return False
        self._queue_urgent(data)
        return True

    @property
    def urgent_backlog(self) -> int:
        """Frames waiting on the urgent lane (gossip skips a peer that is backed up)."""
        return len(self._urgent)

    def _queue_urgent(self, data: bytes) -> None:
        self._urgent.append(data)
        self._wake.set()

    def _frame(self, event: P.Frame) -> bytes:
        """Encode a frame for sending; once we said BYE or ERROR the session is ending."""
        if self.conn.our_state is P.State.CLOSED:
            raise SessionClosed("session closing")
        return self.conn.send(event)

    async def close(self, code: int = P.ByeCode.NORMAL, text: str = "") -> None:
        """Say BYE behind at most one bulk chunk (bounded wait), then end the session.

        Safe to call from another task while the session runs, or after it ended.
        """
        bye = P.Bye(code=code, text=text)
        if self._running:
            if self._failure is None:
                self._failure = SessionClosed(f"closed by this node: {text or code}")
            await self._say_last(bye)
            self._nursery.cancel_scope.cancel()
        elif self.conn.our_state is not P.State.CLOSED:
            with trio.move_on_after(1), contextlib.suppress(*_TRANSPORT_GONE):
                await self.stream.send_all(self.conn.send(bye))
        await trio.aclose_forcefully(self.stream)

    async def run(self) -> None:
        """Run the session to its end.

        Raises:
            SessionClosed: the peer closed, or broke the protocol (the reason is logged).
        """
        hello = P.Hello(
            version=P.PROTOCOL_VERSION,
            node_id=self.node_id,
            incarnation=self.engine.engine.incarnation,
            capabilities=int(
                P.Capability.ZSTD | P.Capability.MERGE | P.Capability.PUSH | self.capabilities
            ),
            timestamp_ns=time.time_ns(),
        )
        try:
            await self.stream.send_all(self.conn.send(hello))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise SessionClosed("connection lost before HELLO") from exc
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._running = True
            self._last_rx = trio.current_time()
            nursery.start_soon(self._guarded, self._writer)
            nursery.start_soon(self._guarded, self._responder)
            nursery.start_soon(self._guarded, self._reader)
        self._running = False
        await self._finish(self._failure)

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run one session task; the first expected ending stops all of them.

        The first ending sends the peer its explanation (ERROR or BYE) through the writer
        before anything is cancelled: cancelling the writer in the middle of a frame would
        break the TLS stream and lose exactly that explanation. Anything else is a bug and
        propagates (crashing loudly, as STYLE.md asks).
        """
        try:
            await task()
        except _ENDINGS as exc:
            if self._failure is not None:
                return  # the first ending is already closing the session
            self._failure = exc
            if isinstance(exc, P.RemoteProtocolError):
                self.log.warning("protocol error", error=str(exc))
            elif isinstance(exc, ClockSkewError):
                self.log.warning("clock skew refused", error=str(exc))
            last = _last_word(exc)
            if last is not None:
                await self._say_last(last)
            self._nursery.cancel_scope.cancel()

    async def _say_last(self, frame: P.Frame) -> None:
        """Queue a final ERROR/BYE on the urgent lane, behind the urgent frames already
        queued and ahead of every bulk chunk not yet being written; wait (bounded) until
        it is written."""
        if self.conn.our_state is P.State.CLOSED:
            return
        data = self.conn.send(frame)
        self._final = data
        self._queue_urgent(data)
        with trio.move_on_after(FINAL_FLUSH_TIMEOUT):
            await self._final_sent.wait()

    async def _finish(self, exc: BaseException | None) -> None:
        """Turn how the session ended into one SessionClosed with a reason."""
        if isinstance(exc, SessionClosed):
            raise exc
        if isinstance(exc, P.RemoteProtocolError):
            raise SessionClosed(f"protocol error: {exc}") from exc
        if isinstance(exc, ClockSkewError):
            raise SessionClosed(f"clock skew: {exc}") from exc
        if isinstance(exc, DuplicateSession):
            raise SessionClosed("duplicate connection, the other one is kept") from exc
        if exc is not None:
            raise SessionClosed(f"connection lost: {type(exc).__name__}") from exc
        raise SessionClosed("session ended")

    # -- tasks ------------------------------------------------------------------------------

    async def _writer(self) -> None:
        """Urgent frames first, then one bulk chunk at a time; nothing is ever lost here."""
        while True:
            if self._urgent:
                data = self._urgent.popleft()
            else:
                try:
                    data = self._bulk_recv.receive_nowait()
                except trio.WouldBlock:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
            await self.stream.send_all(data)
            if data is self._final:
                self._final_sent.set()

    async def _send_bulk(self, frame: P.Frame) -> None:
        await self._bulk_send.send(self._frame(frame))
        self._wake.set()

    async def _reader(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is P.NEED_DATA:
                data = await self.stream.receive_some(READ_SIZE)
                self._last_rx = trio.current_time()
                self.conn.receive_data(bytes(data))
                continue
            self.stats.last_seen = time.time()
            if isinstance(event, P.ConnectionClosed):
                raise SessionClosed("peer closed the connection")
            if isinstance(event, P.Hello):
                await self._on_hello(event, self._nursery)
            elif isinstance(event, P.Pull | P.Replicate):
                await self._requests_send.send(event)
            elif isinstance(event, P.BatchFrame):
                waiter = self._waiting.get(event.request_id)
                if waiter is None:
                    raise P.SessionStateError(
                        f"BATCH for unknown request {event.request_id}", field="batch_frame"
                    )
                await waiter.send(event)
            elif isinstance(event, P.Push | P.HopPush):
                await self._apply_push(event)
            elif isinstance(event, P.Ack):
                await self.engine.run(
                    self.engine.engine.record_ack, self.peer_short, event.tier, event.seq
                )
                self.acked[event.tier] = max(self.acked.get(event.tier, 0), event.seq)
                done, self._ack_event = self._ack_event, trio.Event()
                done.set()
            elif isinstance(event, P.Digest):
                await self._on_digest(event)
            elif isinstance(event, P.Ping):
                pong = P.Pong(
                    nonce=event.nonce, echo_ns=event.timestamp_ns, timestamp_ns=time.time_ns()
                )
                self._queue_urgent(self._frame(pong))
            elif isinstance(event, P.Pong):
                self.stats.rtt_ms = (time.time_ns() - event.echo_ns) / 1e6
            elif isinstance(event, P.Error):
                raise SessionClosed(f"peer error {event.code}: {event.text}")
            elif isinstance(event, P.Bye):
                self.bye = event
                raise SessionClosed(f"peer said bye ({event.code}) {event.text}".strip())
            else:
                await self._on_extension(event)

    def peer_speaks(self, capability: P.Capability) -> bool:
        """Did the peer's HELLO announce ``capability`` (and do we use it too)?"""
        hello = self.peer_hello
        return (
            hello is not None
            and hello.version >= 2
            and bool(hello.capabilities & capability)
            and bool(self.capabilities & capability)
        )

    async def _on_extension(self, event: P.Frame) -> None:
        """Hand a protocol-2 frame to its handler, if both ends announced its capability."""
        handler = self.extensions.get(type(event))
        capability = EXTENSION_CAPABILITY.get(type(event))
        if handler is None or capability is None or not self.peer_speaks(capability):
            raise P.SessionStateError(
                f"{event.NAME} without the capability that allows it",
                field=event.NAME.lower(),
            )
        await handler(self, event)

    def send_nowait(self, event: P.Frame) -> bool:
        """Queue a small control frame on the urgent lane (the mesh modules' way out).

        Returns False, dropping the frame, once the session is ending (we said BYE or
        ERROR). The services that send these (repair's digests, gossip, barriers) walk the
        live sessions from their own tasks, and a session can close between that walk and
        the send: raising there would end the service, and with it the daemon. Nothing is
        lost: the peer could not have read the frame, and the session's own task reports how
        it ended.
        """
        if self.conn.our_state is P.State.CLOSED:
            return False
        self._queue_urgent(self.conn.send(event))
        return True

    async def _on_hello(self, hello: P.Hello, nursery: trio.Nursery) -> None:
        if hello.version < P.MIN_PROTOCOL_VERSION:
            # It sends no LINKS (nor, below 5, HOP_PUSH; SPEC.md section 6): our broadcast
            # trees would not know its links. Refuse it by name, not by silent gaps.
            raise P.VersionError(
                f"peer speaks protocol {hello.version}, this node needs at least "
                f"{P.MIN_PROTOCOL_VERSION} (link-state broadcast trees): upgrade it",
                field="hello.version",
            )
        if self.expected_peer is not None and hello.node_id != self.expected_peer:
            raise P.BadFieldError(
                f"peer claims node id {node_id_text(hello.node_id)}, expected "
                f"{node_id_text(self.expected_peer)}",
                field="hello.node_id",
            )
        self.peer_hello = hello
        self.log = self.log.bind(peer=short_text_of(hello.node_id))
        self.stats.clock_offset_ms = (hello.timestamp_ns - time.time_ns()) / 1e6
        # A peer whose clock runs ahead would drag our HLC into the future with its first
        # batch; refuse it at HELLO with a reason naming it (ClockSkewError ends the session).
        self.engine.engine.clock.check(hello.timestamp_ns, peer=short_id(hello.node_id))
        if self.on_open is not None:
            self.on_open(self)  # may raise DuplicateSession
        self.opened_at = time.time()
        reset = await self.engine.observe_peer(self.peer_short, hello.incarnation)
        self.log.info("session open", incarnation=hello.incarnation.hex(), cursors_reset=reset)
        self._hello_seen.set()
        for tier in sorted(self.accept_tiers):
            nursery.start_soon(self._guarded, functools.partial(self._puller, tier))
        nursery.start_soon(self._guarded, self._pinger)

    def spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run a mesh module's task until the session ends; its protocol errors end it."""
        self._nursery.start_soon(self._guarded, task)

    async def _on_digest(self, digest: P.Digest) -> None:
        hook = self.extensions.get(P.Digest)  # repair's detection goes first (mesh/repair.py)
        if hook is not None:
            await hook(self, digest)
        if digest.tier not in self.accept_tiers:
            return
        store = self.engine.engine.store
        cursor = await self.engine.run(store.cursor, self.peer_short, digest.tier)
        self.remote_seq[digest.tier] = digest.seq
        self.cursors.setdefault(digest.tier, cursor)
        if digest.seq > cursor:
            self._poke[digest.tier].set()  # the pull round ACKs when it is done
        else:
            # Already there: say so, or a sync barrier on the other side would wait for an
            # ACK that no pull round is going to send.
            self._queue_urgent(self._frame(P.Ack(request_id=0, tier=digest.tier, seq=cursor)))
