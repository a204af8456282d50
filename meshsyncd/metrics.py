"""Prometheus metrics: what the daemon counts, and an opt-in loopback endpoint serving them.

Why prometheus-client: it is the reference implementation of the exposition format and of
the metric types (label escaping, histogram buckets, ``_total``/``_created`` conventions), so
scrapers and ``promtool`` agree with what we emit without us maintaining a serializer.

Two kinds of metric (names and meanings are listed in ``docs/operations.md``):

* Events reported as they happen: batches in and out with their raw size and the apply
  latency (:class:`MeteredEngine`, through which every session's batches pass), and the
  write-to-arrival delay of URGENT items (:meth:`Metrics.observe_urgent_latency`, from the
  daemon's change hook). These are ordinary prometheus-client counters and histograms in a
  per-daemon registry.
* State the daemon already keeps (items and sequence per tier, the peers table with its
  counters and lag). A custom collector reads it from one ``snapshot`` mapping at scrape
  time, so the daemon needs no bookkeeping for them. Per-peer counters belong to the peer's
  current session and restart from zero when it reconnects; ``rate()`` and ``increase()``
  treat that as an ordinary counter reset.

Why our own trio HTTP handler rather than ``start_http_server``: that server calls the
collectors from its own thread, which would read the daemon's dicts while the event loop
mutates them, and the store may only be read on its writer thread. Here the snapshot is taken
on the event loop (the daemon reads the store through its engine worker), then rendered
with ``generate_latest``; cancelling the task stops the endpoint with the daemon's nursery,
with no thread to join. The handler answers ``GET /metrics`` only, one request per
connection, with bounded request size, time and concurrency.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

import protocol as P
from protocol import Tier

from .aengine import AsyncEngine
from .engine import DeltaBatch, Engine
from .store import ApplyResult, Store

__all__ = [
    "HANDSHAKE_REFUSALS",
    "MeteredEngine",
    "Metrics",
    "Snapshot",
    "batch_raw_size",
    "tier_counts",
]

Snapshot = Mapping[str, Any]
"""What the daemon's ``snapshot()`` returns; every key is optional::

    {"node": "6xziurmg...", "version": "0.1.0", "reloads": 2, "refused_unknown": 0,
     "handshakes_in_progress": 0, "tiers": {"working": {"items": 10, "seq": 42}, ...},
     "peers": [<rows of Daemon.peers_table()>],
     "repair": {"repairs": 1, "items_repaired": 3, "cursor_rewinds": 0, "digest_fixes": 2}}
"""

APPLY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
URGENT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 8
# Why an inbound connection was refused before it became a session (node/admission.py): a
# [handshakes] limit, the handshake deadline, a TLS failure, or not a configured peer.
HANDSHAKE_REFUSALS = ("limit", "source_limit", "timeout", "tls", "untrusted")

# per-peer counters from a peers-table row: suffix and help (row keys: SUFFIX_in, SUFFIX_out)
_PEER_COUNTERS: tuple[tuple[str, str], ...] = (
    ("batches", "Delta batches exchanged with the peer (current session)."),
    ("items", "Items exchanged with the peer (current session)."),
    ("bytes", "Frame bytes on the wire to and from the peer, after compression."),
)
_PEER_SINGLE: tuple[tuple[str, str, str], ...] = (
    ("pushes_dropped", "pushes_dropped", "Live pushes to the peer dropped (queue full)."),
    ("relayed", "relayed", "Versions from other peers relayed on to this peer (mesh relay)."),
    ("relay_dropped", "relay_dropped", "Relayed versions dropped (the peer's queue was full)."),
    ("announced", "announced", "DIGEST announcements sent to the peer (pull now)."),
    ("conflicts", "conflicts", "Received versions that lost to a stored one (LWW)."),
    ("rejections", "rejected", "Pulls and pushes refused by the peer's tier lists."),
)

log: Any = structlog.get_logger("meshsyncd.metrics")


def batch_raw_size(batch: P.Batch) -> int:
    """Bytes of a batch's items as encoded (48-byte header + payload), before compression."""
    return sum(P.ITEM_HEADER_SIZE + len(item.payload) for item in batch.items)


