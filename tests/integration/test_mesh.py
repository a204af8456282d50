"""Three real daemons on loopback: convergence, catch-up after restart, refusals."""

from __future__ import annotations

from pathlib import Path

from meshnodes import Node, mesh, wait_for


def _converged(nodes: list[Node]) -> bool:
    return len({tuple(sorted(n.digests().items())) for n in nodes}) == 1


def test_three_nodes_converge_and_a_stopped_node_catches_up(tmp_path: Path) -> None:
    nodes = mesh(tmp_path, ["a", "b", "c"])
    for n in nodes:
        n.set_sync_interval("1s")
        n.start()
    try:
        for i, n in enumerate(nodes):
            with n.client() as c:
                c.put(f'{{"from": "{n.name}"}}', tier="episodic", key=f"k{i}", priority="urgent")
                c.put("bulk", tier="semantic", key=f"s{i}", priority="low")
        wait_for(lambda: _converged(nodes), 30, "three nodes to converge")
        with nodes[2].client() as c:
            assert c.get(tier="episodic", key="k0")["value"] == '{"from": "a"}'
        # stop c, write on a, restart c: it catches up from its cursor
        assert nodes[2].stop() == 0
        with nodes[0].client() as c:
            for j in range(50):
                c.put(f"late {j}", tier="working", key=f"late{j}")
        nodes[2].start()
        wait_for(lambda: _converged(nodes), 30, "restarted node to catch up")
        assert nodes[2].status()["tiers"]["working"]["items"] == 50
    finally:
        for n in nodes:
            if n.proc is not None:
                n.stop()


def test_unknown_certificate_is_refused_and_named(tmp_path: Path) -> None:
    a, _b = mesh(tmp_path, ["a", "b"])
    stranger = Node(tmp_path, "x")
    stranger.add_peer(a)  # x lists a, but a does not list x
    a.start()
    stranger.start()
    try:
        wait_for(
            lambda: any(
                e.get("event") == "connection refused" and e.get("peer") == stranger.node_id[:12]
                for e in a.logs()
            ),
            20,
            "a to refuse x and name it",
        )
        with a.client() as c:
            table = {row["id"]: row for row in c.peers()}
        assert stranger.node_id not in table
    finally:
        a.stop()
        stranger.stop()
