"""A configured, authenticated peer that the test drives by hand: it says what it likes.

The attacker is a node made with ``meshsyncd init`` (so it has a real identity) that the
target lists in its config, but it never runs a daemon: the test dials the target with
:func:`meshsyncd.node.transport.dial_tls` (real mutual TLS) and writes whatever bytes or frames it
wants through a ``protocol.Connection``. Construct it before the target starts: the target
loads the attacker's certificate at start (a running daemon would have learned it at first
contact in the other direction).
"""

from __future__ import annotations

import time

import trio
from faultnodes import FaultNode, free_port

import protocol as P
from meshsyncd.identity import load_identity, parse_node_id, save_peer_cert
from meshsyncd.node.transport import HandshakeRefused, TrustStore, dial_tls

Stream = trio.SSLStream[trio.SocketStream]


class EvilPeer:
    """``me`` (never started) attacking ``target``, which lists it with ``peer_args``."""

    def __init__(self, me: FaultNode, target: FaultNode, *peer_args: str) -> None:
        self.me = me
        self.target = target
        self.ident = load_identity(me.config.parent)
        self.target_id = parse_node_id(target.node_id)
        target.add_peer(me, f"127.0.0.1:{free_port()}", *peer_args)  # nobody listens there
        save_peer_cert(target.config.parent, self.ident.cert_der(), self.ident.node_id)
        self.trust = TrustStore(self.ident, me.config.parent, {self.target_id})

    async def connect(self) -> Stream:
        """A mutually authenticated TLS stream to the target (retried while it starts)."""
        with trio.fail_after(20):
            while True:
                try:
                    return await dial_tls(self.trust, self.target_id, "127.0.0.1", self.target.port)
                except (OSError, HandshakeRefused, trio.BrokenResourceError):
                    await trio.sleep(0.2)

    def hello(self, conn: P.Connection, *, ahead_ns: int = 0) -> bytes:
        return conn.send(
            P.Hello(
                version=P.PROTOCOL_VERSION,
                node_id=self.ident.node_id,
                incarnation=bytes(16),
                capabilities=int(P.Capability.ZSTD | P.Capability.MERGE | P.Capability.PUSH),
                timestamp_ns=time.time_ns() + ahead_ns,
            )
        )


async def read_until_closed(stream: Stream, conn: P.Connection, within: float) -> list[P.Frame]:
    """Every frame the target sends until it closes the connection.

    Raises:
        trio.TooSlowError: the target kept the connection open for ``within`` seconds.
    """
    events: list[P.Frame] = []
    with trio.fail_after(within):
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return events  # closed without close_notify
            if not data:
                return events
            conn.receive_data(bytes(data))
            while True:
                try:
                    ev = conn.next_event()
                except P.RemoteProtocolError:
                    return events
                if ev is P.NEED_DATA:
                    break
                if isinstance(ev, P.ConnectionClosed):
                    return events
                assert isinstance(ev, P.Frame)
                events.append(ev)
