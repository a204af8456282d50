"""Admission of unauthenticated connections: a bounded number of TLS handshakes in progress.

Theory of operation. Until a TLS handshake completes, the daemon does not know who is
calling, yet the handshake already costs it a task, a socket, an OpenSSL connection object
and the key exchange. Anyone who can reach the listen port can open such connections, so
their number is bounded here, before any of that is spent (``[handshakes]`` in the config):

* at most ``max`` handshakes in progress at once, and at most ``max_per_source`` from one
  source: an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64, so counting
  single IPv6 addresses would bound nothing);
* ``reserved`` of the ``max`` slots are open only to *known* sources: the address of a
  configured peer (as written in the config, when it is an IP literal) and any source a
  peer has completed an authenticated handshake from (the ``KNOWN_SOURCES`` most recent).
  A flood from anywhere else fills the other slots and no more, so a configured peer still
  gets in; both sides dial, so the peer's dialer is a second way in;
* a handshake from an unknown source must finish within ``first_contact_timeout`` (3 s),
  one from a known source within ``timeout`` (10 s): slots held by clients that never
  finish come back sooner, while a slow link to a known peer keeps the longer deadline.

A connection beyond a limit is closed at once, before any TLS byte is read (no SSL object,
no timer); like a failed handshake it is counted by reason (``REFUSALS``, a metrics label)
and logged through :class:`~meshsyncd.node.refusals.RefusalLog`, which aggregates floods.
What this cannot do: tell a peer from an attacker behind the same address (both count as
known there); the per-source limit still bounds that attacker, and the firewall advice in
docs/operations.md stays the real boundary.

Memory: every ended handshake is reported to :class:`~meshsyncd.node.heap.HeapRelief`, which
gives the memory of a burst back to the OS once it is over (see that module for why this
is needed and what was measured).

:class:`Admission` is the state and the decisions, with no I/O; :class:`HandshakeGate`
drives it on the accept path of the daemon (``links.py``).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from ..config import HandshakeLimits
from ..identity import parse_node_id
from ..metrics import HANDSHAKE_REFUSALS as REFUSALS
from .heap import HeapRelief
from .reasons import refusal_hint
from .refusals import RefusalLog
from .transport import HandshakeRefused, TrustStore, accept_tls

__all__ = [
    "KNOWN_SOURCES",
    "REFUSALS",
    "Admission",
    "AdmissionRefused",
    "AdmissionStats",
    "HandshakeGate",
    "classify",
    "source_of",
]

KNOWN_SOURCES = 1024
_PREFIX = "TLS handshake failed: "

log: Any = structlog.get_logger("meshsyncd.admission")


class AdmissionRefused(HandshakeRefused):
    """A connection closed before its handshake began: a ``[handshakes]`` limit was reached.

    ``kind`` is ``"limit"`` (all slots open to this source are taken) or ``"source_limit"``.
    """

    def __init__(self, message: str, *, address: str, kind: str) -> None:
        super().__init__(message, address=address)
        self.kind = kind


def source_of(host: str) -> str:
    """The key a connection is counted under: the IPv4 address, or the IPv6 /64.

    An IPv4-mapped IPv6 address counts as its IPv4 address; a zone (``%eth0``) is dropped.
    Something that is not an IP address (it should not happen for TCP) is its own key.
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def classify(exc: HandshakeRefused) -> str:
    """The ``REFUSALS`` reason of a refused handshake, from what caused it."""
    if isinstance(exc, AdmissionRefused):
        return exc.kind
    cause = exc.__cause__
    if isinstance(cause, trio.TooSlowError):
        return "timeout"
    if isinstance(cause, ssl.SSLError | trio.BrokenResourceError):
        return "tls"
    return "untrusted"  # handshake done, but not a configured peer (or its SNI lied)


@dataclass(frozen=True)
class AdmissionStats:
    """``Admission.statistics()``: handshakes in progress, sources holding them, known ones."""

    in_progress: int
    sources: int
    known: int


class Admission:
    """Who is mid-handshake, and which sources are known; decides admit or refuse."""

    def __init__(self, limits: HandshakeLimits, peer_hosts: Iterable[str] = ()) -> None:
        self.limits = limits
        self.in_progress = 0
        self._held: dict[str, int] = {}
        self._peer_sources: frozenset[str] = frozenset()
        self._learned: OrderedDict[str, None] = OrderedDict()
        self.configure(limits, peer_hosts)

    def configure(self, limits: HandshakeLimits, peer_hosts: Iterable[str]) -> None:
        """New limits and peer addresses (a reload); handshakes in progress keep their slots."""
        self.limits = limits
        self._peer_sources = frozenset(source_of(h) for h in peer_hosts)

    def is_known(self, source: str) -> bool:
        """A configured peer's address, or one a peer completed a handshake from."""
        return source in self._peer_sources or source in self._learned

    def admit(self, source: str) -> str | None:
        """Take a slot for a handshake from ``source``: None if taken, else why not
        (``"source_limit"`` or ``"limit"``). A taken slot must be given back (``release``)."""
        held = self._held.get(source, 0)
        if held >= self.limits.max_per_source:
            return "source_limit"
        cap = self.limits.max
        if not self.is_known(source):
            cap -= self.limits.reserved
        if self.in_progress >= cap:
            return "limit"
        self._held[source] = held + 1
        self.in_progress += 1
        return None

    def release(self, source: str) -> None:
        """The handshake from ``source`` ended (done, failed or cancelled)."""
        held = self._held.pop(source, 0) - 1
        if held > 0:
            self._held[source] = held
        self.in_progress = max(0, self.in_progress - 1)

    def learn(self, source: str) -> None:
        """A configured peer authenticated from ``source``: treat it as known from now on."""
        self._learned[source] = None
        self._learned.move_to_end(source)
        while len(self._learned) > KNOWN_SOURCES:
            self._learned.popitem(last=False)

    def timeout_for(self, source: str) -> float:
        """The handshake deadline for ``source`` (shorter for a first contact)."""
        if self.is_known(source):
            return self.limits.timeout
        return self.limits.first_contact_timeout

    def statistics(self) -> AdmissionStats:
        return AdmissionStats(
            in_progress=self.in_progress,
            sources=len(self._held),
            known=len(self._peer_sources | self._learned.keys()),
        )


