"""``import protocol`` must stay pure: no I/O framework, no storage, no daemon (STYLE.md)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("trio", "sqlite3", "_sqlite3", "structlog", "click", "meshsyncd", "socket", "ssl")


def test_import_protocol_loads_no_io_modules() -> None:
    code = (
        "import sys, json, protocol, protocol.connection, protocol.frames, protocol.memshadow\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
    assert not any(m.startswith("meshsyncd") for m in loaded)
