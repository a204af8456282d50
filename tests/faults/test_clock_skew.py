"""Clock skew: a node whose clock runs an hour ahead is refused, named, and kept out.

DESIGN.md "Conflict order": a remote timestamp more than ``max_clock_skew`` (500 ms) ahead
of the local wall clock is refused with a clear error naming the peer, and counted. Two
variants: a real daemon run under libfaketime one hour ahead (skipped where libfaketime is
not installed), and a hand-driven peer whose HELLO is stamped an hour ahead.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import trio
from evilpeer import EvilPeer, read_until_closed
from faultnodes import FaultNode, Fleet, converged, wait_for

import protocol as P
from meshsyncd.client import ClientError

HOUR_NS = 3600 * 10**9
# libfaketime preloaded into the daemon itself (not the ``faketime`` wrapper, which would
# stand between the test and the daemon's pid): its clock reads one hour ahead.
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
FAKETIME = {"LD_PRELOAD": LIBFAKETIME[0] if LIBFAKETIME else "", "FAKETIME": "+1h"}


def _faketime_works() -> str | None:
    """None if libfaketime (``FAKETIME=+1h``) moves ``time.time_ns`` an hour ahead, else why."""
    if not LIBFAKETIME:
        return "libfaketime is not installed (Debian: apt-get install -y faketime)"
    code = "import time; print(time.time_ns())"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            env=os.environ | FAKETIME,
        )
        ahead = int(out.stdout.strip()) - int(
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        )
    except (ValueError, subprocess.SubprocessError) as exc:
        return f"libfaketime does not run Python here: {exc}"
    if not 0.9 * HOUR_NS < ahead < 1.1 * HOUR_NS:
        return f"libfaketime +1h moved time.time_ns by {ahead / 1e9:.0f} s, not an hour"
    return None


def _refused(node: FaultNode, skewed: FaultNode) -> bool:
    return any(
        "ahead of our wall clock" in str(e.get("error", ""))
        and f"{skewed.origin:016x}" in str(e.get("error", ""))
        for e in node.log_events("clock skew refused", peer=skewed.short)
    )


def _assert_others_keep_syncing(a: FaultNode, b: FaultNode, key: str) -> None:
    with a.client() as cl:
        cl.put("still syncing", tier="working", key=key, priority="urgent")
    with b.client() as cl:
        cl.put("both ways", tier="episodic", key=key, priority="urgent")
    wait_for(lambda: converged([a, b]), 20, "a and b to keep syncing")
    with b.client() as cl:
        assert cl.get(tier="working", key=key)["value"] == "still syncing"


def _refused_here(row: dict[str, Any] | None) -> bool:
    """A peers-table row that is not connected and says clock skew."""
    return (
        row is not None
        and row["state"] != "connected"
        and str(row.get("reason")).startswith("clock skew")
    )


def test_node_an_hour_ahead_is_refused_and_named(fleet: Fleet) -> None:
    why = _faketime_works()
    if why is not None:
        pytest.skip(why)
    a, b, skewed = fleet.mesh(["a", "b", "d"], sync_interval="1s")
    a.start()
    b.start()
    skewed.start(env=FAKETIME)
    with skewed.client() as cl:
        cl.put("from the future", tier="episodic", key="future", priority="urgent")
    for n in (a, b):
        wait_for(lambda n=n: _refused(n, skewed), 20, f"{n.name} to refuse d and name it")
    _assert_others_keep_syncing(a, b, "k1")
    for n in (a, b):
        row = n.peer_row(skewed)
        assert row is not None and row["state"] != "connected", row
        with n.client() as cl, pytest.raises(ClientError, match="no item"):
            cl.get(tier="episodic", key="future")
    # both sides say why in the peers table's plain words (issue 12)
    for n in (a, b):
        wait_for(
            lambda n=n: str((n.peer_row(skewed) or {}).get("reason")).startswith("clock skew 36"),
            20,
            f"{n.name}'s peers table to say clock skew",
        )
    # d is told why: its peers table shows the refusal for both. d finds nothing wrong
    # with a HELLO from the past, so each of its retries shows "connected" on its side
    # until the peer's ERROR arrives (longer on a loaded machine): wait for both at once.
    for n in (a, b):
        wait_for(
            lambda n=n: _refused_here(skewed.peer_row(n)),
            20,
            f"d's peers table to say clock skew with {n.name}",
        )
    assert any(
        "peer error 3" in str(e.get("reason", "")) or "clock" in str(e.get("reason", ""))
        for e in skewed.log_events("session closed")
    ), skewed.tail()
    assert skewed.alive and a.alive and b.alive


def test_hello_stamped_an_hour_ahead_gets_clock_skew_error(fleet: Fleet) -> None:
    a, b = fleet.mesh(["a", "b"], sync_interval="1s")
    evil = EvilPeer(fleet.node("e"), a)
    a.start()
    b.start()

    async def attack() -> list[P.Frame]:
        stream = await evil.connect()
        async with stream:
            conn = P.Connection()
            await stream.send_all(evil.hello(conn, ahead_ns=HOUR_NS))
            return await read_until_closed(stream, conn, 10)

    events = trio.run(attack)
    errors = [e for e in events if isinstance(e, P.Error)]
    assert errors and errors[0].code == P.ErrorCode.CLOCK_SKEW, events
    assert f"{evil.me.origin:016x}" in errors[0].text and "ahead" in errors[0].text, errors
    wait_for(lambda: _refused(a, evil.me), 10, "a to log the refusal naming e")
    _assert_others_keep_syncing(a, b, "k2")
    assert a.alive


def test_refused_skewed_node_is_not_redialled_in_a_storm(fleet: Fleet) -> None:
    why = _faketime_works()
    if why is not None:
        pytest.skip(why)
    a, skewed = fleet.mesh(["a", "d"], sync_interval="1s")
    a.start()
    skewed.start(env=FAKETIME)
    wait_for(lambda: _refused(a, skewed), 20, "a to refuse d")
    first = len(a.log_events("clock skew refused"))
    window = 8.0
    time.sleep(window)
    refusals = len(a.log_events("clock skew refused")) - first
    # Exponential backoff from 0.25 s allows about log2(8 / 0.25) + 1 = 6 attempts per
    # dialer in 8 s; both nodes dial, so a dozen refusals, not a hundred.
    assert refusals <= 20, f"a refused d {refusals} times in {window:.0f} s"
