"""sd_notify spoken directly over ``$NOTIFY_SOCKET``: readiness, status, watchdog, reload, stop.

Why not libsystemd: the protocol is one ``AF_UNIX`` datagram of ``KEY=VALUE`` lines sent
to the address in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket), which is
less code than a binding and keeps the daemon free of a C dependency. Outside systemd the
variable is unset and every method here does nothing.

Why synchronous: a datagram to a local socket is queued by the kernel and never waits on the
receiver. The socket is non-blocking, so a full queue (systemd stalled) costs one counted
failure instead of a stuck event loop. Sending never raises into the daemon: a failure is
counted in :meth:`Notifier.statistics` and logged once, because losing a STATUS line must not
stop replication. A lost ``WATCHDOG=1`` is retried at the next ping, and the interval is half
the timeout, so one lost ping is not fatal.

Messages (``sd_notify(3)``): ``READY=1`` after the store is open and the listener bound;
``STATUS=...`` free text; ``WATCHDOG=1`` from the event loop itself so that a stuck loop
misses pings and systemd restarts the service; ``RELOADING=1`` with ``MONOTONIC_USEC=`` (the
pair systemd 253 and later require for ``Type=notify-reload``; older versions ignore the
extra key), then ``READY=1`` when the reload is done; ``STOPPING=1`` at shutdown.
"""

from __future__ import annotations

import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
import trio

__all__ = ["Notifier"]

log: Any = structlog.get_logger("meshsyncd.notify")


class Notifier:
    """Send service-manager notifications; a no-op when ``$NOTIFY_SOCKET`` is unset.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog = _watchdog_interval(env)
        self.sent = 0
        self.failures = 0
        self.last_error = ""

    @property
    def enabled(self) -> bool:
        """True when there is a service manager to talk to."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None.

        None when the watchdog is off, or when ``$WATCHDOG_PID`` names another process (the
        variables were inherited, not meant for us).
        """
        return self._watchdog

    # -- the messages -----------------------------------------------------------------------

    def ready(self, status: str = "") -> bool:
        """``READY=1`` (and ``STATUS=`` when given): start-up or a reload is complete."""
        return self.send("READY=1", *_status_line(status))

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=``; follow with :meth:`ready` when done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun, so systemd stops expecting watchdog pings."""
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``."""
        return self.send(*_status_line(text))

    def watchdog_ping(self) -> bool:
        """``WATCHDOG=1``: the event loop is alive."""
        return self.send("WATCHDOG=1")

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True if it went out.

        Never raises: an unset socket returns False, a failed send is counted and logged (the
        first time, and whenever the error changes).
        """
        if self.address is None or not lines:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            # A socket per message, like libsystemd: nothing to close at shutdown, and a
            # restarted service manager is reached afresh. Cheap at our rate (seconds apart).
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, self.address)
        except OSError as exc:
            self.failures += 1
            error = f"{type(exc).__name__}: {exc}"
            if error != self.last_error:
                log.warning("sd_notify failed", error=error, socket=_show(self.address))
            self.last_error = error
            return False
        self.sent += 1
        return True

    def statistics(self) -> dict[str, Any]:
        """Counters for logs and tests: datagrams sent, failures, the last error."""
        return {
            "enabled": self.enabled,
            "sent": self.sent,
            "failures": self.failures,
            "last_error": self.last_error,
            "watchdog_interval": self._watchdog,
        }

    # -- loops for the daemon's nursery -----------------------------------------------------

    async def watchdog_loop(self) -> None:
        """Ping at :attr:`watchdog_interval` until cancelled; returns at once if there is none.

        Runs as an ordinary task on the event loop on purpose: if the loop is stuck, the
        pings stop and systemd kills and restarts the service.
        """
        interval = self._watchdog
        if interval is None or self.address is None:
            return
        while True:
            self.watchdog_ping()
            await trio.sleep(interval)

    async def status_loop(
        self, describe: Callable[[], str | Awaitable[str]], every: float = 5.0
    ) -> None:
        """Send ``STATUS=describe()`` every ``every`` seconds when it changed, until cancelled.

        ``describe`` may be a coroutine function (to read the store off the loop); a plain
        function runs on the event loop, so it must be cheap (read counters, no I/O).
        """
        if self.address is None:
            return
        last = None
        while True:
            text = describe()
            if inspect.isawaitable(text):
                text = await text
            if text != last and self.status(text):
                last = text
            await trio.sleep(every)


def _address(value: str) -> str | bytes | None:
    """The ``sendto`` address for ``$NOTIFY_SOCKET``; ``@name`` is abstract (leading NUL)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value:  # vsock: and other schemes are not ours to speak; stay quiet, say so once
        log.warning("NOTIFY_SOCKET not understood, notifications off", socket=value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def _status_line(text: str) -> tuple[str, ...]:
    # STATUS is one line; a newline would start a bogus KEY=VALUE pair.
    return (f"STATUS={' '.join(text.split())}",) if text else ()


def _show(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address
