"""The ``import_versions`` and ``changes`` control operations on their own (docs/control.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlkit import PEER_ID, BackgroundNode

from meshsyncd.client import Client, ClientError

ORIGIN = "00000000000000aa"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    with BackgroundNode(tmp_path) as node, Client(node.path) as c:
        yield c


def _import(client: Client, versions: list[Any], **kw: Any) -> dict[str, Any]:
    params = {"tier": "episodic", "origin": ORIGIN, "versions": versions, **kw}
    return client.request("import_versions", params)


def _v(n: int, ts: int, op: str = "insert", **kw: Any) -> dict[str, Any]:
    out = {"item_id": f"{n:032x}", "timestamp_ns": ts, "op": op, **kw}
    if op != "delete" and "value" not in kw and "value_b64" not in kw:
        out["value"] = f"v{n}"
    return out


@pytest.mark.parametrize(
    "params",
    [
        {"origin": "xyz"},
        {"origin": f"{int.from_bytes(PEER_ID[:8], 'big'):016x}"},  # a known peer's origin
        {"versions": "nope"},
        {"versions": [{}] * 10_001},
        {"tier": "L9"},
    ],
)
def test_bad_import_requests_are_refused_whole(client: Client, params: dict[str, Any]) -> None:
    request = {"tier": "episodic", "origin": ORIGIN, "versions": [], **params}
    with pytest.raises(ClientError) as info:
        client.request("import_versions", request)
    assert info.value.code in ("bad_request", "unknown_tier")


def test_bad_versions_are_refused_one_by_one(client: Client) -> None:
    now = time.time_ns() - 10**9
    result = _import(
        client,
        [
            _v(1, now),
            "not an object",
            _v(2, now, op="replicate"),
            _v(3, -1),
            {"item_id": "zz", "timestamp_ns": now, "op": "insert", "value": "x"},
            _v(4, now, op="merge", value="[1, 2]"),
            _v(5, now + 3_600 * 10**9),
            _v(6, now, op="update", value_b64="@@"),
        ],
    )
    assert result["accepted"] == 1 and result["counts"] == {"insert": {"applied": 1}}
    reasons = {r["index"]: r["reason"] for r in result["refused"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert "op must be one of" in reasons[2] and "u64" in reasons[3]
    assert "item id" in reasons[4] and "JSON object" in reasons[5]
    assert "clock skew" in reasons[6] and "limit 500.0 ms" in reasons[6]


def test_changes_pages_in_sequence_order(client: Client) -> None:
    ids = [client.put(f'{{"v": {i}}}', tier="semantic")["item_id"] for i in range(5)]
    client.merge({"k": 1}, item_id=ids[0], tier="semantic")
    seen, after, pages = [], 0, 0
    while True:
        page = client.request("changes", {"tier": "semantic", "after_seq": after, "limit": 2})
        seen += page["versions"]
        after, pages = page["to_seq"], pages + 1
        if not page["more"]:
            break
    assert pages == 3 and after == 6
    assert [v["item_id"] for v in seen] == [*ids[1:], ids[0], ids[0]]
    assert [v["op"] for v in seen[-2:]] == ["insert", "merge"]
    assert [v["seq"] for v in seen] == [2, 3, 4, 5, 6, 6]
    for bad in ({"after_seq": -1}, {"limit": 0}, {"limit": 1001}, {"after_seq": True}):
        with pytest.raises(ClientError):
            client.request("changes", {"tier": "semantic", **bad})
