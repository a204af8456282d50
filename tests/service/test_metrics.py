"""Metrics: a scrape of real daemons, and the endpoint and collector on their own."""

from __future__ import annotations

import contextlib
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from servicekit import Node, free_port, mesh, wait_for

import protocol as P
from meshsyncd.metrics import Metrics, batch_raw_size


def _enable_metrics(node: Node) -> int:
    port = free_port()
    body = node.config.read_text()
    new = re.sub(r'(?m)^listen = ""', f'listen = "127.0.0.1:{port}"', body)
    assert new != body, "no [metrics] listen line to change"
    node.config.write_text(new)
    return port


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_scrape_a_real_daemon(tmp_path: Path) -> None:
    a, b = mesh(tmp_path, ["a", "b"])
    port = _enable_metrics(a)
    for n in (a, b):
        n.start()
    try:
        with b.client() as c:
            c.put("alarm", tier="working", key="k0", priority="urgent")
            for n in range(1, 5):
                c.put(f"v{n}", tier="semantic", key=f"k{n}")
        wait_for(lambda: a.digests() == b.digests(), 30, "a to have b's writes")
        with a.client() as c:
            c.put("mine", tier="episodic", key="m")
        samples = _scrape(port)

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        assert value("meshsyncd_items", tier="semantic") == 4
        assert value("meshsyncd_items", tier="working") == 1
        assert value("meshsyncd_local_seq", tier="episodic") >= 1
        assert value("meshsyncd_info", node=a.node_id, version="0.1.0") == 1
        assert value("meshsyncd_peer_connected", peer=b.node_id) == 1
        for tier in ("working", "episodic", "semantic"):
            assert value("meshsyncd_peer_lag", peer=b.node_id, tier=tier) >= 0
        assert value("meshsyncd_peer_bytes_total", peer=b.node_id, direction="in") > 0
        assert value("meshsyncd_peer_pushes_dropped_total", peer=b.node_id) == 0
        assert value("meshsyncd_peer_conflicts_total", peer=b.node_id) >= 0
        assert value("meshsyncd_peer_rejections_total", peer=b.node_id) == 0
        assert value("meshsyncd_batches_total", direction="in") >= 1
        assert value("meshsyncd_batch_items_total", direction="in") >= 5
        assert value("meshsyncd_batch_raw_bytes_total", direction="in") > 5 * P.ITEM_HEADER_SIZE
        assert value("meshsyncd_apply_seconds_count") >= 1
        assert value("meshsyncd_urgent_propagation_seconds_count") == 1
        assert value("meshsyncd_reloads_total") == 0
        assert value("meshsyncd_connections_refused_total") >= 0  # first contact may refuse
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert err.value.code == 404
        err.value.close()
    finally:
        for n in (a, b):
            if n.proc is not None:
                assert n.stop() == 0


def test_metrics_off_by_default(tmp_path: Path) -> None:
    node = Node(tmp_path, "a")
    node.start()
    try:
        assert not any(e.get("event") == "metrics endpoint" for e in node.logs())
    finally:
        assert node.stop() == 0


# -- the module on its own ---------------------------------------------------------------


def _item(payload: bytes, priority: P.Priority = P.Priority.NORMAL) -> P.Item:
    return P.Item(
        item_id=bytes(16),
        timestamp_ns=1,
        origin=1,
        tier=P.Tier.SEMANTIC,
        op=P.Op.INSERT,
        priority=priority,
        payload=payload,
    )


def test_registries_are_per_instance() -> None:
    one, two = Metrics(), Metrics()
    one.observe_urgent_latency(0.1)
    assert b"meshsyncd_urgent_propagation_seconds_count 1.0" in one.render()
    assert b"meshsyncd_urgent_propagation_seconds_count 0.0" in two.render()


