"""``meshsyncd import``/``export --format memshadow`` against a live control server.

The import side uses batches MEMSHADOW's own code wrote (the reference vectors in
``protocol/vectors/``), re-stamped to now where the tier's retention or the test needs it;
the export side is read back by the test re-implementation of the reference's
``MemorySyncBatch.unpack`` (``tests/protocol/memshadow_refimpl.py``, checked against the real
reference through the vectors).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from controlkit import NODE_ID, BackgroundNode

from meshsyncd.client import Client, ClientError
from meshsyncd.commands.cli import main
from protocol import Op
from protocol import memshadow as MS

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "vectors"
sys.path.insert(0, str(ROOT / "tests" / "protocol"))
from memshadow_refimpl import ref_unpack  # noqa: E402


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BackgroundNode]:
    with BackgroundNode(tmp_path) as served:
        yield served


def cli(node: BackgroundNode, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--socket", str(node.path)])


def _restamp(name: str, tier: MS.MsTier, base_ns: int) -> MS.MemshadowBatch:
    """A reference vector's batch moved to ``tier`` and stamped ``base_ns + index``."""
    batch = MS.parse_memshadow((VECTORS / f"{name}.bin").read_bytes())
    items = tuple(
        dataclasses.replace(item, tier=tier, timestamp_ns=base_ns + i)
        for i, item in enumerate(batch.items)
    )
    return dataclasses.replace(batch, tier=tier, items=items)


def _write(tmp_path: Path, name: str, batch: MS.MemshadowBatch) -> str:
    path = tmp_path / name
    path.write_bytes(MS.pack_memshadow(batch))
    return str(path)


def _get(node: BackgroundNode, tier: str, iid: bytes) -> dict[str, Any]:
    with Client(node.path) as client:
        return client.get(item_id=iid.hex(), tier=tier, include_deleted=True)


def test_import_mixed_batches_lands_every_item(node: BackgroundNode, tmp_path: Path) -> None:
    now = time.time_ns() - 5_000_000_000
    batches = {
        "working": _restamp("memshadow-working-mixed", MS.MsTier.WORKING, now),
        "episodic": _restamp("memshadow-episodic-plain", MS.MsTier.EPISODIC, now),
        "semantic": _restamp("memshadow-semantic-gzip", MS.MsTier.SEMANTIC, now),
    }
    files = [_write(tmp_path, f"{t}.bin", b) for t, b in batches.items()]
    result = cli(node, "import", "--format", "memshadow", *files, "--json")
    assert result.exit_code == 1, result.output  # the REPLICATE item is refused
    report = json.loads(result.output[: result.output.rindex("}") + 1])
    assert [r["op"] for r in report["refused"]] == ["replicate"]
    assert "REPLICATE" in report["refused"][0]["reason"]
    counts = report["counts"]
    assert counts["insert"]["applied"] == 5 + 1 + 40
    assert counts["merge"]["applied"] == 2 and counts["update"]["applied"] == 2
    assert counts["delete"] == {"applied": 2}  # tombstones, their JSON payloads dropped
    assert node.daemon is not None
    pushed = list(node.daemon.pushed)  # handed to the daemon's fan-out like local writes
    assert len(pushed) == 46 + 2 + 2 + 2 and {p.op for p in pushed} == {1, 2, 3, 4}
    for tier, batch in batches.items():
        origin = MS.import_origin(batch.source_node)
        latest: dict[bytes, MS.MemshadowItem] = {}
        for item in batch.items:
            if item.op != Op.REPLICATE:
                latest[MS.import_item_id(item.item_id)] = item
        for iid, item in latest.items():
            got = _get(node, tier, iid)
            assert got["tier"] == tier and got["item_id"] == iid.hex()
            assert got["origin"] == f"{origin:016x}"
            assert got["timestamp_ns"] == item.timestamp_ns
            if item.op == Op.DELETE:
                assert got["deleted"] and got["op"] == "delete"
            elif item.op == Op.MERGE:
                assert json.loads(got["value"]) == json.loads(item.payload)
            else:
                assert got["op"] == Op(item.op).name.lower()
                assert got["value"].encode() == item.payload
    # 32-hex ids are kept; the others are hashed by the documented rule
    hex_item = batches["episodic"].items[0]
    assert MS.import_item_id(hex_item.item_id).hex() == hex_item.item_id.decode()
    assert _get(node, "working", MS.import_item_id(b"note-42"))["op"] == "update"

    with Client(node.path) as client:
        before = client.status()["tiers"]
    again = cli(node, "import", "--format", "memshadow", *files, "--json")
    again_report = json.loads(again.output[: again.output.rindex("}") + 1])
    assert all("applied" not in c for c in again_report["counts"].values()), again_report
    assert again_report["counts"]["insert"]["present"] == 46
    with Client(node.path) as client:
        assert client.status()["tiers"] == before  # same seqs, same digests
    assert node.daemon.pushed == pushed  # nothing new to fan out


