"""Real daemons under pressure: a bulk transfer with an urgent write, a hostile peer."""

from __future__ import annotations

import time
from pathlib import Path

import trio
from meshnodes import mesh, wait_for

import protocol as P
from meshsyncd.bench.nodeproc import preload
from meshsyncd.identity import load_identity, parse_node_id, save_peer_cert
from meshsyncd.node.transport import TrustStore, dial_tls


def _preload(config: Path, node_id: str, count: int) -> None:
    """Write ``count`` EPISODIC items straight into a stopped node's store."""
    preload(config.parent / "store.db", node_id, count)


def test_urgent_write_overtakes_a_bulk_transfer(tmp_path: Path) -> None:
    a, b, c = mesh(tmp_path, ["a", "b", "c"])
    _preload(a.config, a.node_id, 100_000)
    for n in (a, b, c):
        n.start()
    try:
        wait_for(lambda: b.status()["tiers"]["episodic"]["items"] > 0, 60, "bulk to start")
        started = time.monotonic()
        with a.client() as cl:
            cl.put("now!", tier="working", key="alarm", priority="urgent")
        seen: dict[str, float] = {}
        bulk_at_arrival: dict[str, int] = {}

        def arrived() -> bool:
            for n in (b, c):
                if n.name in seen:
                    continue
                with n.client() as cl:
                    try:
                        cl.get(tier="working", key="alarm")
                    except Exception:
                        continue
                    seen[n.name] = time.monotonic() - started
                    bulk_at_arrival[n.name] = n.status()["tiers"]["episodic"]["items"]
            return len(seen) == 2

        wait_for(arrived, 30, "the urgent item on both peers")
        # it arrived while the 100,000-item transfer was still under way on both
        assert all(count < 100_000 for count in bulk_at_arrival.values()), bulk_at_arrival
        assert all(delay < 5 for delay in seen.values()), seen
        wait_for(
            lambda: (
                b.status()["tiers"]["episodic"]["items"] == 100_000
                and c.status()["tiers"]["episodic"]["items"] == 100_000
            ),
            240,
            "the bulk transfer to finish",
        )
    finally:
        for n in (a, b, c):
            if n.proc is not None:
                n.stop()


def test_malformed_frame_disconnects_only_that_peer(tmp_path: Path) -> None:
    a, b, evil = mesh(tmp_path, ["a", "b", "e"])
    # e never listens, so a cannot learn e's certificate by dialling: hand it over, as a
    # first contact in the other direction would have.
    e_ident = load_identity(evil.config.parent)
    save_peer_cert(a.config.parent, e_ident.cert_der(), e_ident.node_id)
    a.start()
    b.start()
    try:
        with b.client() as cl:
            cl.put("before", tier="episodic", key="k")
        wait_for(lambda: a.digests() == b.digests(), 30, "a and b to converge")
        before = a.digests()

        async def attack() -> list[object]:
            ident = load_identity(evil.config.parent)
            trust = TrustStore(ident, evil.config.parent, {parse_node_id(a.node_id)})
            a_id = parse_node_id(a.node_id)
            for _ in range(50):
                try:
                    stream = await dial_tls(trust, a_id, "127.0.0.1", a.port)
                except (trio.BrokenResourceError, OSError):
                    await trio.sleep(0.2)
                    continue
                async with stream:
                    conn = P.Connection()
                    await stream.send_all(
                        conn.send(
                            P.Hello(
                                version=P.PROTOCOL_VERSION,
                                node_id=ident.node_id,
                                incarnation=bytes(16),
                                capabilities=0,
                                timestamp_ns=time.time_ns(),
                            )
                        )
                    )
                    await stream.send_all(b"\x00\x00\x00\x05\x02junk")
                    events: list[object] = []
                    with trio.fail_after(10):
                        while True:
                            try:
                                data = await stream.receive_some(65536)
                            except trio.BrokenResourceError:  # closed without close_notify
                                return events
                            conn.receive_data(data)
                            while (ev := conn.next_event()) is not P.NEED_DATA:
                                events.append(ev)
                                if isinstance(ev, P.ConnectionClosed):
                                    return events
                            if not data:
                                return events
            raise AssertionError("never got a session with a")

        events = trio.run(attack)
        errors = [e for e in events if isinstance(e, P.Error)]
        assert errors and errors[0].code == P.ErrorCode.PROTOCOL and "pull" in errors[0].text
        # a is still serving b, and nothing stored changed
        assert a.digests() == before
        with b.client() as cl:
            cl.put("after", tier="episodic", key="k2", priority="urgent")
        wait_for(lambda: a.digests() == b.digests(), 30, "a and b to converge again")
        assert any(
            e.get("event") == "protocol error" and e.get("peer") == evil.node_id[:12]
            for e in a.logs()
        )
    finally:
        for n in (a, b):
            if n.proc is not None:
                n.stop()
