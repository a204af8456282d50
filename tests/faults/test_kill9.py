"""``kill -9`` of a node in the middle of receiving a large transfer, then a restart.

DESIGN.md "Durability": an acknowledged local write survives ``kill -9``; "Delta sync":
applying a batch and advancing the cursor is one transaction, so after the crash the store
is intact and the node pulls on from its committed cursor instead of from 0.
"""

from __future__ import annotations

import time

from faultnodes import (
    TIERS,
    Fleet,
    committed_cursors,
    converged,
    integrity_check,
    preload,
    wait_for,
)

from meshsyncd.client import ClientError

BULK = 100_000


def test_kill9_mid_transfer_keeps_the_store_the_writes_and_the_cursor(fleet: Fleet) -> None:
    a, b = fleet.mesh(["a", "b"], sync_interval="1s")
    preload(a, BULK)
    b.start()
    acked: dict[tuple[str, str], str] = {}

    def write(n: int) -> None:
        tier = ("working", "episodic", "semantic")[n % 3]
        prio = ("urgent", "normal", "low", "background")[n % 4]
        with b.client() as c:
            c.put(f"local {n}", tier=tier, key=f"w{n}", priority=prio)
        acked[tier, f"w{n}"] = f"local {n}"  # only after the daemon answered

    for n in range(30):
        write(n)
    a.start()
    # keep writing on b while it receives the bulk; kill it once it is well under way
    n = 30
    deadline = time.monotonic() + 120
    while b.items("episodic") < BULK // 5:
        assert time.monotonic() < deadline, "the bulk transfer to b did not get going"
        write(n)
        n += 1
    cursor_before = b.cursor_on(a, "episodic")
    write(n)
    b.kill9()
    assert 0 < cursor_before < BULK, cursor_before

    # the store survived the crash intact (read-only: the node is stopped)
    assert integrity_check(b.store_path) == "ok"
    restart = committed_cursors(b.store_path, a)
    assert restart["episodic"] >= cursor_before, (cursor_before, restart)

    b.start()
    with b.client() as c:  # every acknowledged local write is there
        for (tier, key), value in acked.items():
            try:
                got = c.get(tier=tier, key=key)["value"]
            except ClientError as exc:
                raise AssertionError(f"acknowledged write {tier}/{key} lost: {exc}") from None
            assert got == value, (tier, key, got)

    wait_for(lambda: converged([a, b]), 180, "b to finish the transfer after the restart")
    assert b.items("episodic") == BULK + sum(1 for t, _ in acked if t == "episodic")
    # It resumed from the committed cursors: after the restart a sent b only what lies
    # beyond them in a's sequences (which also number b's writes a applied: b gets those
    # back too), not the whole tier again.
    a_seq = a.vectors()["local_seq"]
    rest = sum(a_seq[t] - restart[t] for t in TIERS)
    row = a.peer_row(b)
    assert row is not None and row["state"] == "connected", row
    assert row["items_out"] <= rest < BULK, (row["items_out"], rest, restart, a_seq)
    assert {t: b.cursor_on(a, t) for t in TIERS} == a_seq
