"""The handshake gate on real loopback TLS: refusals classified and counted, peers learned,
and a dead handshake's TLS state freed when it is dropped, without the cycle collector."""

from __future__ import annotations

import contextlib
import gc
import ssl
import weakref
from collections.abc import Iterator
from pathlib import Path

import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from meshsyncd.config import HandshakeLimits
from meshsyncd.identity import create_identity
from meshsyncd.ids import SHORT_LEN
from meshsyncd.node import transport
from meshsyncd.node.admission import HandshakeGate
from meshsyncd.node.transport import HandshakeRefused, TrustStore, dial_tls


def _trust(tmp_path: Path, name: str) -> TrustStore:
    d = tmp_path / name
    d.mkdir()
    return TrustStore(create_identity(d), d, set())


def _hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="silent")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_refusals_are_classified_and_a_peer_becomes_known(tmp_path: Path) -> None:
    server, client = _trust(tmp_path, "server"), _trust(tmp_path, "client")
    server.reload(allowed={client.identity.node_id})
    client.reload(allowed={server.identity.node_id})
    pem = client.identity.cert_path.read_bytes()  # as if the server had dialled it before
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    server.learn(der, client.identity.node_id)
    counted: list[str] = []
    limits = HandshakeLimits(max=4, max_per_source=4, reserved=1, first_contact_timeout=0.5)
    gate = HandshakeGate(
        limits, [], count=counted.append, is_peer=lambda pid: pid in server.allowed
    )
    accepted: list[bytes] = []

    async def handler(tcp: trio.SocketStream) -> None:
        with contextlib.suppress(HandshakeRefused):
            stream, pid = await gate.accept(server, tcp)
            accepted.append(pid)
            await stream.send_all(b"ok")
            await stream.aclose()

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            await _client(port, b"GET / HTTP/1.0\r\n\r\n")  # not TLS at all
            await _client(port, _hello())  # a ClientHello, then silence until closed
            assert not gate.admission.is_known("127.0.0.1")
            # the client probes first (refused: no client certificate), then gets in
            stream = await dial_tls(client, server.identity.node_id, "127.0.0.1", port)
            assert await stream.receive_some(10) == b"ok"
            await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert accepted == [client.identity.node_id]
    assert counted == ["tls", "timeout", "tls"]
    assert gate.admission.is_known("127.0.0.1")
    assert gate.admission.statistics().in_progress == 0
    refused = [e for e in logs if e["event"] == "connection refused"]
    # a stranger's noise and the peer's first-contact probe are info; nothing is a warning
    assert [(e["peer"], e["log_level"]) for e in refused] == [
        ("?", "info"),
        ("silent", "info"),
        (client.identity.text[:SHORT_LEN], "info"),
    ]


async def test_a_dead_handshake_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    server = _trust(tmp_path, "server")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    refs: list[weakref.ref[trio.SSLStream[trio.SocketStream]]] = []

    async def one_dead_handshake() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_client, port, _hello())
            tcp = await listeners[0].accept()
            stream = trio.SSLStream(tcp, server.contexts().server, server_side=True)
            refs.append(weakref.ref(stream))
            with trio.move_on_after(0.3):
                await transport._handshake(stream)
            await trio.aclose_forcefully(stream)

    with _gc_off():
        await one_dead_handshake()
        assert refs[0]() is None, "the stream (and its OpenSSL state) outlived its connection"
    await listeners[0].aclose()


async def _client(port: int, data: bytes) -> None:
    """Send ``data``, then read until the server closes (at most 5 s)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    async with tcp:
        await tcp.send_all(data)
        with trio.move_on_after(5), contextlib.suppress(trio.BrokenResourceError):
            while await tcp.receive_some(65536):
                pass
