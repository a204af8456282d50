"""The control socket: local programs and the CLI talk to the daemon here.

Protocol (full reference: ``docs/control.md``). A Unix stream socket, mode 0660. Each request
is one line of UTF-8 JSON (at most 2 MiB), answered by one line::

    -> {"id": 1, "op": "put", "tier": "episodic", "key": "notes", "value": "hello"}
    <- {"id": 1, "ok": true, "result": {"item_id": "...", "timestamp_ns": ..., ...}}
    <- {"id": 2, "ok": false, "error": {"code": "not_found", "message": "..."}}

Error codes: ``bad_request``, ``not_found``, ``too_large``, ``unknown_tier``,
``unavailable``, ``internal``. Values are bytes: a request sends ``value`` (text) or
``value_b64``; results carry ``value_b64`` and, when the bytes are UTF-8, ``value``. Ops:
``put get delete merge list status peers vectors conflicts sync sync_progress watch``, and
for interop ``import_versions changes`` (``interop.py``). After ``watch`` is
acknowledged the connection only streams ``{"event": "change", ...}`` lines until the client
closes it; a watcher that falls behind gets a final error line and is disconnected.

Theory of operation: one task per connection reads a line, handles it, writes the answer,
then reads the next one, so a connection holds at most one request in flight plus a read
buffer bounded by the line limit, and a client that stops reading only stalls itself (each
send has a deadline, after which the connection is closed). A line over the limit, a run of
bad requests, or a client beyond ``max_clients`` gets an error line and is disconnected; the
daemon and the store are untouched. Store work goes through ``AsyncEngine.run`` on the
node's writer thread (``ops.py``, which also declares the view of the daemon it needs).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from protocol import LocalProtocolError, ProtocolError

from ..conditions import FrozenError, PreconditionFailed
from ..engine import ItemNotFoundError
from .feed import ChangeFeed, FeedStatistics, change_event
from .interop import INTEROP_HANDLERS
from .ops import HANDLERS as _OPS_HANDLERS
from .ops import DaemonView
from .proto import MAX_LINE, ControlError, parse_tier
from .watch import run_watch

__all__ = [
    "ChangeFeed",
    "ControlServer",
    "ControlSocketError",
    "DaemonView",
    "FeedStatistics",
    "ServerStatistics",
    "change_event",
]

log: Any = structlog.get_logger("meshsyncd.control")

MAX_CLIENTS = 64
MAX_BAD_REQUESTS = 256  # consecutive bad lines before a connection is closed
SEND_TIMEOUT = 10.0
# Every operation but watch: the data and operator ops, and the whole-version interop ops.
HANDLERS = {**_OPS_HANDLERS, **INTEROP_HANDLERS}
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class ControlSocketError(Exception):
    """The control socket cannot be created (live daemon on it, or a non-socket file)."""


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """Connections now and in total, refused (over the limit), requests and error answers."""

    clients: int
    accepted: int
    refused: int
    requests: int
    errors: int
    watchers: int


class _Disconnect(Exception):
    """Internal: stop serving this connection (peer gone, send deadline, too much garbage)."""


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Newline-delimited reads with a hard line limit, checked before buffering more."""

    def __init__(self, stream: trio.abc.ReceiveStream, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self._buf = bytearray()
        self._scan = 0

    async def next_line(self) -> bytes | None:
        """The next line without its newline; ``None`` at end of stream.

        Raises:
            _LineTooLong: the line exceeds the limit (the rest of it is not read).
        """
        while True:
            nl = self._buf.find(b"\n", self._scan)
            if nl >= 0:
                if nl > self.limit:
                    raise _LineTooLong
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                self._scan = 0
                return line
            if len(self._buf) > self.limit:
                raise _LineTooLong
            self._scan = len(self._buf)
            data = await self.stream.receive_some(65536)
            if not data:
                if self._buf:
                    line, self._buf = bytes(self._buf), bytearray()
                    return line
                return None
            self._buf += data


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _error(req_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": {"code": code, "message": message}}


class ControlServer:
    """Serves the control protocol for one daemon on a Unix socket (see module docstring)."""

    def __init__(
        self,
        daemon: DaemonView,
        path: Path,
        *,
        max_clients: int = MAX_CLIENTS,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.daemon = daemon
        self.path = Path(path)
        self.max_clients = max_clients
        self.send_timeout = send_timeout
        self._clients = 0
        self._accepted = 0
        self._refused = 0
        self._requests = 0
        self._errors = 0
        self._watchers = 0
        self._inode: int | None = None

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            clients=self._clients,
            accepted=self._accepted,
            refused=self._refused,
            requests=self._requests,
            errors=self._errors,
            watchers=self._watchers,
        )

    # -- socket lifecycle ---------------------------------------------------------------

    async def _clear_stale(self) -> None:
        """Remove a socket file a dead daemon left behind; refuse a live or foreign one."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(f"{self.path} exists and is not a socket; not replacing it")
        probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        live = True
        try:
            with trio.move_on_after(2.0):
                await probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            live = False
        except OSError as exc:
            raise ControlSocketError(f"cannot probe the control socket {self.path}: {exc}") from exc
        finally:
            probe.close()
        if live:
            raise ControlSocketError(f"a daemon is already serving on {self.path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _bind(self) -> trio.socket.SocketType:
        await self._clear_stale()
        # Bind under a temporary name, fix the mode, then rename into place: the socket is
        # never reachable with the umask's mode. Fall back to the final name if the
        # temporary one would not fit in sun_path.
        tmp = self.path.with_name(self.path.name + ".new")
        if len(os.fsencode(tmp)) > 107:
            tmp = self.path
        with contextlib.suppress(FileNotFoundError):
            if tmp != self.path:
                os.unlink(tmp)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(tmp))
            os.chmod(tmp, 0o660)
            if tmp != self.path:
                os.replace(tmp, self.path)
            sock.listen(128)
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            sock.close()
            if tmp != self.path:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        return sock

    def _remove_socket_file(self) -> None:
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report readiness, serve until cancelled, then remove the socket file.

        Raises:
            ControlSocketError: a live daemon answers on the path, or it is not a socket.
            OSError: the socket cannot be bound (directory missing, permissions).
        """
        sock = await self._bind()
        listener = trio.SocketListener(sock)
        try:
            log.info("control socket ready", path=str(self.path))
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno not in _ACCEPT_RETRY:
                            raise
                        log.warning("control accept failed", error=str(exc))
                        await trio.sleep(0.1)
                        continue
                    if self._clients >= self.max_clients:
                        self._refused += 1
                        nursery.start_soon(self._refuse, stream)
                    else:
                        self._clients += 1
                        self._accepted += 1
                        nursery.start_soon(self._handle, stream)
        finally:
            self._remove_socket_file()
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def _refuse(self, stream: trio.SocketStream) -> None:
        try:
            msg = f"too many control clients (limit {self.max_clients}); try again later"
            with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(_line(_error(None, "unavailable", msg)))
        finally:
            await stream.aclose()

    # -- one connection -----------------------------------------------------------------

    async def _send(self, stream: trio.abc.SendStream, obj: dict[str, Any]) -> None:
        with trio.move_on_after(self.send_timeout) as scope:
            try:
                await stream.send_all(_line(obj))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _Disconnect from exc
        if scope.cancelled_caught:
            raise _Disconnect

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_connection(stream)
        except (_Disconnect, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._clients -= 1
            await stream.aclose()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        reader = _LineReader(stream, MAX_LINE)
        bad_run = 0
        while True:
            try:
                line = await reader.next_line()
            except _LineTooLong:
                self._errors += 1
                msg = f"request line longer than {MAX_LINE} bytes; closing the connection"
                await self._send(stream, _error(None, "too_large", msg))
                return
            if line is None:
                return
            if not line.strip():
                continue
            self._requests += 1
            req_id, op, params, problem = self._parse(line)
            if problem is not None:
                self._errors += 1
                bad_run += 1
                await self._send(stream, _error(req_id, "bad_request", problem))
                if bad_run >= MAX_BAD_REQUESTS:
                    msg = f"{bad_run} bad requests in a row; closing the connection"
                    await self._send(stream, _error(None, "bad_request", msg))
                    return
                continue
            if op == "watch":
                await self._watch(stream, req_id, params)
                return
            bad_run = 0
            await self._send(stream, await self._dispatch(req_id, op, params))

    def _parse(self, line: bytes) -> tuple[Any, str, dict[str, Any], str | None]:
        """``(id, op, params, problem)``; ``problem`` is None for a well-formed request."""
        try:
            req = json.loads(line)
        except (ValueError, RecursionError) as exc:
            return None, "", {}, f"request is not valid JSON: {exc}"[:300]
        if not isinstance(req, dict):
            return None, "", {}, "request must be a JSON object"
        req_id = req.get("id")
        if req_id is not None and not isinstance(req_id, int | str):
            return None, "", {}, "id must be an integer or a string"
        op = req.get("op")
        if not isinstance(op, str) or (op not in HANDLERS and op != "watch"):
            known = ", ".join(sorted([*HANDLERS, "watch"]))
            return req_id, "", {}, f"unknown op {op!r} (expected one of {known})"[:400]
        return req_id, op, req, None

    async def _dispatch(self, req_id: Any, op: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await HANDLERS[op](self.daemon, params)
        except ControlError as exc:
            self._errors += 1
            return _error(req_id, exc.code, exc.message)
        except ItemNotFoundError as exc:
            self._errors += 1
            return _error(req_id, "not_found", str(exc.args[0]) if exc.args else "not found")
        except (PreconditionFailed, FrozenError) as exc:
            self._errors += 1
            return _error(req_id, exc.code, str(exc))
        except (LocalProtocolError, ProtocolError) as exc:
            self._errors += 1
            return _error(req_id, "bad_request", str(exc))
        except sqlite3.Error as exc:
            self._errors += 1
            log.error("control request failed in the store", op=op, error=str(exc))
            return _error(req_id, "internal", f"store error: {exc}")
        except Exception as exc:
            # A bug: answer it, log it loudly, keep the daemon serving other clients.
            self._errors += 1
            log.exception("control request crashed", op=op)
            return _error(req_id, "internal", f"internal error: {type(exc).__name__}")
        return {"id": req_id, "ok": True, "result": result}

    async def _watch(self, stream: trio.SocketStream, req_id: Any, params: dict[str, Any]) -> None:
        """Stream change events until the client closes, or drop it if it falls behind.

        With ``since``, ``namespace`` or ``values`` the watch is resumable (``watch.py``):
        it replays from the store and is never dropped. Without, it is the live feed.
        """
        if any(params.get(k) is not None for k in ("since", "namespace", "values")):
            await self._watch_resumable(stream, req_id, params)
            return
        try:
            tier = None if params.get("tier") is None else parse_tier(params["tier"])
        except ControlError as exc:
            self._errors += 1
            await self._send(stream, _error(req_id, exc.code, exc.message))
            return
        dropped = False

        def on_drop() -> None:
            nonlocal dropped
            dropped = True

        self._watchers += 1
        try:
            async with trio.open_nursery() as nursery:
                with self.daemon.feed.subscribe(tier, on_drop=on_drop) as events:
                    watching = None if tier is None else tier.name.lower()
                    await self._send(
                        stream, {"id": req_id, "ok": True, "result": {"watching": watching}}
                    )
                    nursery.start_soon(self._wait_closed, stream, nursery.cancel_scope)
                    async for event in events:
                        if dropped:
                            break
                        await self._send(stream, {"event": "change", **event})
                    nursery.cancel_scope.cancel()
        finally:
            self._watchers -= 1
        if dropped:
            self._errors += 1
            msg = f"watcher fell more than {self.daemon.feed.buffer} events behind; dropped"
            await self._send(stream, _error(req_id, "unavailable", msg))

    async def _watch_resumable(
        self, stream: trio.SocketStream, req_id: Any, params: dict[str, Any]
    ) -> None:
        first = True
        scope = trio.CancelScope()

        async def say(line: dict[str, Any]) -> None:
            try:
                await self._send(stream, line)
            except _Disconnect:  # the client went away (or stalled): end this watch only
                scope.cancel()
                await trio.lowlevel.checkpoint()

        async def send(line: dict[str, Any]) -> None:
            nonlocal first
            if first:
                first = False
                line = {"id": req_id, "ok": True, "result": line}
            await say(line)

        self._watchers += 1
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._wait_closed, stream, nursery.cancel_scope)
                    try:
                        await run_watch(self.daemon.engine, self.daemon.feed, params, send)
                    except (ControlError, ProtocolError) as exc:
                        self._errors += 1
                        code = exc.code if isinstance(exc, ControlError) else "bad_request"
                        await say(_error(req_id, code, str(exc)))
                        nursery.cancel_scope.cancel()
        finally:
            self._watchers -= 1

    async def _wait_closed(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        """While watching, input is ignored; end of input ends the watch."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while await stream.receive_some(65536):
                pass
        scope.cancel()
