"""atheris entry point: `entry.py TARGET [libFuzzer flags...]`; invariants are in targets.py.

Run it through `fuzz/run.sh TARGET SECONDS` (fuzz/README.md), which passes the corpus,
limits and crash directory; any libFuzzer flag given here is passed through. TARGET is
one of `fuzz.targets.TARGETS` (item, batch, frame, connection, memshadow).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["protocol"]):
    # protocol itself, and protocol.memshadow, which protocol does not import
    import protocol.memshadow  # noqa: F401  (instrumented for coverage)

from fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags...]")
    target = sys.argv[1]
    check = TARGETS[target]
    # libFuzzer re-runs argv[0] through the shell for -merge and -fork; a .py file is not
    # executable, so hand it the command line that runs this script, target included.
    argv0 = " ".join(shlex.quote(a) for a in (sys.executable, sys.argv[0], target))
    atheris.Setup([argv0, *sys.argv[2:]], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