def test_lww_order_with_local_writes(node: BackgroundNode, tmp_path: Path) -> None:
    iid = "00112233445566778899aabbccddeeff"
    with Client(node.path) as client:
        local = client.put("local value", item_id=iid, tier="semantic")
    older = MS.MemshadowItem(
        item_id=iid.encode(),
        timestamp_ns=local["timestamp_ns"] - 1,
        tier=3,
        op=Op.UPDATE,
        payload=b"older import",
    )
    newer = dataclasses.replace(older, timestamp_ns=local["timestamp_ns"] + 1, payload=b"newer")
    for name, item in (("old.bin", older), ("new.bin", newer)):
        batch = MS.MemshadowBatch(
            batch_id="x", source_node="ms-a", target_node="", tier=3, items=(item,)
        )
        path = _write(tmp_path, name, batch)
        assert cli(node, "import", "--format", "memshadow", path).exit_code == 0
        got = _get(node, "semantic", bytes.fromhex(iid))
        assert got["value"] == ("local value" if name == "old.bin" else "newer")


def test_future_timestamps_are_refused_alone(node: BackgroundNode, tmp_path: Path) -> None:
    now = time.time_ns()
    items = tuple(
        MS.MemshadowItem(
            item_id=b"item-%d" % i, timestamp_ns=ts, tier=2, op=Op.INSERT, payload=b"v"
        )
        for i, ts in enumerate((now - 1_000_000_000, now + 60_000_000_000))
    )
    batch = MS.MemshadowBatch(batch_id="f", source_node="ms", target_node="", tier=2, items=items)
    result = cli(node, "import", "--format", "memshadow", _write(tmp_path, "f.bin", batch))
    assert result.exit_code == 1
    assert "item 1 (id 'item-1')" in result.output and "clock skew" in result.output
    assert "refused" in result.output
    assert _get(node, "episodic", MS.import_item_id(b"item-0"))["value"] == "v"
    with pytest.raises(ClientError):
        _get(node, "episodic", MS.import_item_id(b"item-1"))


