"""How a session ends, as exceptions shared by the session, its lanes and the daemon."""

from __future__ import annotations

__all__ = ["DuplicateSession", "SessionClosed"]


class DuplicateSession(Exception):
    """Raised by an ``on_open`` hook: another session with this peer is kept instead."""


class SessionClosed(Exception):
    """The session ended; ``reason`` says why (peer BYE, protocol error, skew, EOF)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
