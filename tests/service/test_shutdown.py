"""SIGTERM in the middle of a bulk transfer: a clean store, every acknowledged write, exit 0."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from servicekit import NotifySocket, mesh, preload, stop_timeout, wait_for

BULK = 100_000


def test_sigterm_during_bulk_transfer(tmp_path: Path) -> None:
    a, b = mesh(tmp_path, ["a", "b"])
    preload(a, BULK)
    notify = NotifySocket()
    b.env |= notify.env(watchdog_usec=2_000_000)
    a.start()
    b.start()
    try:
        wait_for(lambda: b.status()["tiers"]["episodic"]["items"] > 0, 60, "the bulk to start")
        acked: list[tuple[str, str, str]] = []
        with b.client() as c:
            for n in range(50):
                tier = ("working", "episodic", "semantic")[n % 3]
                priority = ("urgent", "normal", "background")[n % 3]
                c.put(f"acked-{n}", tier=tier, key=f"k{n}", priority=priority)
                acked.append((tier, f"k{n}", f"acked-{n}"))
        mid = b.status()["tiers"]["episodic"]["items"]
        assert mid < BULK, "the transfer finished before SIGTERM; the test proves nothing"
        assert b.proc is not None
        started = time.monotonic()
        code = b.stop(signal.SIGTERM, timeout=stop_timeout())
        took = time.monotonic() - started
        assert code == 0
        assert took < stop_timeout(), took
        notify.drain()
        assert notify.events()[-1] == "STOPPING"

        store = b.config.parent / "store.db"
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()

        b.start()  # the same store again: every acknowledged write is there
        with b.client() as c:
            for tier, key, value in acked:
                assert c.get(tier=tier, key=key)["value"] == value
        # and the cursor kept at SIGTERM resumes exactly: nothing lost, nothing twice
        wait_for(
            lambda: b.status()["tiers"]["episodic"]["items"] == BULK + 17, 240, "the bulk to end"
        )
        wait_for(lambda: a.digests() == b.digests(), 60, "a and b to converge")
    finally:
        notify.close()
        for n in (a, b):
            if n.proc is not None:
                n.stop()
