"""``meshsyncd bench names``: listing named items by prefix in a tier of a million items.

What is timed is what the ``list`` operation costs the daemon for
``list --namespace P --limit 1000``: ``control.listing.list_page``, the operation's own
function, on the writer thread (the names-index range scan, resolving each id to its row
through ``ids`` and the tail map, reading the rows, skipping tombstones, building the
per-item results), then encoding the answer as JSON as the control server does (on the
trio thread); not the socket round trip (a fraction of a millisecond on loopback,
measured by ``bench latency``'s floor). The store holds
``--items`` NAMED items in one tier, spread over 64 namespaces of three labels with
16-character keys, and 1,100 more (every eleventh a tombstone, so 1,000 live) under the
listed prefix, written in the middle of the preload so they sit anywhere in the table, not at its
end. Target (issue 13): under 20 ms per page of 1,000.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from protocol import NAMED, Item, Op, Tier, name_block, name_id

from ..control.listing import list_page
from ..control.names import encode_cursor
from ..store import Store

TIER = Tier.SEMANTIC
TARGET = ("bench", "listed", "here")
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _item(ns: tuple[str, ...], key: str, ts: int, op: Op = Op.INSERT) -> Item:
    block = name_block(ns, key)
    value = b"" if op == Op.DELETE else json.dumps({"key": key, "note": "x" * 120}).encode()
    return Item(
        item_id=name_id(block),
        timestamp_ns=ts,
        origin=7,
        tier=TIER,
        op=op,
        flags=NAMED,
        payload=block + value,
    )


def _preload(store: Store, total: int, rnd: random.Random) -> None:
    ts = time.time_ns() - 3600 * 10**9
    target_at = total // 2
    for start in range(0, total, 1000):
        items = []
        for _ in range(min(1000, total - start)):
            ns = ("agents", f"agent-{rnd.randrange(16):02d}", f"kind-{rnd.randrange(4)}")
            key = "".join(rnd.choice(_CHARS) for _ in range(16))
            ts += 1
            items.append(_item(ns, key, ts))
        store.apply(TIER, items)
        if start <= target_at < start + 1000:
            ts += 1000
            listed = [_item(TARGET, f"key-{i:05d}", ts + i) for i in range(1100)]
            store.apply(TIER, listed)
            gone = [_item(TARGET, f"key-{i:05d}", ts + 2000, Op.DELETE) for i in range(0, 1100, 11)]
            store.apply(TIER, gone)
        while store.maintenance_step():
            pass


def _page(store: Store) -> tuple[int, int]:
    """One page as the ``list`` operation builds it (``control/listing.py``), JSON included."""
    out, more = list_page(store, TIER, TARGET, None, 1000)
    result: dict[str, Any] = {"tier": "semantic", "namespace": "/".join(TARGET), "items": out}
    result["next"] = None if more is None else encode_cursor(more)
    answer = {"id": 1, "ok": True, "result": result}
    # Encoded as the control server encodes its lines (server._line).
    return len(out), len(json.dumps(answer, separators=(",", ":"), ensure_ascii=False))


def run_names_bench(total: int, rounds: int, workdir: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshsyncd-names-", dir=workdir) as tmp:
        store = Store.open(Path(tmp) / "names.db")
        try:
            t0 = time.perf_counter()
            _preload(store, total, random.Random(13))
            preload_s = time.perf_counter() - t0
            store.close()
            store = Store.open(Path(tmp) / "names.db")  # cold cache, like a restart
            times = []
            cpu = []
            listed = size = 0
            for _ in range(rounds):
                start, start_cpu = time.perf_counter(), time.thread_time()
                listed, size = _page(store)
                times.append((time.perf_counter() - start) * 1e3)
                cpu.append((time.thread_time() - start_cpu) * 1e3)
            rows = store.count(TIER)
        finally:
            store.close()
    ordered = sorted(times)
    return {
        "rows_in_tier": rows,
        "listed": listed,
        "answer_bytes": size,
        "preload_s": round(preload_s, 1),
        "first_ms": round(times[0], 2),
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        # CPU time of this thread: what the page costs when the machine is not shared.
        "median_cpu_ms": round(statistics.median(cpu), 2),
        "load_average": round(os.getloadavg()[0], 2),
        "targets": {"median<20ms": statistics.median(times) < 20},
    }


@click.command("names")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--items", default=1_000_000, show_default=True, type=click.IntRange(1000))
@click.option("--rounds", default=20, show_default=True, type=click.IntRange(1))
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None)
def names_cmd(as_json: bool, items: int, rounds: int, workdir: str | None) -> None:
    """List 1,000 named items under a prefix in a tier of ITEMS named items.

    \b
    Example:
      meshsyncd bench names
      meshsyncd bench names --items 100000 --json
    """
    figures = run_names_bench(items, rounds, workdir)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(
        f"list --namespace {'/'.join(TARGET)} --limit 1000 in a tier of "
        f"{figures['rows_in_tier']:,} rows (preload {figures['preload_s']} s):"
    )
    click.echo(
        f"  {figures['listed']} items, {figures['answer_bytes']:,} bytes: first (cold) "
        f"{figures['first_ms']} ms, median {figures['median_ms']} ms, p90 {figures['p90_ms']} ms"
    )
    click.echo(
        f"  median CPU time {figures['median_cpu_ms']} ms"
        f" (load average {figures['load_average']} on {os.cpu_count()} CPUs)"
    )
    for name, ok in figures["targets"].items():
        click.echo(f"  {name}: {'pass' if ok else 'FAIL'}")
