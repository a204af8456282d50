"""Mutually authenticated TLS 1.3 between nodes, pinned by node id (DESIGN.md "Identity").

Theory of operation: every node has a self-signed Ed25519 certificate, and a node id is the
SHA-256 of its public key, so a certificate whose key hashes to a configured id *is* that
peer's certificate. OpenSSL verifies client and server certificates against a trust store
holding exactly the certificates of configured peers (``VERIFY_X509_PARTIAL_CHAIN`` lets a
self-signed certificate be its own anchor), and after the handshake we check again that the
certificate's node id is the one expected (client) or a configured one (server).

Certificates are learned at first contact rather than copied by hand: dialling a peer whose
certificate we lack, we first run a *probe* handshake without a client certificate. In TLS
1.3 the client has the server's certificate before the server judges the client, so the
probe yields the server's certificate even though the server then refuses the probe; we keep
it only if it hashes to the configured id. Both sides dial, so after one round each side
trusts the other. The client names itself in SNI (a node id is a valid DNS label), which
lets the server log the *claimed* id of a refused connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..identity import (
    Identity,
    load_peer_certs,
    node_id_from_cert_der,
    node_id_text,
    save_peer_cert,
    short_text_of,
)

__all__ = ["HandshakeRefused", "TrustStore", "accept_tls", "dial_tls"]

HANDSHAKE_TIMEOUT = 10.0
log: Any = structlog.get_logger("meshsyncd.transport")


class HandshakeRefused(Exception):
    """A TLS connection was refused; ``claimed`` is the id the other side named, if any."""

    def __init__(self, message: str, *, address: str, claimed: str | None = None) -> None:
        self.address = address
        self.claimed = claimed
        super().__init__(message)


@dataclass
class _Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext
    claimed: dict[int, str]


class TrustStore:
    """Our identity plus the certificates of configured peers, as ready SSL contexts.

    Contexts are rebuilt when a certificate is learned or the peer list changes; live
    connections keep the context they were made with.
    """

    def __init__(self, identity: Identity, node_dir: Path, allowed: set[bytes]) -> None:
        self.identity = identity
        self.node_dir = node_dir
        self.allowed = set(allowed)
        self._certs: dict[bytes, bytes] = {}
        self._contexts: _Contexts | None = None
        self.reload()

    def reload(self, allowed: set[bytes] | None = None) -> None:
        if allowed is not None:
            self.allowed = set(allowed)
        self._certs = load_peer_certs(self.node_dir)
        self._contexts = None

    def knows(self, node_id: bytes) -> bool:
        return node_id in self._certs

    def learn(self, der: bytes, expected: bytes) -> None:
        """Keep a peer's certificate (it must hash to ``expected``).

        Raises:
            IdentityError: the certificate belongs to another node.
        """
        save_peer_cert(self.node_dir, der, expected)
        self._certs[expected] = der
        self._contexts = None

    def _pem_bundle(self) -> str:
        pems = []
        for node_id, der in self._certs.items():
            if node_id in self.allowed:
                cert = x509.load_der_x509_certificate(der)
                pems.append(cert.public_bytes(serialization.Encoding.PEM).decode())
        return "".join(pems)

    def contexts(self) -> _Contexts:
        if self._contexts is None:
            bundle = self._pem_bundle()
            claimed: dict[int, str] = {}
            server = _base(ssl.PROTOCOL_TLS_SERVER, self.identity)
            server.verify_mode = ssl.CERT_REQUIRED
            client = _base(ssl.PROTOCOL_TLS_CLIENT, self.identity)
            client.check_hostname = False
            client.verify_mode = ssl.CERT_REQUIRED
            for ctx in (server, client):
                ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
                if bundle:
                    ctx.load_verify_locations(cadata=bundle)

            def sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                if name:
                    claimed[id(sslobj)] = name[:64]

            server.sni_callback = sni
            self._contexts = _Contexts(server=server, client=client, claimed=claimed)
        return self._contexts


def _base(protocol: ssl._SSLMethod, identity: Identity) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(identity.cert_path), str(identity.key_path))
    return ctx


def _probe_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause)
    return str(exc) or type(exc).__name__


async def dial_tls(
    trust: TrustStore, peer_id: bytes, host: str, port: int
) -> trio.SSLStream[trio.SocketStream]:
    """Connect to a configured peer and prove both identities.

    Raises:
        OSError: the peer cannot be reached.
        HandshakeRefused: the peer is not who the config says, or refused us.
    """
    address = f"{host}:{port}"
    if not trust.knows(peer_id):
        await _probe(trust, peer_id, host, port)
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        tcp = await trio.open_tcp_stream(host, port)
        ctx = trust.contexts().client
        stream = trio.SSLStream(tcp, ctx, server_hostname=trust.identity.text)
        try:
            await _handshake(stream)
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            await trio.aclose_forcefully(stream)
            reason = f"TLS handshake failed: {_reason(exc)}"
            raise HandshakeRefused(reason, address=address) from exc
    der = stream.getpeercert(binary_form=True)
    got = node_id_from_cert_der(der) if der else b""
    if got != peer_id:
        await trio.aclose_forcefully(stream)
        raise HandshakeRefused(
            f"peer at {address} is {node_id_text(got) if got else 'anonymous'}, "
            f"expected {node_id_text(peer_id)}",
            address=address,
            claimed=node_id_text(got) if got else None,
        )
    return stream


async def _probe(trust: TrustStore, peer_id: bytes, host: str, port: int) -> None:
    """Fetch a peer's certificate with an anonymous handshake and keep it if it is theirs."""
    address = f"{host}:{port}"
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        tcp = await trio.open_tcp_stream(host, port)
        stream = trio.SSLStream(tcp, _probe_context(), server_hostname=trust.identity.text)
        try:
            await _handshake(stream)
            der = stream.getpeercert(binary_form=True)
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            reason = f"probe handshake failed: {_reason(exc)}"
            raise HandshakeRefused(reason, address=address) from exc
        finally:
            await trio.aclose_forcefully(stream)
    if not der:
        raise HandshakeRefused("peer presented no certificate", address=address)
    got = node_id_from_cert_der(der)
    if got != peer_id:
        raise HandshakeRefused(
            f"peer at {address} is {node_id_text(got)}, expected {node_id_text(peer_id)}",
            address=address,
            claimed=node_id_text(got),
        )
    trust.learn(der, peer_id)
    log.info("learned peer certificate", peer=short_text_of(peer_id), address=address)


