"""The one error family of the wire format (SPEC.md, "Errors").

Every malformed input raises a subclass of :class:`ProtocolError`; any other exception
escaping a decoder is a bug (and the fuzz invariant). Errors carry the offending field
name and the byte offset where it starts, so an operator can find the bad byte in a hex
dump without a debugger.

The split follows h11: :class:`RemoteProtocolError` means the peer (or a file) sent
garbage and the connection should be closed; :class:`LocalProtocolError` means our own
code asked to send something invalid, which is a bug on our side.
"""

from __future__ import annotations

__all__ = [
    "BadFieldError",
    "BadMagicError",
    "ChecksumError",
    "CompressionError",
    "LimitError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SessionStateError",
    "TruncatedError",
    "VersionError",
]


class ProtocolError(Exception):
    """Root of every wire-format error.

    ``field`` names the offending field (``"item.tier"``, ``"frame.length"``), ``offset``
    is the byte offset of that field in the buffer handed to the decoder, or ``None``
    when the error is not about one position (an illegal state transition, say).
    """

    def __init__(self, message: str, *, field: str = "", offset: int | None = None) -> None:
        self.field = field
        self.offset = offset
        self.reason = message
        where = ""
        if field:
            where = field if offset is None else f"{field} at offset {offset}"
            where += ": "
        super().__init__(where + message)


class RemoteProtocolError(ProtocolError):
    """The bytes we received are invalid; close the connection that sent them."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode or send something the protocol does not allow."""


class TruncatedError(RemoteProtocolError):
    """The buffer ends before the structure it declares."""


class BadFieldError(RemoteProtocolError):
    """A field holds a value outside its documented domain."""


class ChecksumError(RemoteProtocolError):
    """A CRC-32 does not match the bytes it covers."""


class LimitError(RemoteProtocolError):
    """A declared length, count or size is above the protocol maximum.

    Raised before any memory is allocated for the declared amount.
    """


class CompressionError(RemoteProtocolError):
    """A zstd body is corrupt, lacks its content size, or inflates beyond its bound."""


class BadMagicError(RemoteProtocolError):
    """The first bytes are not a meshsyncd structure at all ("not a meshsyncd peer")."""


class VersionError(RemoteProtocolError):
    """A known magic with a version we do not speak ("too old" or "too new")."""


class SessionStateError(RemoteProtocolError):
    """A frame arrived that the session state machine does not allow now."""
