"""WAL checkpoints on a thread of their own, beside the writer instead of inside it.

Why: with SQLite's automatic checkpoint, the commit that pushes the WAL past 1000 pages
copies the whole WAL into the database file and fsyncs it before it returns: one batch
apply in ~25 takes 20-30 ms instead of 5, and an urgent write queued behind it waits that
long (DESIGN.md "Priorities"). The store turns the automatic checkpoint off on its writer
connection and pokes a :class:`Checkpointer` after each commit instead.

Theory of operation: the checkpointer owns a second connection to the same file, opened,
used and closed only on its own thread. On a poke it runs ``wal_checkpoint(PASSIVE)``,
which copies committed frames without taking the write lock, so the writer keeps committing
meanwhile; then it sleeps ``interval`` so that a burst of commits costs one checkpoint, not
one each. Once every frame has been copied the writer's next transaction starts the WAL
over from the beginning, so the file stays at a few intervals' worth of writes. Should the
WAL still pass ``limit_frames`` (a reader pinned old frames, the disk is slow) the
checkpointer falls back to ``wal_checkpoint(TRUNCATE)``, which waits for the writer (busy
timeout) and resets the file. A failed checkpoint is retried at the next poke; it never
loses data, since the frames stay in the WAL.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["Checkpointer"]


class Checkpointer:
    """Background checkpoints of one WAL database (see the module docstring).

    Start it after the database exists in WAL mode; :meth:`close` stops the thread and
    closes its connection (the store calls it before closing its own).
    """

    def __init__(
        self, path: str | Path, *, interval: float = 0.05, limit_frames: int = 32_768
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self.limit_frames = limit_frames
        self.runs = 0
        self.errors = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="meshsyncd-checkpoint")
        self._thread.daemon = True  # never keeps a crashed process alive; close() joins it
        self._thread.start()

    def poke(self) -> None:
        """A commit happened: checkpoint soon (never blocks)."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread after its current checkpoint and close its connection."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _main(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute("PRAGMA busy_timeout = 2000")
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                self._checkpoint(conn)
                # Coalesce: the commits of the next interval share one checkpoint.
                if self._stop.wait(self.interval):
                    return
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.runs += 1
            if frames > self.limit_frames:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            self.errors += 1