def test_dry_run_writes_nothing(node: BackgroundNode, tmp_path: Path) -> None:
    batch = _restamp("memshadow-episodic-plain", MS.MsTier.EPISODIC, time.time_ns() - 10**9)
    path = _write(tmp_path, "p.bin", batch)
    result = cli(node, "import", "--format", "memshadow", "--dry-run", path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["insert"] == {"would_apply": 1}
    with Client(node.path) as client:
        assert client.status()["tiers"]["episodic"]["items"] == 0


def test_bad_files_fail_before_anything_is_written(node: BackgroundNode, tmp_path: Path) -> None:
    good = str(VECTORS / "memshadow-episodic-plain.bin")
    bad = str(VECTORS / "memshadow-bad-item-tier.bin")
    result = cli(node, "import", "--format", "memshadow", good, bad)
    assert result.exit_code == 2
    assert (
        result.output.count("\n") == 1 and "memshadow.items[0].tier at offset 229" in result.output
    )
    assert "Traceback" not in result.output
    with Client(node.path) as client:
        assert client.status()["tiers"]["episodic"]["items"] == 0
    assert cli(node, "import", "--format", "memshadow", str(tmp_path / "missing")).exit_code == 2
    assert cli(node, "import", good).exit_code == 2  # --format is required


def test_origin_of_a_node_is_refused(node: BackgroundNode) -> None:
    own = int.from_bytes(NODE_ID[:8], "big")
    with Client(node.path) as client, pytest.raises(ClientError, match="node's own"):
        client.request(
            "import_versions", {"tier": "episodic", "origin": f"{own:016x}", "versions": []}
        )


def test_export_is_read_by_the_reference_rules(node: BackgroundNode, tmp_path: Path) -> None:
    with Client(node.path) as client:
        values = ['{"v": 0}'] + [f"value {i}" for i in range(1, 300)]  # merge needs an object
        ids = [client.put(v, tier="episodic")["item_id"] for v in values]
        client.merge({"a": 1}, item_id=ids[0], tier="episodic")
        client.delete(item_id=ids[1], tier="episodic")
        client.put("x" * 70_000, tier="episodic")  # too big for a u16 payload_len
        seq = client.status()["tiers"]["episodic"]["seq"]
    out = tmp_path / "out"
    result = cli(
        node, "export", "--format", "memshadow", "--tier", "episodic", "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["to_seq"] == seq and len(report["skipped"]) == 1
    seen: dict[str, list[dict[str, Any]]] = {}
    for name in report["files"]:
        data = Path(name).read_bytes()
        batch = MS.parse_memshadow(data)
        assert 0 < len(batch.items) <= 255 and data[14] == len(batch.items)
        ref = ref_unpack(data)
        assert ref["tier"] == 2 and len(ref["items"]) == len(batch.items)
        for item in ref["items"]:
            seen.setdefault(item["item_id"], []).append(item)
    assert sum(len(v) for v in seen.values()) == report["items"] == 301
    assert set(seen) == set(ids)
    assert [i["op"] for i in seen[ids[0]]] == [1, 4]  # the INSERT, then the MERGE field
    assert seen[ids[1]][-1]["op"] == 3 and seen[ids[1]][-1]["payload_hex"] == ""
    assert bytes.fromhex(seen[ids[2]][0]["payload_hex"]) == b"value 2"
    # incremental: nothing after to_seq
    again = cli(
        node,
        "export",
        "--format",
        "memshadow",
        "--tier",
        "episodic",
        "--since",
        str(seq),
        "--out",
        str(tmp_path / "none"),
        "--json",
    )
    assert json.loads(again.output)["files"] == []
    # another node imports the export: same ids, timestamps and values
    (tmp_path / "other").mkdir()
    with BackgroundNode(tmp_path / "other") as other:
        back = cli(other, "import", "--format", "memshadow", *report["files"], "--json")
        assert back.exit_code == 0, back.output
        counts = json.loads(back.output)["counts"]
        assert counts["insert"] == {"applied": 299}  # ids[1] travels as its tombstone
        assert counts["delete"] == counts["merge"] == {"applied": 1}
        for iid in (ids[0], ids[2], ids[299]):
            mine, theirs = (
                _get(node, "episodic", bytes.fromhex(iid)),
                _get(other, "episodic", bytes.fromhex(iid)),
            )
            assert (mine["value"], mine["timestamp_ns"]) == (
                theirs["value"],
                theirs["timestamp_ns"],
            )
        assert _get(other, "episodic", bytes.fromhex(ids[1]))["deleted"]


def test_working_items_past_retention_change_nothing(node: BackgroundNode, tmp_path: Path) -> None:
    old = _restamp(
        "memshadow-episodic-plain", MS.MsTier.WORKING, time.time_ns() - 2 * 86_400 * 10**9
    )
    result = cli(node, "import", "--format", "memshadow", _write(tmp_path, "o.bin", old), "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)["counts"]
    assert counts == {
        "insert": {"unchanged": 1},
        "merge": {"unchanged": 1},
        "update": {"unchanged": 1},
    }
