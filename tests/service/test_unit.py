"""The shipped systemd unit: sandbox exposure, ``systemd-analyze verify``, and the sandbox's
MemoryDenyWriteExecute against a real daemon."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from servicekit import UNIT, Node, wait_for

from meshsyncd.client import Client

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
MAX_EXPOSURE = 2.0
SHIPPED_EXE = "/opt/meshsyncd/venv/bin/meshsyncd"


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60)


@needs_analyze
def test_security_exposure_is_at_most_two() -> None:
    proc = _analyze("security", "--offline=true", "--no-pager", str(UNIT))
    found = re.search(r"Overall exposure level for meshsyncd\.service: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, proc.stdout


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    """The unit verifies cleanly once its ExecStart binary exists.

    ``verify`` checks that ExecStart is executable, and /opt/meshsyncd is not installed on a
    test machine: the shipped file must fail on that point only, and a copy whose ExecStart
    names this venv's real ``meshsyncd`` (everything else byte for byte) must pass.
    """
    shipped = _analyze("verify", str(UNIT))
    complaints = [line for line in shipped.stderr.splitlines() if line.strip()]
    assert all(f"{SHIPPED_EXE} is not executable" in line for line in complaints), complaints
    exe = Path(sys.executable).with_name("meshsyncd")
    assert os.access(exe, os.X_OK)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={SHIPPED_EXE} ") == 1
    copy = tmp_path / "meshsyncd.service"
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXE} ", f"ExecStart={exe} "))
    proc = _analyze("verify", str(copy))
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_unit_declares_what_the_daemon_relies_on() -> None:
    """Settings the code depends on (notify protocol, reload signal, directories)."""
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "StateDirectory=meshsyncd",
        "RuntimeDirectory=meshsyncd",
        "ConfigurationDirectory=meshsyncd",
        "ReadWritePaths=/etc/meshsyncd",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert re.search(rf"(?m)^{re.escape(line)}$", text), line
    assert re.search(r"(?m)^WatchdogSec=\d+s$", text)
    # Documentation= names a file the documented install procedure creates.
    doc = re.search(r"(?m)^Documentation=file:(\S+)$", text)
    assert doc, "Documentation= should be a file: path"
    guide = (UNIT.parent.parent / "docs" / "operations.md").read_text()
    assert f"install -D -m 0644 docs/operations.md {doc.group(1)}" in guide
    sysusers = (UNIT.parent / "meshsyncd.sysusers").read_text()
    assert re.search(r"(?m)^u meshsyncd ", sysusers)


def _mdwe_supported() -> bool:
    """PR_SET_MDWE works here (tried in a child: it cannot be switched off again)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes; print(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() == "0"


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel lacks PR_SET_MDWE (Linux < 6.3)")
def test_daemon_syncs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes must not break Python, cryptography or zstandard.

    Emulated with the kernel's own W^X switch (prctl PR_SET_MDWE, inherited across exec),
    which refuses the same writable+executable mappings as systemd's seccomp filter.
    """
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    a.add_peer(b)
    b.add_peer(a)
    wrapper = (  # switch W^X on, prove it bites, then become the daemon
        "import ctypes, mmap, os, sys\n"
        "assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    sys.exit('a writable+executable mapping was allowed')\n"
        "except PermissionError:\n"
        "    pass\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    exe = str(Path(sys.executable).with_name("meshsyncd"))
    log = a.log_path.open("ab")
    a.proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, exe, "run", "--config", str(a.config)],
        stdout=log,
        stderr=log,
        env=a.env,
    )
    log.close()
    try:
        wait_for(lambda: a._answers(), 20, "a under MDWE to answer")
        b.start()
        with Client(a.socket, timeout=10) as c:
            c.put("x" * 5000, tier="semantic", key="big", priority="urgent")  # zstd on the way
        wait_for(lambda: a.digests() == b.digests(), 30, "b to receive a's item over TLS")
    finally:
        for n in (a, b):
            if n.proc is not None:
                assert n.stop(signal.SIGTERM) == 0
