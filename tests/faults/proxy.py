"""A fault-injecting TCP proxy on 127.0.0.1 for putting faults between two real daemons.

Theory of operation: the proxy listens on a loopback port and, for every connection it
accepts, opens one to the target and runs two pump threads (one per direction). A pump
reads what one side sent and writes it to the other, subject to the proxy's current mode:

* ``forward``: pass bytes on, after ``delay`` seconds per chunk and throttled to ``rate``
  bytes per second when set.
* ``drop``: stop forwarding and hold. Bytes already read wait in the pump, the rest waits
  in the kernel's socket buffers; both TCP connections stay open (a black hole, as a
  pulled cable looks to TCP). New connections are accepted and held the same way.
* ``cut``: close both sides of every live connection now; while cut, a new connection is
  accepted and closed at once (a partition that the daemons notice immediately).

``resume()`` returns to ``forward``: held bytes flow on, in order, nothing lost. Faults
apply to both directions of every connection through this proxy; to partition two
daemons, cut the proxy each of them dials the other through.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

__all__ = ["FaultProxy"]

CHUNK = 65536


class _Pair:
    """One proxied connection: the accepted client socket and the upstream socket."""

    def __init__(self, down: socket.socket, up: socket.socket) -> None:
        self.down = down
        self.up = up
        self._lock = threading.Lock()
        self._done = 0

    def kill(self) -> None:
        """Close both sides now (the pumps notice and exit)."""
        for s in (self.down, self.up):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def pump_finished(self) -> None:
        """Both pumps done: close the sockets (the last pump out closes them)."""
        with self._lock:
            self._done += 1
            last = self._done == 2
        if last:
            self.down.close()
            self.up.close()


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port`` with injectable faults."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._mode = "forward"
        self.delay = 0.0
        self.rate: float | None = None
        self.bytes_forwarded = 0
        self.connections = 0
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    # -- faults -----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def drop(self) -> None:
        """Stop forwarding and hold everything (connections stay open)."""
        with self._cond:
            self._mode = "drop"

    def cut(self) -> None:
        """Close both sides of every live connection; refuse new ones until :meth:`resume`."""
        with self._cond:
            self._mode = "cut"
            pairs = list(self._pairs)
        for pair in pairs:
            pair.kill()

    def resume(self, *, delay: float = 0.0, rate: float | None = None) -> None:
        """Forward again (held bytes first), with ``delay`` s per chunk and ``rate`` B/s."""
        with self._cond:
            self.delay = delay
            self.rate = rate
            self._mode = "forward"
            self._cond.notify_all()

    def close(self) -> None:
        """Stop accepting, close every connection and wait for the threads."""
        with self._cond:
            self._closed = True
            self._mode = "cut"
            self._cond.notify_all()
            pairs = list(self._pairs)
        for pair in pairs:
            pair.kill()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- threads ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._mode == "cut":
                down.close()
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            down.settimeout(None)
            pair = _Pair(down, up)
            with self._cond:
                if self._closed or self._mode == "cut":
                    pair.kill()
                    down.close()
                    up.close()
                    continue
                self._pairs.add(pair)
                self.connections += 1
            for src, dst in ((down, up), (up, down)):
                t = threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True)
                self._threads.append(t)
                t.start()

    def _wait_forwarding(self) -> bool:
        """Block while dropping; False once the connection must die (cut or closed)."""
        with self._cond:
            while self._mode == "drop":
                self._cond.wait()
            return self._mode == "forward"

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while self._wait_forwarding():
                size = CHUNK if self.rate is None else max(1, min(CHUNK, int(self.rate / 10)))
                try:
                    data = src.recv(size)
                except OSError:
                    break
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    break
                if not self._wait_forwarding():  # dropped while reading: hold this chunk
                    break
                if self.delay:
                    time.sleep(self.delay)
                try:
                    dst.sendall(data)
                except OSError:
                    break
                with self._cond:
                    self.bytes_forwarded += len(data)
                if self.rate is not None:
                    time.sleep(len(data) / self.rate)
        finally:
            pair.kill()
            with self._cond:
                self._pairs.discard(pair)
            pair.pump_finished()
