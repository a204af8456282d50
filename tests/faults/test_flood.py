"""Floods of half-open TLS handshakes against a real daemon: bounded, peers get in, quiet logs.

Issue 18: anyone who can reach the listen port could hold any number of TLS handshakes
open, and every refused one logged a warning. Here the flooders are plain sockets bound to
other loopback addresses (127.0.0.2 and up: strangers to the node) that send a ClientHello
and then nothing. The node ``a`` runs with small ``[handshakes]`` limits so the floods stay
small and quick; what is checked is behaviour (who gets in, what is counted, how many log
lines), not speed or memory, which ``meshsyncd bench flood`` measures.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from faultnodes import FaultNode, Fleet, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families


def _client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="flooder")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


HELLO = _client_hello()


class Flood:
    """Half-open handshakes held open from one loopback source until closed."""

    def __init__(self, port: int, source: str, count: int) -> None:
        self.source = source
        self.socks: list[socket.socket] = []
        for _ in range(count):
            s = socket.socket()
            self.socks.append(s)
            s.bind((source, 0))
            s.connect(("127.0.0.1", port))
            with contextlib.suppress(OSError):
                s.sendall(HELLO)

    def closed_by_server(self, within: float) -> int:
        """How many of our connections the server closed (EOF or reset) within ``within`` s."""
        closed = 0
        deadline = time.monotonic() + within
        pending = list(self.socks)
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(pending, [], [], 0.1)
            for s in ready:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    closed += 1
                    pending.remove(s)
        return closed

    def close(self) -> None:
        for s in self.socks:
            s.close()


@contextlib.contextmanager
def flooding(port: int, plan: dict[str, int]) -> Iterator[list[Flood]]:
    floods: list[Flood] = []
    try:
        for source, count in plan.items():
            floods.append(Flood(port, source, count))
        yield floods
    finally:
        for f in floods:
            f.close()


def set_handshakes(node: FaultNode, metrics_port: int, **values: object) -> None:
    """Set ``[handshakes]`` keys and turn the metrics endpoint on, in the template's lines."""
    text = node.config.read_text()
    for key, value in values.items():
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        text, found = re.subn(rf"(?m)^{key} = \S+", f"{key} = {shown}", text)
        assert found == 1, key
    text, found = re.subn(r'(?m)^listen = ""', f'listen = "127.0.0.1:{metrics_port}"', text)
    assert found == 1
    node.config.write_text(text)