class HandshakeGate:
    """The accept path's front door: admission, the handshake, counting and logging refusals.

    ``count(reason)`` is called once per refused connection (the daemon's metrics counter).
    ``is_peer(claimed)`` says whether the node id a refused client claimed (SNI) is a
    configured peer: its refused probe is the normal first contact (``transport.py``), so it
    is logged at info like any refusal from an unknown source; the rest at warning.
    """

    def __init__(
        self,
        limits: HandshakeLimits,
        peer_hosts: Iterable[str],
        *,
        count: Callable[[str], None],
        is_peer: Callable[[bytes], bool],
        refusals: RefusalLog | None = None,
        relief: HeapRelief | None = None,
    ) -> None:
        self.admission = Admission(limits, peer_hosts)
        self.refusals = refusals if refusals is not None else RefusalLog()
        self.relief = relief if relief is not None else HeapRelief()
        self._count = count
        self._is_peer = is_peer

    async def run(self) -> None:
        """The gate's background work until cancelled: aggregated log lines, heap relief."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.refusals.run)
            nursery.start_soon(self.relief.run, lambda: self.admission.in_progress)

    async def accept(
        self, trust: TrustStore, tcp: trio.SocketStream
    ) -> tuple[trio.SSLStream[trio.SocketStream], bytes]:
        """Admit ``tcp`` and run the server side of its TLS handshake; the peer's node id.

        Raises:
            AdmissionRefused: a limit was reached; the connection is already closed.
            HandshakeRefused: the handshake failed or the client is not a configured peer.
        """
        host, address = _remote(tcp)
        source = source_of(host)
        known = self.admission.is_known(source)
        kind = self.admission.admit(source)
        if kind is not None:
            label = "source limit" if kind == "source_limit" else "limit"
            self._refused(kind, label, source, address, None, known)
            await trio.aclose_forcefully(tcp)
            where = f"from {source}" if kind == "source_limit" else "in progress"
            raise AdmissionRefused(f"too many handshakes {where}", address=address, kind=kind)
        try:
            stream, pid = await accept_tls(trust, tcp, timeout=self.admission.timeout_for(source))
        except HandshakeRefused as exc:
            reason = str(exc).removeprefix(_PREFIX)
            self._refused(classify(exc), reason, source, exc.address, exc.claimed, known)
            raise
        finally:
            self.admission.release(source)
            self.relief.note_ended()
        self.admission.learn(source)
        return stream, pid

    def reconfigure(self, limits: HandshakeLimits, peer_hosts: Iterable[str]) -> None:
        """Take new limits and peer addresses from a reloaded config."""
        self.admission.configure(limits, peer_hosts)

    def _refused(
        self,
        kind: str,
        reason: str,
        source: str,
        address: str,
        claimed: str | None,
        known: bool,
    ) -> None:
        self._count(kind)
        noise = not known or self._claims_peer(claimed)
        details: dict[str, str] = {}
        if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason:
            noise, details["note"] = True, "certificate probe: it learns ours"
        elif self._claims_peer(claimed):
            details["note"] = "first contact: learning its certificate"
        elif claimed and _is_node_id(claimed):
            # A node that lists us but is not in our config: the operator has a decision to
            # make, so say which node and the command that would admit it (a warning).
            noise = False
            details |= {
                "note": "node not in the config",
                "node": claimed,
                "admit": refusal_hint(claimed, address),
            }
        self.refusals.refused(
            source=source,
            address=address,
            claimed=claimed,
            reason=reason,
            noise=noise,
            details=details,
        )

    def _claims_peer(self, claimed: str | None) -> bool:
        if not claimed:
            return False
        try:
            return self._is_peer(parse_node_id(claimed))
        except ValueError:
            return False


def _remote(tcp: trio.SocketStream) -> tuple[str, str]:
    """The client's host and ``host:port`` (``"?"`` if the socket is already gone)."""
    try:
        host, port = tcp.socket.getpeername()[:2]
    except OSError:
        return "?", "?"
    return str(host), f"{host}:{port}"


def _is_node_id(text: str) -> bool:
    try:
        parse_node_id(text)
    except ValueError:
        return False
    return True