def test_events_and_snapshot_render() -> None:
    m = Metrics()
    batch = P.Batch(
        batch_id=P.Batch.new_id(), source=1, tier=P.Tier.SEMANTIC, items=(_item(b"abc"),)
    )
    assert batch_raw_size(batch) == P.ITEM_HEADER_SIZE + 3
    m.observe_batch("out", batch)
    m.observe_apply(0.003)
    m.observe_urgent_latency(-1.0)  # a writer's clock ahead of ours: recorded as zero
    with pytest.raises(ValueError):
        m.observe_batch("sideways", batch)
    row = {
        "id": "peer-x",
        "state": "connected",
        "cursors": {"semantic": 5},
        "lag": {"semantic": 7},
        "rtt_ms": 2.0,
        "batches_in": 3,
        "bytes_out": 99,
        "rejected": 2,
    }
    repair = {"repairs": 2, "items_repaired": 3, "cursor_rewinds": 1, "digest_fixes": 4}
    text = m.render(
        {
            "tiers": {"semantic": {"items": 9, "seq": 11}},
            "peers": [row, {"id": "peer-y"}],
            "repair": repair,
        }
    ).decode()
    for line in (
        'meshsyncd_batches_total{direction="out"} 1.0',
        f'meshsyncd_batch_raw_bytes_total{{direction="out"}} {P.ITEM_HEADER_SIZE + 3}.0',
        'meshsyncd_items{tier="semantic"} 9.0',
        'meshsyncd_local_seq{tier="semantic"} 11.0',
        'meshsyncd_peer_lag{peer="peer-x",tier="semantic"} 7.0',
        'meshsyncd_peer_rtt_seconds{peer="peer-x"} 0.002',
        'meshsyncd_peer_batches_total{direction="in",peer="peer-x"} 3.0',
        'meshsyncd_peer_bytes_total{direction="out",peer="peer-x"} 99.0',
        'meshsyncd_peer_rejections_total{peer="peer-x"} 2.0',
        'meshsyncd_peer_connected{peer="peer-y"} 0.0',
        'meshsyncd_urgent_propagation_seconds_bucket{le="0.001"} 1.0',
        'meshsyncd_apply_seconds_bucket{le="0.005"} 1.0',
        "meshsyncd_repairs_total 2.0",
        "meshsyncd_repair_items_total 3.0",
        "meshsyncd_repair_cursor_rewinds_total 1.0",
        "meshsyncd_repair_digest_fixes_total 4.0",
    ):
        assert line in text, line
    assert 'peer="peer-y",tier' not in text  # no session: no lag rows


async def _request(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


async def test_endpoint_answers_get_metrics_only() -> None:
    m = Metrics()
    scrapes = 0

    async def snapshot() -> dict[str, object]:
        nonlocal scrapes
        scrapes += 1
        return {"tiers": {"working": {"items": scrapes, "seq": 0}}}

    async with trio.open_nursery() as nursery:
        port = await nursery.start(m.serve, "127.0.0.1", 0, snapshot)
        ok = await _request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'meshsyncd_items{tier="working"} 1.0' in ok
        again = await _request(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        assert b'meshsyncd_items{tier="working"} 2.0' in again  # a fresh snapshot per scrape
        assert (await _request(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _request(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _request(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        # an oversized head is refused unread: a 400, or a reset if unread bytes remain
        with contextlib.suppress(trio.BrokenResourceError):
            assert (await _request(port, b"G" * 20000)).startswith(b"HTTP/1.1 400")
        assert (await _request(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def test_a_failing_snapshot_answers_500_and_keeps_serving() -> None:
    m = Metrics()
    calls = 0

    async def snapshot() -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return {}

    async with trio.open_nursery() as nursery:
        port = await nursery.start(m.serve, "127.0.0.1", 0, snapshot)
        assert (await _request(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500")
        assert (await _request(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def test_slow_client_times_out(autojump_clock: trio.testing.MockClock) -> None:
    m = Metrics()

    async def snapshot() -> dict[str, object]:
        return {}

    async with trio.open_nursery() as nursery:
        port = await nursery.start(m.serve, "127.0.0.1", 0, snapshot)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\n")  # never finishes the head
            assert await stream.receive_some(100) == b""  # closed after REQUEST_TIMEOUT
        nursery.cancel_scope.cancel()
