"""Smoke tests for ``meshsyncd bench replicate`` and ``bench latency`` at tiny sizes.

They check that the benches run end to end through the CLI on real daemons and report
sane figures; the targets are the benches' business, never a test's (a timed assertion
would be flaky on a shared machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

EXE = str(Path(sys.executable).with_name("meshsyncd"))


def _bench(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [EXE, "bench", *args, "--json"], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def _bench_dirs() -> list[Path]:
    return [p for p in Path("/tmp").glob("msbench-*") if p.is_dir()]


def test_bench_replicate_reports_rate_and_wire_bytes() -> None:
    before = set(_bench_dirs())
    doc = _bench("replicate", "--items", "2000")
    assert doc["items"] == 2000
    assert 150 < doc["raw_bytes_per_item"] < 350  # 48-byte header + ~200-byte JSON
    assert 0 < doc["seconds"] <= doc["seconds_from_spawn"]
    assert doc["items_per_s"] > 0
    wire = doc["wire"]
    assert wire["frame_bytes_a_to_b"] > 0 and 0 < wire["frame_ratio"] < 1.5
    if "tls_ratio" in wire:  # ss may be missing; then the frame ratio is judged
        assert wire["tls_bytes_a_to_b"] >= wire["frame_bytes_a_to_b"]
    assert set(doc["targets"]) == {"items_per_s>=40000", "wire<=0.35x_raw", "wire_ratio_judged"}
    assert set(_bench_dirs()) <= before


def test_bench_replicate_alternates_named_runs_and_reports_medians() -> None:
    doc = _bench("replicate", "--items", "1000", "--names", "--repeat", "2")
    assert len(doc["items_per_s_runs"]) == 2 and len(doc["named"]["items_per_s_runs"]) == 2
    lo, hi = doc["items_per_s_range"]
    assert lo <= doc["items_per_s"] <= hi
    assert len(doc["named_vs_nameless_per_pair"]) == 2
    assert doc["named"]["raw_bytes_per_item"] > doc["raw_bytes_per_item"]  # the name block
    assert "named>=90%_of_nameless" in doc["targets"]


def test_bench_latency_reports_percentiles() -> None:
    doc = _bench("latency", "--samples", "10", "--bulk-items", "3000")
    idle = doc["idle"]
    assert idle["n"] == 10 and idle["lost"] == 0
    assert 0 < idle["p50_ms"] <= idle["p99_ms"] <= idle["max_ms"] < 5000
    bulk = doc["bulk"]
    assert bulk["bulk_items"] == 3000 and 1 <= bulk["pull_rounds"] <= 6
    if bulk["n"]:  # a 3000-item pull may end before any sample lands inside it
        assert 0 < bulk["p50_ms"] <= bulk["p99_ms"]
    assert set(doc["targets"]) == {"idle_p50<=2ms", "idle_p99<=10ms", "bulk_p99<=25ms"}
    assert 0 < doc["floor"]["p50_ms"] <= doc["floor"]["p99_ms"]


def test_bench_apply_reports_the_median_of_its_runs(tmp_path: Path) -> None:
    doc = _bench(
        "apply", "--items", "2000", "--preload", "5000", "--repeat", "4", "--dir", str(tmp_path)
    )
    fresh, loaded = doc["results"]
    assert fresh["preloaded"] == 0 and loaded["preloaded"] == 5000
    assert loaded["rows_after"] > 5000
    assert loaded["conflicts_logged"] == 0  # no bench version carries a base: none is true
    for r in (fresh, loaded):
        assert len(r["runs"]) == 4
        rates = sorted(run["engine_items_per_s"] for run in r["runs"])
        assert r["engine_items_per_s"] == rates[1]  # the lower middle: a measured figure
        assert r["engine_items_per_s_range"] == [rates[0], rates[3]]
        assert r["ratio"] in [run["ratio"] for run in r["runs"]]
        assert r["bare_items_per_s"] > 0 and r["ratio"] > 0
    assert 0 < doc["peak_rss_mib"] < 1000
    assert list(tmp_path.iterdir()) == []  # scratch stores and preload cache are gone


def test_bench_apply_runs_named_items_with_history_off(tmp_path: Path) -> None:
    doc = _bench(
        "apply", "--items", "3000", "--only", "fresh", "--names", "--history", "0",
        "--repeat", "2", "--dir", str(tmp_path),
    )  # fmt: skip
    assert doc["history_versions"] == 0
    plain, named = doc["results"]
    assert (plain["scenario"], named["scenario"]) == ("fresh", "fresh named")
    assert named["rows_after"] == plain["rows_after"] == 3000
    assert named["store_mib"] >= plain["store_mib"]  # the names: log, index, name blocks
    assert doc["named_vs_nameless"]["fresh"] > 0
    # The runs alternate, so each named run has the nameless run before it as its pair.
    pairs = doc["named_vs_nameless_per_pair"]["fresh"]
    assert len(pairs) == len(named["runs"]) == 2
    assert pairs == [
        round(n["engine_items_per_s"] / u["engine_items_per_s"], 2)
        for u, n in zip(plain["runs"], named["runs"], strict=True)
    ]
