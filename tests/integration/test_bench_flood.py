"""Smoke test for ``meshsyncd bench flood`` at a tiny size, through the CLI, on a real daemon.

What is checked is what the daemon did with the flood (how many connections it closed at
once under the default limits, how few lines it logged); the RSS target is the bench's
business, never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).with_name("meshsyncd"))


def test_bench_flood_reports_rss_per_round_and_refusals() -> None:
    proc = subprocess.run(
        [EXE, "bench", "flood", "--rounds", "2", "--connections", "30", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["limits"] == "defaults"
    assert [r["round"] for r in doc["per_round"]] == [1, 2]
    for r in doc["per_round"]:
        # max_per_source = 8: the rest of the round is closed before any TLS byte is read
        assert (r["refused_at_once"], r["held"], r["never_closed"]) == (22, 8, 0)
        assert r["rss_mib"] > 0
        assert r["log_lines"] <= 3
    assert doc["rss_start_mib"] > 0 and doc["rss_end_mib"] > 0
    assert set(doc["targets"]) == {
        "end RSS within 10 MiB of start",
        "last 5 rounds within 2 MiB",
    }
