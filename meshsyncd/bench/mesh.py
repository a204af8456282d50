"""``meshsyncd bench replicate``: two real daemons on loopback (``bench latency`` uses the
same pair of nodes: ``latency.py``).

Why real processes: these figures are what a user of two nodes gets, TLS, SQLite, the
control socket and process boundaries included, so the nodes come from
:mod:`meshsyncd.bench.nodeproc` exactly as ``meshsyncd demo`` makes them. The bulk data is written
straight into the stopped source node's store (1000 items per transaction, the way the
fault tests preload) because 100,000 control-socket writes would measure the control
socket, not replication. Payloads are the codec bench's agent-memory JSON (~200 bytes).

What is counted on the wire: the peers table's ``bytes_in``/``bytes_out`` are the session's
protocol frames before TLS; the kernel's ``tcp_info`` (read with ``ss``) gives the TCP
payload bytes, i.e. TLS records including the handshake, which is what really crosses the
link. The wire target is judged on the TLS figure when ``ss`` is available.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .codec import make_items
from .nodeproc import Node, NodeError, preload
from .observe import Progress, quiet

__all__ = ["run_replicate_bench"]

N_ITEMS = 100_000
N_SAMPLES = 200
MAX_BULK_ROUNDS = 6


@contextlib.contextmanager
def _two_nodes() -> Iterator[tuple[Node, Node]]:
    """Nodes A and B peered both ways in a temporary directory; always stopped and removed."""
    root = Path(tempfile.mkdtemp(prefix="msbench-", dir="/tmp"))
    nodes: list[Node] = []
    try:
        nodes = [Node(root, "A"), Node(root, "B")]
        a, b = nodes
        a.add_peer(b)
        b.add_peer(a)
        yield a, b
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def _preload(node: Node, count: int, named: bool = False) -> int:
    """``count`` EPISODIC agent-memory items (codec bench shapes) into a stopped ``node``.

    ``named``: NAMED items, a namespace of three labels and a 16-character key each.
    """
    shapes = make_items(count, seed=7)  # random ids, agent-memory JSON payloads
    if not named:
        return preload(
            node.store_path,
            node.node_id,
            count,
            payload=lambda n: shapes[n].payload,
            item_id=lambda n: shapes[n].item_id,
        )
    from protocol import NAMED, name_block, name_id

    def block(n: int) -> bytes:
        key = shapes[n].item_id.hex()[:16]
        return name_block(("agents", f"agent-{n % 16:02d}", ("prefs", "episodes")[n % 2]), key)

    return preload(
        node.store_path,
        node.node_id,
        count,
        payload=lambda n: block(n) + shapes[n].payload,
        item_id=lambda n: name_id(block(n)),
        flags=NAMED,
    )


def _row(node: Node, other: Node) -> dict[str, Any]:
    """``node``'s peers-table row for ``other`` (empty if not listed)."""
    return next((r for r in node.peers() if r.get("id") == other.node_id), {})


_SS_BYTES = re.compile(r"\bbytes_received:(\d+)")