async def _handshake(stream: trio.SSLStream[trio.SocketStream]) -> None:
    """``stream.do_handshake()``, then break the reference cycle every trio.SSLStream has.

    Why: the stream keeps its handshake in a run-once helper holding a bound method of the
    stream itself, so a dropped stream and its OpenSSL state (~40 KiB) are freed only by a
    full collection of the cyclic GC, not when the connection is closed: 500 half-open
    handshakes kept ~20 MB alive per round (``node/heap.py``). Once the handshake has been
    started, the helper never calls that method again, so dropping it is safe whether the
    handshake succeeded, failed or was cancelled.
    """
    try:
        await stream.do_handshake()
    finally:
        once = getattr(stream, "_handshook", None)
        if once is not None and once.started:
            once._afn = None


def _claimed(ctxs: _Contexts, stream: trio.SSLStream[trio.SocketStream]) -> str | None:
    """The SNI name the client sent (its claimed node id), recorded by the SNI callback.

    trio keeps the SSLObject private; the callback only sees that object, so it is the key.
    """
    return ctxs.claimed.pop(id(stream._ssl_object), None)


async def accept_tls(
    trust: TrustStore,
    tcp: trio.SocketStream,
    *,
    timeout: float = HANDSHAKE_TIMEOUT,  # noqa: ASYNC109 - bounds the handshake, not the call
) -> tuple[trio.SSLStream[trio.SocketStream], bytes]:
    """Run the server side of the handshake on an accepted socket; return the peer's id.

    ``timeout`` bounds the handshake (the admission gate gives first contacts less).

    Raises:
        HandshakeRefused: unknown certificate, no certificate, a peer that is not
            configured, or a client whose SNI claims another id than its certificate.
    """
    try:
        host, port = tcp.socket.getpeername()[:2]
        address = f"{host}:{port}"
    except OSError:
        address = "?"
    ctxs = trust.contexts()
    stream = trio.SSLStream(tcp, ctxs.server, server_side=True)
    try:
        with trio.fail_after(timeout):
            await _handshake(stream)
    except (trio.BrokenResourceError, ssl.SSLError, trio.TooSlowError) as exc:
        claimed = _claimed(ctxs, stream)
        await trio.aclose_forcefully(stream)
        raise HandshakeRefused(
            f"TLS handshake failed: {_reason(exc)}", address=address, claimed=claimed
        ) from exc
    claimed = _claimed(ctxs, stream)
    der = stream.getpeercert(binary_form=True)
    got = node_id_from_cert_der(der) if der else b""
    if got not in trust.allowed:
        await trio.aclose_forcefully(stream)
        raise HandshakeRefused("not a configured peer", address=address, claimed=claimed)
    if claimed is not None and claimed != node_id_text(got):
        await trio.aclose_forcefully(stream)
        raise HandshakeRefused(
            f"certificate is {node_id_text(got)} but SNI claims {claimed}",
            address=address,
            claimed=claimed,
        )
    return stream, got
