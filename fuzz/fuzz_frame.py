"""atheris entry point for the frame target; the invariant lives in fuzz/targets.py.

Run it through `fuzz/run.sh frame SECONDS` (fuzz/README.md), which passes the corpus,
limits and crash directory; any libFuzzer flag given here is passed through.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["protocol"]):
    import protocol  # noqa: F401  (instrumented for coverage: protocol.frames.parse_frame)

from fuzz.targets import check_frame


def one_input(data: bytes) -> None:
    check_frame(data)


def main() -> None:
    # libFuzzer re-runs argv[0] through the shell for -merge and -fork; a .py file is not
    # executable, so hand it the command line that runs this script with this Python.
    argv0 = f"{shlex.quote(sys.executable)} {shlex.quote(sys.argv[0])}"
    atheris.Setup([argv0, *sys.argv[1:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
