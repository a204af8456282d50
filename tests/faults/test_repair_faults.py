"""Repair with real daemons: a row deleted behind a node's back, a store restored from a backup.

DESIGN.md "The mesh", Repair: cursors are the fast path, digests are the proof. Both faults
leave the cursors claiming data the store does not hold; only the self-check, the digest
comparison and range reconciliation (SPEC.md 4.2) bring the data back, and without a full
transfer.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

from faultnodes import EXE, TIERS, FaultNode, Fleet, converged, wait_for

from meshsyncd.control.proto import key_item_id


def _check(node: FaultNode) -> int:
    proc = subprocess.run(
        [EXE, "check", "--config", str(node.config)], capture_output=True, text=True, timeout=60
    )
    return proc.returncode


def _repair(node: FaultNode) -> dict[str, int]:
    return dict(node.status()["repair"])


def test_row_deleted_while_stopped_comes_back_without_a_full_transfer(fleet: Fleet) -> None:
    a, b = fleet.mesh(["a", "b"], sync_interval="1s")
    a.start()
    b.start()
    with a.client() as cl:
        for i in range(40):
            cl.put(f"value {i}", tier="episodic", key=f"k{i}", priority="normal")
    wait_for(lambda: converged([a, b]), 30, "a and b to converge")
    wait_for(lambda: _check(a) == 0, 30, "meshsyncd check to agree")

    assert b.stop() == 0
    lost = key_item_id("k7")
    conn = sqlite3.connect(b.store_path)
    with conn:
        assert conn.execute("DELETE FROM items WHERE item_id = ?", (lost,)).rowcount == 1
    conn.close()
    b.start()

    def back() -> bool:
        with b.client() as cl:
            try:
                return bool(cl.get(tier="episodic", key="k7")["value"] == "value 7")
            except Exception:
                return False

    wait_for(back, 30, "the deleted row to come back to b")
    wait_for(lambda: converged([a, b]), 30, "a and b to agree again")
    assert _check(a) == 0 and _check(b) == 0
    assert _repair(b)["digest_fixes"] >= 1  # b's self-check noticed the row was gone
    assert _repair(b)["items_repaired"] == 1
    row = b.peer_row(a)
    assert row is not None and row["items_in"] == 1  # one item moved, not the tier
    done = [e for n in (a, b) for e in n.log_events("repair: reconciliation done")]
    assert any(e.get("items_repaired") == 1 and e.get("peer") == a.short for e in done), done


def _copy_store(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.parent.glob(src.name + "*"):
        shutil.copy2(path, dst / path.name)


def test_store_restored_from_an_old_backup_catches_up_both_ways(fleet: Fleet) -> None:
    a, b = fleet.mesh(["a", "b"], sync_interval="1s")
    a.start()
    b.start()
    for node in (a, b):
        with node.client() as cl:
            for i in range(10):
                cl.put(f"{node.name} before {i}", tier="episodic", key=f"{node.name}-old{i}")
    wait_for(lambda: converged([a, b]), 30, "a and b to converge")
    assert b.stop() == 0
    backup = b.dir / "backup"
    _copy_store(b.store_path, backup)
    b.start()
    for node in (a, b):
        with node.client() as cl:
            for i in range(10):
                cl.put(f"{node.name} after {i}", tier="episodic", key=f"{node.name}-new{i}")
    with b.client() as cl:  # 30 changes of b's sequence that come back as one row
        for i in range(30):
            cl.put(f"hot {i}", tier="episodic", key="b-hot")
    wait_for(lambda: converged([a, b]), 30, "a and b to converge after the backup")
    wait_for(
        lambda: a.cursor_on(b, "episodic") == b.status()["tiers"]["episodic"]["seq"],
        30,
        "a to pull b to its end",
    )

    assert b.stop() == 0
    for path in b.store_path.parent.glob(b.store_path.name + "*"):
        path.unlink()
    _copy_store(backup / b.store_path.name, b.store_path.parent)
    # Same incarnation, older sequence: once b has pulled back what it lost, its sequence is
    # still ~30 below a's cursor on it, and its next writes are numbered below that cursor.
    b.start()
    with b.client() as cl:
        for i in range(5):
            cl.put(f"b restored {i}", tier="episodic", key=f"b-restored{i}", priority="low")

    wait_for(lambda: converged([a, b]), 60, "the restored node and its peer to converge")
    for node in (a, b):
        with node.client() as cl:
            for i in range(10):  # writes made after the backup reached b again
                assert cl.get(tier="episodic", key=f"b-new{i}")["value"] == f"b after {i}"
                assert cl.get(tier="episodic", key=f"a-new{i}")["value"] == f"a after {i}"
            assert cl.get(tier="episodic", key="b-hot")["value"] == "hot 29"
            for i in range(5):  # and b's new writes reached a
                assert cl.get(tier="episodic", key=f"b-restored{i}")["value"] == f"b restored {i}"
    rewinds = a.log_events(
        "repair: peer's sequence went back (restored from an older copy?);"
        " our cursor on it goes back too",
        peer=b.short,
    )
    assert rewinds and _repair(a)["cursor_rewinds"] >= 1
    assert {t: a.digests()[t] for t in TIERS} == {t: b.digests()[t] for t in TIERS}


def test_check_names_the_node_whose_digest_differs(fleet: Fleet) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    a.add_peer(b)
    b.add_peer(a, None, "--write-tiers", "working,episodic")  # a may not write semantic here
    for node in (a, b):
        node.set_option("sync_interval", "1s")
        node.start()
    with a.client() as cl:
        cl.put("only on a", tier="semantic", key="s", priority="urgent")
        cl.put("on both", tier="episodic", key="e", priority="urgent")
    wait_for(lambda: a.digests()["episodic"] == b.digests()["episodic"], 30, "episodic to agree")
    proc = subprocess.run(
        [EXE, "check", "--json", "--config", str(a.config)], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["tiers"]["semantic"]["differ"] == [b.node_id]
    assert result["tiers"]["episodic"]["agree"] and result["tiers"]["working"]["agree"]
    assert b.short in proc.stderr
