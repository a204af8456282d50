"""``meshsyncd demo`` as a new user runs it: a real process, real sockets, real stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_converges_and_cleans_up() -> None:
    exe = Path(sys.executable).with_name("meshsyncd")
    proc = subprocess.run(
        [str(exe), "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "demo: converged" in out
    for tier in ("WORKING", "EPISODIC", "SEMANTIC"):
        line = next(ln for ln in out.splitlines() if ln.startswith(tier))
        digests = line.split()[1:4]
        assert len(set(digests)) == 1, line
    assert '"fact":"from B"' in out and '"extra":"merged by C"' in out
    tmp = out.split("removed ")[-1].strip()
    assert tmp.startswith("/") and not Path(tmp).exists()
