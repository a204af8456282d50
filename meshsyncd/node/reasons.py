"""Why a configured peer is not connected, in the plain words the ``peers`` table shows.

Why: when X listed Y but Y did not list X, X showed ``backoff`` with ``BrokenResourceError``
and Y logged ``CERTIFICATE_VERIFY_FAILED``; neither said "not in the peer's config". The
dialer and the session end keep their raw error for ``--json`` (``last_error``); this module
turns it into the ``reason`` an operator can act on:

* ``connection refused at HOST:PORT`` (nothing listens there), ``cannot reach HOST:PORT: ...``
* ``refused by peer: our id is not in its config``: TLS 1.3 lets a client finish its side
  of the handshake before the server judges the client's certificate, so a peer that does
  not list us shows up after the handshake, before its HELLO, as the connection breaking
  (a TLS alert, or, as trio's server side closes without flushing the alert, a TLS EOF).
  A peer that accepts us always speaks HELLO first. (It is also what a peer that lists us
  does once, before it has learned our certificate; that resolves on the next dial and the
  reason goes away.)
* ``TLS: certificate does not match the configured id`` (someone else at that address)
* ``clock skew 3.2 s`` (either side refused the other's timestamps)

Pure functions of the exception and the address, so they are tested without a network.
"""

from __future__ import annotations

import re
import ssl

__all__ = ["dial_reason", "refusal_hint", "session_reason"]

_SKEW = re.compile(r"(-?\d+(?:\.\d+)?) ms ahead")
NOT_LISTED = "refused by peer: our id is not in its config"
WRONG_ID = "TLS: certificate does not match the configured id"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, its causes and contexts, and the members of any group among them."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        nxt = current.__cause__ or current.__context__
        if nxt is not None:
            todo.append(nxt)
    return seen


def _tls_alert(exc: BaseException) -> str | None:
    """The reason of a TLS alert the peer sent (``TLSV1_ALERT_UNKNOWN_CA``...), if any."""
    for link in _chain(exc):
        if isinstance(link, ssl.SSLError):
            reason = link.reason or str(link)
            if "ALERT" in reason.upper():
                return reason
    return None


def _tls_cut(exc: BaseException) -> bool:
    """The TLS connection broke under us: an alert, a TLS EOF or a reset."""
    return any(isinstance(link, ssl.SSLError | ConnectionResetError) for link in _chain(exc))


def _skew(text: str) -> str | None:
    match = _SKEW.search(text)
    if match is None:
        return None
    return f"clock skew {abs(float(match.group(1))) / 1000:.1f} s"


def dial_reason(exc: BaseException, address: str) -> str:
    """Why dialling ``address`` failed, for the peers table."""
    from .transport import HandshakeRefused  # transport imports cryptography; keep it lazy

    if any(isinstance(link, ConnectionRefusedError) for link in _chain(exc)):
        return f"connection refused at {address}"  # trio wraps it: "all attempts ... failed"
    if isinstance(exc, OSError):
        named = [link.strerror for link in _chain(exc) if isinstance(link, OSError)]
        detail = next((n for n in named if n), None) or str(exc) or type(exc).__name__
        return f"cannot reach {address}: {detail[:1].lower()}{detail[1:]}"
    if isinstance(exc, HandshakeRefused):
        text = str(exc)
        if " expected " in text:
            return f"{WRONG_ID} (the node at {address} has another id)"
        if _tls_alert(exc) is not None:
            return NOT_LISTED
        return f"TLS: {text}"
    if type(exc).__name__ == "TooSlowError":
        return f"no TLS answer from {address} in time"
    return str(exc) or type(exc).__name__


def session_reason(exc: BaseException, *, opened: bool) -> str:
    """Why a session ended (``opened``: the peer's HELLO had arrived)."""
    text = str(exc)
    skew = _skew(text)
    if skew is not None:
        return skew
    if text.startswith("peer said bye") and "shutting down" in text:
        return "the peer shut down"
    if text.startswith("peer said bye") and "removed from config" in text:
        return "refused by peer: it removed our id from its config"
    if not opened and _tls_cut(exc):
        return NOT_LISTED
    return text


def refusal_hint(claimed: str | None, address: str) -> str:
    """The command that would admit a node we refused (its host; the port is its own)."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if not claimed:
        return ""
    return f"meshsyncd peers add {claimed} {host}:PORT"
