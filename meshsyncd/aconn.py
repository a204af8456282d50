"""One async connection to a node's control socket: newline-delimited JSON over anyio.

The transport under :class:`meshsyncd.aclient.AsyncClient` and its :class:`Watch`: connect
(mapping a missing socket, a refusal and a permission error to the client's errors), send
one request line, read one answer line of at most ``MAX_RESPONSE`` bytes, and turn every
way a connection can break into :class:`ConnectionLost` naming the socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from .calls import (
    ClientError,
    ConnectionLost,
    DaemonNotRunning,
    PermissionDenied,
    Unreachable,
    error_for,
)
from .client import MAX_RESPONSE

__all__ = ["Conn", "connect", "result_of"]

_LOST = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


async def connect(path: Path) -> ByteStream:
    try:
        return await anyio.connect_unix(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonNotRunning(
            "daemon_not_running", f"daemon not running: no control socket at {path}"
        ) from exc
    except PermissionError as exc:
        raise PermissionDenied(
            "permission_denied",
            f"permission denied on the control socket {path}: {exc.strerror or exc}",
        ) from exc
    except OSError as exc:
        raise Unreachable("unavailable", f"cannot connect to {path}: {exc}") from exc


class Conn:
    """One connection: newline-delimited JSON in and out."""

    def __init__(self, path: Path, stream: ByteStream) -> None:
        self.path = path
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)

    async def send(self, body: dict[str, Any]) -> None:
        try:
            await self.stream.send(json.dumps(body, separators=(",", ":")).encode() + b"\n")
        except _LOST as exc:
            raise self.lost(exc) from exc

    async def read(self) -> dict[str, Any]:
        try:
            line = await self.reader.receive_until(b"\n", MAX_RESPONSE)
        except anyio.DelimiterNotFound:
            raise ClientError("internal", "daemon response line too long") from None
        except anyio.IncompleteRead as exc:
            raise self.lost(exc) from exc
        except _LOST as exc:
            raise self.lost(exc) from exc
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ClientError("internal", f"daemon sent bad JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ClientError("internal", "daemon sent a non-object line")
        return obj

    def lost(self, exc: BaseException) -> ConnectionLost:
        why = str(exc) or type(exc).__name__
        return ConnectionLost(
            "unavailable", f"lost the connection to the daemon at {self.path}: {why}"
        )

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()


def result_of(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("ok"):
        result = reply.get("result")
        return result if isinstance(result, dict) else {}
    err = reply.get("error") or {}
    raise error_for(str(err.get("code", "internal")), str(err.get("message", "failed")))
