"""Hybrid logical clock (DESIGN.md, "Conflict order", clock rule).

Theory of operation: every local write is stamped with ``now = max(wall_ns, last + 1)``, so
local timestamps strictly increase even when the wall clock steps backwards (NTP, a VM
resumed from a snapshot). Every timestamp received from a peer moves ``last`` forward
(``last = max(last, remote)``) so that our next write orders after everything we have seen,
which is what makes last-write-wins match causality between nodes. A remote timestamp
further than ``max_skew_ns`` ahead of our *wall* clock is refused (:class:`ClockSkewError`)
and counted: accepting it would drag every later local write into the future.

The clock itself is pure state. Durability is the store's job: the engine writes ``last``
into the same SQLite transaction as every write that used it, and seeds the clock with that
high-water mark on open, so a restart never hands out a timestamp twice (the engine's clock
lease extends this to writes pushed before their commit).

Thread-safe: urgent local writes are stamped on the trio thread while the store's worker
thread observes remote timestamps, so every read-modify-write of ``last`` holds a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_SKEW_NS", "ClockSkewError", "HybridClock"]

DEFAULT_MAX_SKEW_NS = 500_000_000
_U64_MAX = (1 << 64) - 1


class ClockSkewError(Exception):
    """A peer sent a timestamp too far ahead of our wall clock.

    Carries the peer (short node id), the refused timestamp, our wall reading and the limit,
    so the daemon can answer with ``ERROR CLOCK_SKEW`` and the operator can see which node's
    clock is wrong.
    """

    def __init__(self, *, peer: int, remote_ns: int, wall_ns: int, max_skew_ns: int) -> None:
        self.peer = peer
        self.remote_ns = remote_ns
        self.wall_ns = wall_ns
        self.max_skew_ns = max_skew_ns
        ahead_ms = (remote_ns - wall_ns) / 1e6
        super().__init__(
            f"peer {peer:016x} sent timestamp {remote_ns}, {ahead_ms:.1f} ms ahead of our "
            f"wall clock (limit {max_skew_ns / 1e6:.1f} ms): check that node's clock"
        )


class HybridClock:
    """Strictly increasing hybrid-logical-clock readings in nanoseconds since the epoch.

    ``wall`` is injectable so tests can step time backwards deterministically.
    """

    __slots__ = ("_last", "_lock", "max_skew_ns", "refused", "wall")

    def __init__(
        self,
        *,
        wall: Callable[[], int] = time.time_ns,
        last: int = 0,
        max_skew_ns: int = DEFAULT_MAX_SKEW_NS,
    ) -> None:
        self.wall = wall
        self._lock = threading.Lock()
        self._last = last
        self.max_skew_ns = max_skew_ns
        self.refused = 0

    @property
    def last(self) -> int:
        """The highest timestamp handed out or observed (the high-water mark to persist)."""
        return self._last

    def now(self) -> int:
        """A timestamp greater than every one returned or observed before.

        Raises:
            OverflowError: the clock reached 2**64 - 1 (only a hostile timestamp can do that,
                and :meth:`observe` refuses those).
        """
        wall = self.wall()
        with self._lock:
            ts = max(wall, self._last + 1)
            if ts > _U64_MAX:
                raise OverflowError("hybrid logical clock exhausted the u64 range")
            self._last = ts
        return ts

    def check(self, remote_ns: int, *, peer: int) -> None:
        """Refuse ``remote_ns`` if it is more than ``max_skew_ns`` ahead of the wall clock.

        Separate from :meth:`observe` so a whole batch can be vetted before any of it is
        applied.

        Raises:
            ClockSkewError: the timestamp is too far ahead; ``refused`` was incremented.
        """
        wall = self.wall()
        if remote_ns - wall > self.max_skew_ns:
            self.refused += 1
            raise ClockSkewError(
                peer=peer, remote_ns=remote_ns, wall_ns=wall, max_skew_ns=self.max_skew_ns
            )

    def observe(self, remote_ns: int, *, peer: int) -> None:
        """Fold a received timestamp into the clock (``last = max(last, remote)``).

        Raises:
            ClockSkewError: see :meth:`check`; the clock is unchanged in that case.
        """
        self.check(remote_ns, peer=peer)
        with self._lock:
            if remote_ns > self._last:
                self._last = remote_ns

    def advance_to(self, high_water: int) -> None:
        """Seed the clock from a persisted high-water mark (never moves it backwards)."""
        with self._lock:
            if high_water > self._last:
                self._last = high_water
