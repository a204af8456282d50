"""Refused connections in the log: a few lines per flood, however many connections it has.

Theory of operation. Every refused connection used to log one warning, so an attacker
chose the log volume (503 lines for one flood of half-open handshakes). Now refusals are
tallied in windows of ``WINDOW`` seconds, opened by the first refusal after a quiet spell:

* the first refusal of each (source, claimed id) pair in a window is logged on its own, as
  before (``connection refused`` with ``peer``, ``address`` and ``reason``), up to
  ``DETAILED`` such lines per window: a single probe or a misconfigured peer shows up at
  once, with the details an operator greps for;
* when the window closes, each source with refusals that were not shown gets one summary
  line: ``refused 503 connections from 127.0.0.1 in the last 10 s: TooSlowError x503``
  (``refused`` and ``reasons`` as fields too). At most ``SOURCES`` sources are summarised
  one by one; the rest share one ``other sources`` line, and a source's reasons beyond
  ``REASONS`` are summed as ``other``.

So a window writes at most ``DETAILED + SOURCES + 1`` lines. Levels: info for first-contact
noise (a source that never authenticated, or the certificate probe of a configured peer,
see ``transport.py``), warning for the rest (a known peer's address failing handshakes
means something is wrong). Counting by reason is the metrics' job (``admission.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from ..ids import SHORT_LEN

__all__ = ["DETAILED", "REASONS", "SOURCES", "WINDOW", "RefusalLog"]

WINDOW = 10.0
DETAILED = 5
SOURCES = 16
REASONS = 6
OTHERS = "other sources"


@dataclass
class _Tally:
    count: int = 0
    shown: int = 0
    warn: bool = False
    reasons: Counter[str] = field(default_factory=Counter)


class RefusalLog:
    """Aggregates refused connections into bounded log lines (see the module docstring).

    ``run`` must be running (in the daemon's nursery) for summaries to be written; ``flush``
    writes them now. ``lines`` counts the lines written, for tests and the flood bench.
    """

    def __init__(
        self,
        logger: Any = None,
        *,
        window: float = WINDOW,
        detailed: int = DETAILED,
        sources: int = SOURCES,
    ) -> None:
        self._log: Any = logger if logger is not None else structlog.get_logger("meshsyncd.daemon")
        self.window = window
        self.detailed = detailed
        self.sources = sources
        self.lines = 0
        self._tallies: dict[str, _Tally] = {}
        self._shown: set[tuple[str, str]] = set()
        self._opened: float | None = None
        self._wake = trio.Event()

    def refused(
        self,
        *,
        source: str,
        address: str,
        claimed: str | None,
        reason: str,
        noise: bool,
        details: dict[str, str] | None = None,
    ) -> None:
        """Note one refused connection; log it now if it is the first of its kind.

        ``source`` is what limits count (an address or IPv6 /64), ``address`` the client's
        ``host:port``, ``claimed`` the node id it named in SNI, ``noise`` whether it is
        first-contact noise (info) rather than a warning; ``details`` go on the line logged
        singly (what the operator can do about it: ``reasons.py``).
        """
        if self._opened is None:
            self._opened = trio.current_time()
            self._wake.set()
        tally = self._tallies.get(source)
        if tally is None:
            key = source if len(self._tallies) < self.sources else OTHERS
            tally = self._tallies.setdefault(key, _Tally())
        tally.count += 1
        tally.warn |= not noise
        label = reason if reason in tally.reasons or len(tally.reasons) < REASONS else "other"
        tally.reasons[label] += 1
        pair = (source, claimed or "?")
        if pair not in self._shown and len(self._shown) < self.detailed:
            self._shown.add(pair)
            tally.shown += 1
            self.lines += 1
            emit = self._log.info if noise else self._log.warning
            emit(
                "connection refused",
                peer=(claimed or "?")[:SHORT_LEN],
                address=address,
                reason=reason,
                **(details or {}),
            )

    def flush(self) -> None:
        """Close the window: one summary line per source with refusals not shown singly."""
        for source, tally in self._tallies.items():
            if tally.count <= tally.shown:
                continue
            reasons = ", ".join(f"{r} x{n}" for r, n in tally.reasons.most_common())
            emit = self._log.warning if tally.warn else self._log.info
            emit(
                f"refused {tally.count} connections from {source} in the last "
                f"{self.window:g} s: {reasons}",
                source=source,
                refused=tally.count,
                reasons=dict(tally.reasons),
            )
            self.lines += 1
        self._tallies.clear()
        self._shown.clear()
        self._opened = None

    async def run(self) -> None:
        """Write each window's summaries when it closes; until cancelled."""
        while True:
            await self._wake.wait()
            assert self._opened is not None
            await trio.sleep_until(self._opened + self.window)
            self._wake = trio.Event()
            self.flush()
