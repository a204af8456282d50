"""Startup failures as one line naming the thing that failed, for ``meshsyncd run``.

Why: an operator whose listen port is taken used to get a 54-line ``ExceptionGroup``
traceback that named neither the address nor which of the daemon's sockets it was. Each
step of the daemon's start that touches the outside world (the store, the peer listener, the
control socket, the metrics endpoint) runs under :func:`step`, which turns the OS or SQLite
error into a :class:`StartupError` whose message says what and where, e.g. ``cannot listen
on 127.0.0.1:7701 (peer listener): address already in use``. ``run`` prints that line once
and exits 2, the status the systemd unit does not restart on (``RestartPreventExitStatus=``):
a taken port or an unwritable store does not fix itself in two seconds.

Trio reports a failure in a nursery as an ``ExceptionGroup``; :func:`find_startup_error`
looks through nested groups for the one :class:`StartupError`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "EXIT_STARTUP",
    "STORE_ERRORS",
    "StartupError",
    "check_store_path",
    "find_startup_error",
    "first_os_error",
    "os_reason",
    "step",
]

EXIT_STARTUP = 2
"""Exit status for a failure the operator must fix (config, ports, paths, a running twin)."""

STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)
"""What opening the store can raise besides a :class:`StartupError`."""


class StartupError(Exception):
    """The daemon cannot start; ``str()`` is the one line the operator sees."""


def os_reason(exc: BaseException) -> str:
    """``address already in use`` from an OSError, the message of anything else."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        return text[:1].lower() + text[1:]
    return str(exc) or type(exc).__name__


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def find_startup_error(exc: BaseException) -> StartupError | None:
    """The :class:`StartupError` in ``exc`` or in any group nested in it, if there is one."""
    for leaf in _leaves(exc):
        if isinstance(leaf, StartupError):
            return leaf
    return None


def first_os_error(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc`` or in any group nested in it, if there is one."""
    for leaf in _leaves(exc):
        if isinstance(leaf, OSError):
            return leaf
    return None


@contextlib.contextmanager
def step(what: str, *kinds: type[BaseException]) -> Iterator[None]:
    """Turn an exception of ``kinds`` (also inside a group) into ``StartupError(what: reason)``.

    Anything else, ``trio.Cancelled`` and ``KeyboardInterrupt`` included, passes unchanged.
    """
    try:
        yield
    except BaseException as exc:
        if find_startup_error(exc) is not None:
            raise
        for leaf in _leaves(exc):
            if isinstance(leaf, kinds):
                raise StartupError(f"{what}: {os_reason(leaf)}") from leaf
        raise


def check_store_path(path: Path) -> None:
    """Fail early, naming the path and the OS error, when the store cannot be opened.

    SQLite says only "unable to open database file"; the OS says which of missing
    directory, permission or not-a-directory it is. The store's directory must be writable
    too: SQLite keeps its ``-wal`` and ``-shm`` files beside the database.

    Raises:
        StartupError: the file cannot be opened for writing or its directory is unusable.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartupError(f"cannot open the store {path}: {os_reason(exc)}") from exc
    os.close(fd)
    directory = path.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(
            f"cannot open the store {path}: directory {directory} is not writable "
            "(SQLite keeps its -wal and -shm files there)"
        )
