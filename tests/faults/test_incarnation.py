"""A node's store deleted and recreated: its peers see a new incarnation and resync it.

DESIGN.md "Delta sync": every store has an incarnation id; a peer whose incarnation changed
gets its cursors reset. Without the reset the peers' cursors on the node's old sequence
would hide everything the new store numbers below them, so the test writes on the
recreated node (fewer writes than the old sequence reached) and checks they arrive.
"""

from __future__ import annotations

from faultnodes import TIERS, Fleet, converged, preload, wait_for

import protocol as P


def test_recreated_store_is_detected_and_fully_resynced(fleet: Fleet) -> None:
    nodes = fleet.mesh(["a", "b", "c"], sync_interval="1s")
    a, b, c = nodes
    for n in nodes:
        n.start()
    for n in nodes:
        with n.client() as cl:
            for i in range(40):
                tier = TIERS[i % 3]
                cl.put(f"{n.name}:{i}", tier=tier, key=f"{n.name}{i}", priority="normal")
            cl.delete(tier="working", key=f"{n.name}0")
    wait_for(lambda: converged(nodes), 30, "a, b and c to converge")
    old_incarnation = c.status()["incarnation"]
    # what a and b remember of c's old sequence lies above the new store's first writes
    c_seq = c.vectors()["local_seq"]
    assert all(c_seq[t] > 3 for t in TIERS), c_seq
    for peer in (a, b):
        wait_for(
            lambda p=peer: all(p.cursor_on(c, t) == c_seq[t] for t in TIERS),
            20,
            f"{peer.name} to pull c's old sequence to its end",
        )

    assert c.stop() == 0
    for path in c.store_path.parent.glob("store.db*"):
        path.unlink()
    # A new store (new incarnation) whose first local writes are numbered 1, 2, 3 in each
    # tier, made before c runs: whatever a and b remember of c's old sequence is above them.
    for tier in P.Tier:
        preload(c, 3, tier=tier)
    c.start()  # same identity and config
    new_incarnation = c.status()["incarnation"]
    assert new_incarnation != old_incarnation

    # and writes through the running daemon, riding the periodic pull only
    with c.client() as cl:
        for i in range(5):
            cl.put(f"reborn {i}", tier=TIERS[i % 3], key=f"reborn{i}", priority="low")

    wait_for(lambda: converged(nodes), 60, "the recreated node to resync with a and b")
    for peer in (a, b):
        assert peer.log_events("session open", peer=c.short, cursors_reset=True), (
            f"{peer.name} did not log a cursor reset for c's new incarnation"
        )
        with peer.client() as cl:
            for i in range(5):
                assert cl.get(tier=TIERS[i % 3], key=f"reborn{i}")["value"] == f"reborn {i}"
    counts = [{t: n.items(t) for t in TIERS} for n in nodes]
    assert counts[0] == counts[1] == counts[2], counts
    assert sum(counts[2].values()) == 3 * 40 - 3 + 9 + 5, counts
    tombstones = [{t: n.status()["tiers"][t]["tombstones"] for t in TIERS} for n in nodes]
    assert tombstones[0] == tombstones[1] == tombstones[2], tombstones
