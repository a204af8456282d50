"""The change feed: every applied change, fanned out to control-socket watchers.

Theory of operation: the daemon (for replicated changes) and the control server (for local
writes) call :meth:`ChangeFeed.publish` on the trio thread. Publishing never waits: each
subscriber owns a bounded memory channel, and a subscriber whose channel is full is *dropped*
(its channel is closed, its ``on_drop`` callback runs, the drop is counted) instead of making
the node wait for a slow reader. Watchers learn about a drop and tell their client with a
final error line; nothing else is affected. The feed is not thread-safe: call it from the
trio thread only.

Resumable watchers (``watch.py``) do not take events from here: they read the changes from
the store, after their cursor, and only need to know *that* a tier changed. They hold a
:class:`ChangeSignal`, a flag rather than a queue, which cannot overflow, so such a watcher
is never dropped however slow its client; it simply reads more rows at its next turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from protocol import Item, Op, Tier

__all__ = ["ChangeFeed", "ChangeSignal", "FeedStatistics", "change_event"]

Event = dict[str, Any]


def change_event(item: Item, source: str = "local") -> Event:
    """The feed event for one applied version; ``source`` is ``"local"`` or a peer id text."""
    return normalise_event(
        {
            "tier": item.tier,
            "item_id": item.item_id,
            "op": item.op,
            "origin": item.origin,
            "timestamp_ns": item.timestamp_ns,
            "source": source,
        }
    )


def normalise_event(event: Mapping[str, Any]) -> Event:
    """A JSON-able copy of ``event``: tier/op as lowercase names, ids as hex.

    Accepts :class:`Tier`/:class:`Op` members, their integer codes or names; ``item_id`` as
    16 bytes or hex text; ``origin`` as the u64 short id or text. Unknown keys pass through.
    """
    out: Event = dict(event)
    tier = out.get("tier")
    if isinstance(tier, int) and not isinstance(tier, bool) and tier in {int(t) for t in Tier}:
        out["tier"] = Tier(tier).name.lower()
    elif isinstance(tier, str):
        out["tier"] = tier.lower()
    op = out.get("op")
    if isinstance(op, int) and not isinstance(op, bool) and op in {int(o) for o in Op}:
        out["op"] = Op(op).name.lower()
    elif isinstance(op, str):
        out["op"] = op.lower()
    if isinstance(out.get("item_id"), bytes | bytearray):
        out["item_id"] = bytes(out["item_id"]).hex()
    origin = out.get("origin")
    if isinstance(origin, int) and not isinstance(origin, bool):
        out["origin"] = f"{origin:016x}"
    elif isinstance(origin, bytes | bytearray):
        out["origin"] = bytes(origin).hex()
    return out


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    """``subscribers`` now; ``published`` events so far; ``delivered`` channel sends;
    ``dropped`` subscribers cut off for being too slow."""

    subscribers: int
    published: int
    delivered: int
    dropped: int


@dataclass(slots=True, eq=False)
class _Subscriber:
    tier: str | None
    send: trio.MemorySendChannel[Event]
    on_drop: Callable[[], None] | None
    dropped: bool = False


class ChangeSignal:
    """Set when a change of ``tier`` (any tier: None) is published; see the module doc."""

    def __init__(self, tier: str | None) -> None:
        self.tier = tier
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Wait until something changed since the last wait returned."""
        await self._event.wait()
        self._event = trio.Event()


class ChangeFeed:
    """Fan-out of change events to bounded per-subscriber channels (see module docstring)."""

    def __init__(self, buffer: int = 256) -> None:
        if buffer < 1:
            raise ValueError("a subscriber buffer holds at least one event")
        self.buffer = buffer
        self._signals: set[ChangeSignal] = set()
        self._subs: set[_Subscriber] = set()
        self._published = 0
        self._delivered = 0
        self._dropped = 0

    def publish(self, event: Mapping[str, Any]) -> None:
        """Hand ``event`` to every matching subscriber without waiting.

        A subscriber whose channel is full is dropped: its channel closes (the watcher sees
        the end after the events already queued) and its ``on_drop`` callback runs.
        """
        ev = normalise_event(event)
        self._published += 1
        for signal in self._signals:
            if signal.tier is None or signal.tier == ev.get("tier"):
                signal.set()
        for sub in list(self._subs):
            if sub.dropped or (sub.tier is not None and ev.get("tier") != sub.tier):
                continue
            try:
                sub.send.send_nowait(ev)
            except trio.WouldBlock:
                self._drop(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                sub.dropped = True
            else:
                self._delivered += 1

    def _drop(self, sub: _Subscriber) -> None:
        sub.dropped = True
        self._dropped += 1
        sub.send.close()
        if sub.on_drop is not None:
            sub.on_drop()

    @contextmanager
    def subscribe(
        self, tier: Tier | None = None, *, on_drop: Callable[[], None] | None = None
    ) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """Receive events (of ``tier`` only, if given) while the block runs.

        The channel ends early if the subscriber is dropped for falling ``buffer`` events
        behind; ``on_drop`` (called on the trio thread, from inside ``publish``) lets the
        watcher react at once, e.g. by cancelling a blocked send.
        """
        send, receive = trio.open_memory_channel[Event](self.buffer)
        sub = _Subscriber(None if tier is None else Tier(tier).name.lower(), send, on_drop)
        self._subs.add(sub)
        try:
            yield receive
        finally:
            self._subs.discard(sub)
            send.close()
            receive.close()

    @contextmanager
    def signal(self, tier: Tier | None = None) -> Iterator[ChangeSignal]:
        """A :class:`ChangeSignal` for ``tier`` (all tiers: None) while the block runs."""
        sig = ChangeSignal(None if tier is None else Tier(tier).name.lower())
        self._signals.add(sig)
        try:
            yield sig
        finally:
            self._signals.discard(sig)

    def statistics(self) -> FeedStatistics:
        """Counters for ``status`` and tests."""
        return FeedStatistics(
            subscribers=len(self._subs),
            published=self._published,
            delivered=self._delivered,
            dropped=self._dropped,
        )