def _tls_bytes(a: Node, b: Node) -> dict[str, int] | None:
    """TCP payload bytes each way on the established A-B connection(s), from ``ss -ti``.

    B's end of a connection is the one whose local port is B's listener or whose peer port
    is A's listener; its ``bytes_received`` counts A to B (no retransmits), and A's end
    likewise counts B to A. ``None`` when ``ss`` is missing or shows nothing.
    """
    try:
        out = subprocess.run(
            ["ss", "-tinH", "state", "established"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    totals = {"a_to_b": 0, "b_to_a": 0}
    end: str | None = None
    found = False
    for line in out.splitlines():
        if not line[:1].isspace():
            fields = line.split()
            end = None
            if len(fields) >= 4:
                local = int(fields[2].rsplit(":", 1)[-1])
                peer = int(fields[3].rsplit(":", 1)[-1])
                if local == b.port or peer == a.port:
                    end = "a_to_b"
                elif local == a.port or peer == b.port:
                    end = "b_to_a"
            continue
        m = _SS_BYTES.search(line)
        if end is not None and m:
            totals[end] += int(m.group(1))
            found = True
    return totals if found else None


def _connected_at(node: Node) -> float | None:
    """Wall time of ``node``'s first "peer connected" log event (the pull starts there)."""
    for event in node.logs():
        if event.get("event") == "peer connected" and "timestamp" in event:
            stamp = str(event["timestamp"]).replace("Z", "+00:00")
            return datetime.fromisoformat(stamp).timestamp()
    return None


def _wait_cursor(b: Node, a: Node, seq: int, timeout: float, progress: Progress, what: str) -> None:
    """Wait until B's cursor on A's EPISODIC sequence reaches ``seq`` (the pull is done).

    Polls the peers table, which the daemon answers from memory, so the waiting does not
    queue store work on B behind the batches it is applying.

    Raises:
        NodeError: not reached within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = -1.0
    while time.monotonic() < deadline:
        cursor = _row(b, a).get("cursors", {}).get("episodic", 0)
        if cursor >= seq:
            return
        if time.monotonic() - last > 1:
            progress(f"{what}: {cursor:,}/{seq:,}")
            last = time.monotonic()
        time.sleep(0.02)
    raise NodeError(f"{what}: B did not catch up with A in {timeout:.0f}s; see {b.log}")


def run_replicate_bench(
    n_items: int = N_ITEMS, progress: Progress = quiet, named: bool = False
) -> dict[str, Any]:
    """Preload A, start A then B, time B's pull until its EPISODIC digest equals A's.

    ``named``: the items are NAMED (three labels, 16-character keys).

    Raises:
        NodeError: a node failed to start, or B did not converge within 10 minutes.
    """
    with _two_nodes() as (a, b):
        progress(f"bench replicate: writing {n_items:,} items into A's store")
        t0 = time.perf_counter()
        raw = _preload(a, n_items, named)
        preload_s = time.perf_counter() - t0
        a.start()
        a.wait_ready()
        want = a.status()["tiers"]["episodic"]
        progress("bench replicate: starting B")
        spawned = time.time()
        b.start()
        b.wait_ready()
        _wait_cursor(b, a, int(want["seq"]), 600, progress, "bench replicate")
        while True:  # the cursor moved with the last batch's commit; confirm by digest
            got = b.status()["tiers"]["episodic"]
            if got["digest"] == want["digest"]:
                done = time.time()
                break
            if time.time() - spawned > 600:
                raise NodeError(f"B's digest never matched A's; see {b.log}")
            time.sleep(0.02)
        row = _row(b, a)
        tls = _tls_bytes(a, b)
        opened = _connected_at(b) or spawned
    seconds = done - opened
    frames = int(row.get("bytes_in", 0)) + int(row.get("bytes_out", 0))
    wire: dict[str, Any] = {
        "frame_bytes_a_to_b": row.get("bytes_in", 0),
        "frame_bytes_b_to_a": row.get("bytes_out", 0),
        "frame_bytes_per_item": round(frames / n_items, 1),
        "frame_ratio": round(frames / raw, 3),
        "frames_are": "protocol frames before TLS, both ways (B's peers row bytes_in+bytes_out)",
    }
    ratio = wire["frame_ratio"]
    if tls is not None:
        total = tls["a_to_b"] + tls["b_to_a"]
        wire |= {
            "tls_bytes_a_to_b": tls["a_to_b"],
            "tls_bytes_b_to_a": tls["b_to_a"],
            "tls_bytes_per_item": round(total / n_items, 1),
            "tls_ratio": round(total / raw, 3),
            "tls_is": "TCP payload (TLS records incl. handshake), both ways, kernel tcp_info",
        }
        ratio = wire["tls_ratio"]
    rate = n_items / seconds if seconds > 0 else math.inf
    return {
        "items": n_items,
        "named": named,
        "raw_bytes": raw,
        "raw_bytes_per_item": round(raw / n_items, 1),
        "preload_s": round(preload_s, 2),
        "seconds": round(seconds, 3),
        "seconds_from_spawn": round(done - spawned, 3),
        "items_per_s": round(rate),
        "wire": wire,
        "targets": {
            "items_per_s>=40000": rate >= 40_000,
            "wire<=0.35x_raw": ratio <= 0.35,
            "wire_ratio_judged": "tls_ratio" if tls is not None else "frame_ratio",
        },
    }