def tier_counts(store: Store) -> dict[str, dict[str, int]]:
    """Items stored (tombstones included) and last local sequence per tier.

    Runs SQL on ``store``: call it on the store's writer thread (``AsyncEngine.run``).
    """
    return {t.name.lower(): {"items": store.count(t), "seq": store.tier_seq(t)} for t in Tier}


class Metrics:
    """The daemon's metrics in one registry (a fresh one unless given, so tests can make many).

    Cheap to call from the event loop: every method is a few additions under a lock.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._snapshot: Snapshot = {}
        self.apply_seconds = Histogram(
            "meshsyncd_apply_seconds",
            "Time to apply one received batch and advance its cursor (queue wait included).",
            buckets=APPLY_BUCKETS,
            registry=self.registry,
        )
        self.urgent_latency = Histogram(
            "meshsyncd_urgent_propagation_seconds",
            "Delay from an URGENT item's timestamp at its writer to its arrival here.",
            buckets=URGENT_BUCKETS,
            registry=self.registry,
        )
        self.batches = Counter(
            "meshsyncd_batches",
            "Delta batches applied (in) and produced for pulls (out), all peers, since start.",
            ["direction"],
            registry=self.registry,
        )
        self.batch_items = Counter(
            "meshsyncd_batch_items",
            "Items in those batches.",
            ["direction"],
            registry=self.registry,
        )
        self.batch_raw_bytes = Counter(
            "meshsyncd_batch_raw_bytes",
            "Raw size of those batches: item headers and payloads before batch compression.",
            ["direction"],
            registry=self.registry,
        )
        for direction in ("in", "out"):
            for family in (self.batches, self.batch_items, self.batch_raw_bytes):
                family.labels(direction)
        self.handshakes_refused = Counter(
            "meshsyncd_handshakes_refused",
            "Inbound connections refused before a session, by reason: limit, source_limit "
            "(closed at once by a [handshakes] limit), timeout, tls, untrusted.",
            ["reason"],
            registry=self.registry,
        )
        for reason in HANDSHAKE_REFUSALS:
            self.handshakes_refused.labels(reason)
        self.registry.register(_StateCollector(self))

    # -- events -----------------------------------------------------------------------------

    def observe_apply(self, seconds: float) -> None:
        """A received batch was applied (and its cursor advanced) ``seconds`` after it was
        handed to the engine."""
        self.apply_seconds.observe(max(0.0, seconds))

    def observe_urgent_latency(self, seconds: float) -> None:
        """An URGENT item arrived ``seconds`` after its writer stamped it (clock skew included,
        so a negative delay is recorded as zero)."""
        self.urgent_latency.observe(max(0.0, seconds))

    def observe_batch(self, direction: str, batch: P.Batch) -> None:
        """A batch was applied here (``"in"``) or produced for a peer's pull (``"out"``).

        Raises:
            ValueError: ``direction`` is not ``"in"`` or ``"out"``.
        """
        if direction not in ("in", "out"):
            raise ValueError(f'direction must be "in" or "out", not {direction!r}')
        self.batches.labels(direction).inc()
        self.batch_items.labels(direction).inc(len(batch.items))
        self.batch_raw_bytes.labels(direction).inc(batch_raw_size(batch))

    def observe_refusal(self, reason: str) -> None:
        """An inbound connection was refused for ``reason`` (one of ``HANDSHAKE_REFUSALS``).

        Raises:
            ValueError: an unknown reason (labels stay a fixed, small set).
        """
        if reason not in HANDSHAKE_REFUSALS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.handshakes_refused.labels(reason).inc()

    # -- state ------------------------------------------------------------------------------

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the state the next scrape reports (taken by the caller on the event loop)."""
        self._snapshot = snapshot

    def render(self, snapshot: Snapshot | None = None) -> bytes:
        """The exposition text for ``snapshot`` (or the last one set)."""
        if snapshot is not None:
            self.set_snapshot(snapshot)
        return generate_latest(self.registry)

    # -- the endpoint -----------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], Awaitable[Snapshot]],
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``GET /metrics`` on ``host:port`` until cancelled; reports the bound port.

        ``snapshot`` is awaited on the event loop for every scrape.

        Raises:
            OSError: the address cannot be bound.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        log.info("metrics endpoint", listen=f"{host}:{bound}")
        limit = trio.Semaphore(MAX_CONNECTIONS)

        async def handler(stream: trio.SocketStream) -> None:
            try:
                limit.acquire_nowait()
            except trio.WouldBlock:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await _send(stream, 503, b"busy\n")
                await trio.aclose_forcefully(stream)
                return
            try:
                await self._handle(stream, snapshot)
            finally:
                limit.release()

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handler, listeners)
            task_status.started(bound)

    async def _handle(
        self, stream: trio.SocketStream, snapshot: Callable[[], Awaitable[Snapshot]]
    ) -> None:
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                head = await _read_head(stream)
                if head is None:
                    await _send(stream, 400, b"bad request\n")
                    return
                method, target = head
                if target.split("?", 1)[0] != "/metrics":
                    await _send(stream, 404, b"not found: try /metrics\n")
                    return
                if method != "GET":
                    await _send(stream, 405, b"GET only\n", extra=b"Allow: GET\r\n")
                    return
                try:
                    body = self.render(await snapshot())
                except Exception:  # a scrape must not take replication down with it
                    log.exception("metrics snapshot failed")
                    await _send(stream, 500, b"snapshot failed; see the daemon's log\n")
                    return
                await _send(stream, 200, body, ctype=CONTENT_TYPE_LATEST)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


