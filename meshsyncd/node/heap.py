"""Memory that comes back: after a burst of connections, return the freed heap to the OS.

Theory of operation, from measurements (``meshsyncd bench flood``, README "Benchmarks").
Rounds of 500 half-open TLS handshakes grew a daemon from 50 to 135 MB and it never came
back. Two causes, found with ``mallinfo2`` and ``gc.DEBUG_SAVEALL``:

1. Every ``trio.SSLStream`` is a reference cycle (its handshake-once helper holds a bound
   method of the stream), so a dead connection's OpenSSL state (~40 KiB) waited for a full
   collection of the cyclic GC, which a daemon with a frozen startup heap runs rarely: 20
   MB of live garbage per round. ``transport.py`` now breaks the cycle after every
   handshake, so the memory is freed when the connection is dropped.
2. Freed is not returned: glibc gives heap back to the OS only from the top of an arena,
   and the freed chunks of a burst lie below longer-lived ones. After a round, 22 MB sat
   free inside the main arena, counted in RSS. ``malloc_trim(0)`` hands every free page
   of every arena back (``MADV_DONTNEED``); the daemon then was within 6 MB of its start.
   Handshakes run on the event loop's thread, so only the main arena grew: a lower
   ``MALLOC_ARENA_MAX`` would change nothing, and no per-connection ``SSLContext`` is made
   (``TrustStore`` builds its contexts once per change of the trusted set).

:class:`HeapRelief` does (2) once a burst is over: after ``BURST`` handshakes ended and none
has been in progress for ``QUIET`` seconds (or ``MAX_WAIT`` passed in a flood that never
stops), at most every ``MIN_INTERVAL`` seconds. Measured: 2 ms of the event loop, RSS from
78 back to 53 MB. It runs no ``gc.collect()``: with the cycle broken a collection found
nothing to free after a flood, and a full one costs tens of milliseconds on a big heap
(the stalls ``freeze_startup_heap`` in daemon.py avoids). On a C library without
``malloc_trim`` (musl, macOS) it does nothing. The admission limits (``admission.py``)
bound how much a burst can allocate in the first place.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import trio

__all__ = ["BURST", "MIN_INTERVAL", "QUIET", "HeapRelief", "rss_kib", "trim_heap"]

BURST = 64
QUIET = 1.0
MAX_WAIT = 60.0
MIN_INTERVAL = 2.0

log: Any = structlog.get_logger("meshsyncd.heap")


def _load_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _load_trim()


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``); False where unsupported."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def rss_kib() -> int:
    """This process's resident set size (``VmRSS``), in KiB; 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class HeapRelief:
    """Trim the heap once a burst of connections is over (see the module docstring).

    ``trim`` is the trimming function (a fake in tests); ``reliefs`` counts the runs.
    """

    def __init__(
        self,
        *,
        burst: int = BURST,
        quiet: float = QUIET,
        min_interval: float = MIN_INTERVAL,
        trim: Callable[[], bool] = trim_heap,
    ) -> None:
        self.burst = burst
        self.quiet = quiet
        self.min_interval = min_interval
        self.reliefs = 0
        self._trim = trim
        self._ended = 0
        self._due = trio.Event()

    def note_ended(self) -> None:
        """A connection's handshake ended (however): count it towards the next relief."""
        self._ended += 1
        if self._ended >= self.burst:
            self._due.set()

    async def run(self, busy: Callable[[], int]) -> None:
        """Relieve after each burst until cancelled; ``busy()`` is the handshakes in progress."""
        while True:
            await self._due.wait()
            with trio.move_on_after(MAX_WAIT):
                while True:
                    await trio.sleep(self.quiet)
                    if not busy():
                        break
            self._due = trio.Event()
            self._ended = 0
            self.relieve()
            await trio.sleep(self.min_interval)

    def relieve(self) -> None:
        """Trim the heap now; log what it gave back (nothing to log where it cannot trim)."""
        before = rss_kib()
        started = time.perf_counter()
        if not self._trim():
            return
        self.reliefs += 1
        log.info(
            "heap trimmed after a connection burst",
            rss_before_kib=before,
            rss_after_kib=rss_kib(),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