def metrics(port: int) -> dict[str, float]:
    """``name{labels}`` -> value from the node's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        body = answer.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def refused(values: dict[str, float], reason: str) -> float:
    return values.get(f"meshsyncd_handshakes_refused_total{{reason={reason}}}", 0.0)


def fds(node: FaultNode) -> int:
    assert node.proc is not None
    return len(list(Path(f"/proc/{node.proc.pid}/fd").iterdir()))


def test_a_configured_peer_gets_in_and_urgent_writes_arrive_during_a_flood(
    fleet: Fleet,
) -> None:
    a, b = fleet.mesh(["a", "b"], sync_interval="10m")  # pushes only: the pull is far off
    a.start()
    b.start()
    wait_for(lambda: a.connected_to(b) and b.connected_to(a), 30, "a and b to meet")
    a.stop()
    b.stop()
    # a now knows b's certificate but dials a dead port: b's session must come in through
    # a's listener, past the flood. Both are on 127.0.0.1, a configured peer address.
    text = a.config.read_text().replace(f"127.0.0.1:{b.port}", f"127.0.0.1:{free_port()}")
    a.config.write_text(text)
    mport = free_port()
    set_handshakes(a, mport, max=8, max_per_source=2, reserved=3, first_contact_timeout="30s")
    a.start()
    idle_fds = fds(a)
    # one source far beyond its limit, then more sources until strangers fill max - reserved
    plan = {"127.0.0.2": 40, "127.0.0.3": 2, "127.0.0.4": 2, "127.0.0.5": 2}
    with flooding(a.port, plan) as floods:
        refused_at_once = sum(f.closed_by_server(within=2) for f in floods)
        assert refused_at_once == 40 - 2 + 1 + 2  # 5 strangers admitted; the rest closed
        values = metrics(mport)
        assert values["meshsyncd_handshakes_in_progress"] == 5
        assert refused(values, "source_limit") == 38
        assert refused(values, "limit") == 3
        assert fds(a) <= idle_fds + 8
        b.start()
        wait_for(lambda: a.connected_to(b), 30, "b to get into a through the flood")
        assert metrics(mport)["meshsyncd_handshakes_in_progress"] == 5, "the flood still holds"
        with b.client() as cl:
            cl.put("through the flood", tier="working", key="flood-b", priority="urgent")
        with a.client() as cl:
            cl.put("back out", tier="working", key="flood-a", priority="urgent")
        wait_for(lambda: _has(a, "flood-b"), 10, "b's urgent write to arrive on a")
        wait_for(lambda: _has(b, "flood-a"), 10, "a's urgent write to arrive on b")
    assert a.alive
    assert not [e for e in a.logs() if e.get("level") in ("error", "critical") or "raw" in e]


def _has(node: FaultNode, key: str) -> bool:
    with node.client() as cl:
        try:
            cl.get(tier="working", key=key)
            return True
        except Exception:  # ClientError: not there yet
            return False


def test_log_lines_per_flood_are_bounded(fleet: Fleet) -> None:
    a = fleet.node("a")
    mport = free_port()
    set_handshakes(a, mport, max=16, max_per_source=8, reserved=4, first_contact_timeout="1s")
    a.start()
    start = len(a.logs())
    with flooding(a.port, {"127.0.0.6": 300}) as (flood,):
        assert flood.closed_by_server(within=10) == 300  # 292 at once, 8 at their deadline
    values = metrics(mport)
    assert refused(values, "source_limit") == 292
    assert refused(values, "timeout") == 8
    wait_for(lambda: any("refused" in e for e in a.logs()[start:]), 20, "the flood's summary line")
    lines = a.logs()[start:]
    about = [e for e in lines if e.get("event") == "connection refused" or "refused" in e]
    # the first refusal of each (source, claimed id): closed at once (no SNI read) and
    # timed out (SNI "flooder"), then one summary for the window, however big the flood
    assert len(about) == 3, about
    at_once, timed_out, summary = about
    assert (at_once["peer"], at_once["reason"]) == ("?", "source limit")
    assert (timed_out["peer"], timed_out["reason"]) == ("flooder", "TooSlowError")
    assert at_once["address"].startswith("127.0.0.6:")
    assert summary["event"] == (
        "refused 300 connections from 127.0.0.6 in the last 10 s: source limit x292, "
        "TooSlowError x8"
    )
    assert summary["refused"] == 300
    assert {e["level"] for e in about} == {"info"}  # a stranger: first-contact noise
    assert len(lines) <= 4, lines  # and at most a heap-trim line besides


def test_bigger_floods_write_no_more_lines(fleet: Fleet) -> None:
    """Ten times the connections from the same source: the same three lines."""
    a = fleet.node("a")
    mport = free_port()
    set_handshakes(a, mport, max=16, max_per_source=8, reserved=4, first_contact_timeout="1s")
    a.start()
    start = len(a.logs())
    for _ in range(3):
        with flooding(a.port, {"127.0.0.7": 1000}) as (flood,):
            assert flood.closed_by_server(within=10) == 1000
    wait_for(lambda: any("refused" in e for e in a.logs()[start:]), 20, "the flood's summary line")
    about = [
        e for e in a.logs()[start:] if e.get("event") == "connection refused" or "refused" in e
    ]
    assert len(about) <= 3 * 2, about  # per window at most: two first refusals, one summary
    assert sum(e.get("refused", 0) for e in about) == 3000