class MeteredEngine(AsyncEngine):
    """An :class:`AsyncEngine` that reports batch sizes and apply latency to ``metrics``.

    Why a subclass: every batch a session applies or produces passes through these two
    calls, so the daemon gets the counts without the session knowing about metrics.
    """

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        super().__init__(engine)
        self.metrics = metrics

    async def create_delta_batch(
        self, tier: Tier, peer: int, after_seq: int, max_items: int = 1000, max_bytes: int = 1 << 20
    ) -> DeltaBatch:
        delta = await super().create_delta_batch(tier, peer, after_seq, max_items, max_bytes)
        self.metrics.observe_batch("out", delta.batch)
        return delta

    async def apply_sync_batch(
        self,
        batch: P.Batch,
        *,
        to_seq: int | None = None,
        peer: int | None = None,
        changed: list[P.Item] | None = None,
    ) -> ApplyResult:
        started = time.perf_counter()
        result = await super().apply_sync_batch(batch, to_seq=to_seq, peer=peer, changed=changed)
        self.metrics.observe_apply(time.perf_counter() - started)
        self.metrics.observe_batch("in", batch)
        return result


class _StateCollector(Collector):
    """Gauges and per-peer counters read from the last snapshot at collect time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # names depend on the snapshot; registry checks collisions at collect time

    def collect(self) -> Iterator[Metric]:
        snap = self._metrics._snapshot
        info = GaugeMetricFamily(
            "meshsyncd_info", "Constant 1, labelled with the node id.", labels=["node", "version"]
        )
        info.add_metric([str(snap.get("node", "")), str(snap.get("version", ""))], 1)
        yield info
        for key, name, text in (
            ("reloads", "meshsyncd_reloads", "Successful config reloads (SIGHUP) since start."),
            (
                "refused_unknown",
                "meshsyncd_connections_refused",
                "TLS connections refused: unknown or untrusted node id.",
            ),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], float(snap.get(key, 0)))
            yield counter
        handshakes = GaugeMetricFamily(
            "meshsyncd_handshakes_in_progress",
            "Inbound TLS handshakes in progress (unauthenticated connections).",
        )
        handshakes.add_metric([], float(snap.get("handshakes_in_progress", 0)))
        yield handshakes
        yield from _repair_metrics(snap.get("repair", {}))
        yield from _tier_metrics(snap.get("tiers", {}))
        yield from _peer_metrics(snap.get("peers", []))


_REPAIR: tuple[tuple[str, str, str], ...] = (
    ("repairs", "meshsyncd_repairs", "Reconciliations that changed this node's state (repairs)."),
    ("items_repaired", "meshsyncd_repair_items", "Versions fetched by repair that changed here."),
    (
        "cursor_rewinds",
        "meshsyncd_repair_cursor_rewinds",
        "Peers found restored from an older copy of their store (our cursor went back).",
    ),
    (
        "digest_fixes",
        "meshsyncd_repair_digest_fixes",
        "Bucket digests the self-check found not matching the rows (and fixed).",
    ),
)


def _repair_metrics(repair: Mapping[str, Any]) -> Iterator[Metric]:
    for key, name, text in _REPAIR:
        counter = CounterMetricFamily(name, text)
        counter.add_metric([], float(repair.get(key, 0)))
        yield counter


def _tier_metrics(tiers: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    items = GaugeMetricFamily(
        "meshsyncd_items", "Items stored per tier (tombstones included).", labels=["tier"]
    )
    seq = GaugeMetricFamily(
        "meshsyncd_local_seq", "Last local sequence number per tier.", labels=["tier"]
    )
    for tier, row in sorted(tiers.items()):
        items.add_metric([tier], float(row.get("items", 0)))
        seq.add_metric([tier], float(row.get("seq", 0)))
    yield from (items, seq)


def _peer_metrics(rows: list[Mapping[str, Any]]) -> Iterator[Metric]:
    connected = GaugeMetricFamily(
        "meshsyncd_peer_connected", "1 while a session with the peer is open.", labels=["peer"]
    )
    lag = GaugeMetricFamily(
        "meshsyncd_peer_lag",
        "Sequence numbers the peer has announced that we have not pulled yet, per tier.",
        labels=["peer", "tier"],
    )
    rtt = GaugeMetricFamily(
        "meshsyncd_peer_rtt_seconds", "Last keepalive round trip.", labels=["peer"]
    )
    pairs = {
        suffix: CounterMetricFamily(f"meshsyncd_peer_{suffix}", text, labels=["peer", "direction"])
        for suffix, text in _PEER_COUNTERS
    }
    singles = {
        suffix: CounterMetricFamily(f"meshsyncd_peer_{suffix}", text, labels=["peer"])
        for suffix, _, text in _PEER_SINGLE
    }
    for row in rows:
        peer = str(row.get("id", ""))
        connected.add_metric([peer], 1.0 if row.get("state") == "connected" else 0.0)
        if "cursors" not in row:  # no session: only the connected gauge is meaningful
            continue
        for tier, behind in sorted(row.get("lag", {}).items()):
            lag.add_metric([peer, tier], float(behind))
        if row.get("rtt_ms") is not None:
            rtt.add_metric([peer], float(row["rtt_ms"]) / 1000)
        for suffix, family in pairs.items():
            for direction in ("in", "out"):
                family.add_metric([peer, direction], float(row.get(f"{suffix}_{direction}", 0)))
        for suffix, key, _ in _PEER_SINGLE:
            singles[suffix].add_metric([peer], float(row.get(key, 0)))
    yield from (connected, lag, rtt, *pairs.values(), *singles.values())


async def _read_head(stream: trio.SocketStream) -> tuple[str, str] | None:
    """Method and target of one HTTP/1.x request, or None if it is not one (or too big)."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    parts = data.split(b"\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    return parts[0], parts[1]


async def _send(
    stream: trio.SocketStream,
    code: int,
    body: bytes,
    *,
    ctype: str = "text/plain; charset=utf-8",
    extra: bytes = b"",
) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
        code, "Service Unavailable" if code == 503 else "Internal Server Error"
    )
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode() + extra
    await stream.send_all(head + b"\r\n" + body)
