"""The node directory's lock: one daemon per node directory, taken before anything else.

Why: two daemons on one node directory would share a store, a control socket and a pid file,
and the second one, failing to bind, used to delete the first one's pid file on its way out,
so ``peers add`` no longer reached the running daemon. ``meshsyncd run`` therefore takes an
advisory ``fcntl.flock`` on ``<node_dir>/meshsyncd.lock`` before it opens the store or binds
a socket, and holds it until the process ends. A second ``run`` fails at once with the pid
of the holder and touches nothing the running daemon owns.

The kernel drops a ``flock`` when its holder dies, however it dies, so a lock left by a
``kill -9``-ed daemon is no lock at all: the next ``run`` takes it without a manual step. The
lock file itself stays (removing it would race with a starter that has it open); its
content is the holder's pid, written after the lock is taken, for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_FILE", "NodeBusy", "NodeLock", "NodeLockError"]

LOCK_FILE = "meshsyncd.lock"


class NodeLockError(Exception):
    """The node directory cannot be locked (the message is one line for the operator)."""


class NodeBusy(NodeLockError):
    """Another daemon holds the node directory; ``pid`` is its pid when it could be read."""

    def __init__(self, node_dir: Path, pid: int | None) -> None:
        self.node_dir = node_dir
        self.pid = pid
        who = f" (pid {pid})" if pid is not None else ""
        super().__init__(f"node {node_dir} is already running{who}")


class NodeLock:
    """An exclusive, non-blocking ``flock`` on ``<node_dir>/meshsyncd.lock``.

    Use as a context manager or call :meth:`acquire` and :meth:`release`; the lock is also
    released when the process exits.
    """

    def __init__(self, node_dir: Path) -> None:
        self.node_dir = Path(node_dir)
        self.path = self.node_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record our pid in the lock file.

        Raises:
            NodeBusy: another process holds the lock.
            NodeLockError: the lock file cannot be opened (missing or unwritable directory).
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise NodeLockError(f"cannot lock node {self.node_dir}: {self.path}: {reason}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise NodeBusy(self.node_dir, pid) from None
        except OSError as exc:
            os.close(fd)
            reason = exc.strerror or str(exc)
            raise NodeLockError(f"cannot lock node {self.node_dir}: {reason}") from exc
        with contextlib.suppress(OSError):  # the pid is for messages; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file releases it); the file stays for the next run."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> NodeLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
