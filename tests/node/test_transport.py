"""Real TLS 1.3 on loopback: certificates learned at first contact, pinned by node id."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from meshsyncd.identity import create_identity, node_id_text
from meshsyncd.node.transport import HandshakeRefused, TrustStore, accept_tls, dial_tls


def _node(tmp_path: Path, name: str) -> tuple[TrustStore, bytes]:
    d = tmp_path / name
    d.mkdir()
    ident = create_identity(d)
    return TrustStore(ident, d, set()), ident.node_id


async def _serve(
    trust: TrustStore, results: list[object], task_status: trio.TaskStatus[int]
) -> None:
    async def handler(tcp: trio.SocketStream) -> None:
        try:
            stream, peer = await accept_tls(trust, tcp)
        except HandshakeRefused as exc:
            results.append(exc)
            return
        results.append(peer)
        await stream.send_all(b"ok")
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def _refused(trust: TrustStore, peer_id: bytes, port: int) -> None:
    """The server refuses us: at the handshake, or (TLS 1.3) right after it."""
    try:
        stream = await dial_tls(trust, peer_id, "127.0.0.1", port)
    except HandshakeRefused:
        return
    try:
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some(10)
    finally:
        await trio.aclose_forcefully(stream)


async def test_first_contact_learns_certificates_both_ways(tmp_path: Path) -> None:
    a, a_id = _node(tmp_path, "a")
    b, b_id = _node(tmp_path, "b")
    a.reload(allowed={b_id})
    b.reload(allowed={a_id})
    got_a: list[object] = []
    got_b: list[object] = []
    async with trio.open_nursery() as nursery:
        port_a = await nursery.start(_serve, a, got_a)
        port_b = await nursery.start(_serve, b, got_b)
        # a dials b first: a learns b's cert by probing, but b does not know a yet
        await _refused(a, b_id, port_b)
        assert a.knows(b_id) and not b.knows(a_id)
        # b dials a: a trusts b now, and b learns a's certificate
        s = await dial_tls(b, a_id, "127.0.0.1", port_a)
        assert await s.receive_some(10) == b"ok"
        await s.aclose()
        assert got_a[-1] == b_id and b.knows(a_id)
        # from now on both directions work with full verification
        s = await dial_tls(a, b_id, "127.0.0.1", port_b)
        assert await s.receive_some(10) == b"ok"
        await s.aclose()
        assert got_b[-1] == a_id
        await trio.testing.wait_all_tasks_blocked()
        refused = [r for r in got_b if isinstance(r, HandshakeRefused)]
        assert refused and refused[0].claimed == node_id_text(a_id)
        nursery.cancel_scope.cancel()


async def test_wrong_id_and_unlisted_peer_are_refused(tmp_path: Path) -> None:
    a, a_id = _node(tmp_path, "a")
    b, b_id = _node(tmp_path, "b")
    c, c_id = _node(tmp_path, "c")
    b.reload(allowed={a_id})
    a.reload(allowed={b_id})
    c.reload(allowed={b_id})
    got_b: list[object] = []
    async with trio.open_nursery() as nursery:
        port_b = await nursery.start(_serve, b, got_b)
        # a expects someone else at b's address: refused before trusting anything
        with pytest.raises(HandshakeRefused, match="expected"):
            await dial_tls(a, c_id, "127.0.0.1", port_b)
        assert not a.knows(c_id)
        # c is not a configured peer of b: b refuses and logs c's claimed id
        await _refused(c, b_id, port_b)
        await trio.testing.wait_all_tasks_blocked()  # the server's handler has recorded it
        claims = [r.claimed for r in got_b if isinstance(r, HandshakeRefused)]
        assert node_id_text(c_id) in claims
        nursery.cancel_scope.cancel()
