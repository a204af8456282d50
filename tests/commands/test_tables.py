"""Every table the CLI prints fits 100 columns by default, with realistic ids and values;
``-o wide`` keeps everything; short ids, origins and prefixes are one form (issue 12)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from meshsyncd.commands.conflicts import CONFLICT_COLUMNS, CONFLICT_VALUE_COLUMNS, conflict_rows
from meshsyncd.commands.data import LIST_COLUMNS, list_rows, watch_line
from meshsyncd.commands.history import HISTORY_COLUMNS, history_rows
from meshsyncd.commands.operator import (
    PEER_COLUMNS,
    STATUS_COLUMNS,
    SYNC_COLUMNS,
    VECTOR_COLUMNS,
    peer_rows,
    status_rows,
    sync_rows,
    vector_rows,
)
from meshsyncd.commands.output import MAX_WIDTH, Column, Output, render_table
from meshsyncd.commands.snapshot import SNAPSHOT_COLUMNS, snapshot_rows
from meshsyncd.identity import node_id_text
from meshsyncd.ids import IdPrefixError, origin_text, resolve_prefix, short_text

NOW = 1_790_000_000.0
NOW_NS = int(NOW * 1e9)
NODES = [node_id_text(hashlib.sha256(bytes([n])).digest()) for n in range(3)]
TABLE, WIDE = Output("table"), Output("wide")


def origin_of(node: str) -> str:
    """The 16-hex origin the control socket sends for items written on ``node``."""
    from meshsyncd.identity import parse_node_id

    return parse_node_id(node)[:8].hex()


def item(n: int, node: str, value: str) -> dict[str, Any]:
    return {
        "item_id": hashlib.sha256(b"item%d" % n).hexdigest()[:32],
        "seq": 1_234_567 + n,
        "op": "update",
        "timestamp_ns": NOW_NS + n,
        "origin": origin_of(node),
        "size": len(value),
        "value": value,
        "deleted": False,
    }


PEERS = [
    {
        "id": NODES[1],
        "address": "192.168.100.200:7700",
        "state": "disconnected",
        "last_seen": NOW - 7200,
        "rtt_ms": 12.345,
        "clock_offset_ms": -3210.5,
        "cursors": {"working": 123456789, "episodic": 987654321, "semantic": 5},
        "lag": {"working": 1000000, "episodic": 0, "semantic": 0},
        "bytes_in": 12_345_678_901,
        "bytes_out": 98_765_432_109,
        "items_in": 100_000_000,
        "items_out": 99_999_999,
        "pushes_dropped": 12345,
        "rejected": 678,
        "reason": "refused by peer: our id is not in its config",
        "last_error": "connection lost: BrokenResourceError",
    },
    {
        "id": NODES[2],
        "address": "node-c.eu-west.example.internal:7700",
        "state": "backoff",
        "last_seen": None,
        "reason": "connection refused at node-c.eu-west.example.internal:7700",
    },
    {"id": NODES[0], "address": "10.0.0.2:7700", "state": "connected", "last_seen": NOW - 1},
    {
        "id": NODES[0][:40] + "a" * 12,
        "address": "[2001:db8:1234:5678:9abc:def0:1234:5678]:7700",
        "state": "connecting",
        "reason": "not connected yet",
    },
]
LONG = '{"fact": "the user prefers metric units", "confidence": 0.9, "source": "chat"}' * 3
CONFLICTS = [
    {
        "at_ns": NOW_NS,
        "tier": "semantic",
        "item_id": hashlib.sha256(b"c").hexdigest()[:32],
        "winner": {"timestamp_ns": NOW_NS - 5, "origin": origin_of(NODES[0])},
        "loser": {"timestamp_ns": NOW_NS - 9, "origin": origin_of(NODES[1])},
    },
    {
        "id": 123_456,
        "at_ns": NOW_NS,
        "tier": "semantic",
        "namespace": "agents/alden/preferences/long-running-project",
        "key": "units-of-measurement-for-reports",
        "item_id": hashlib.sha256(b"d").hexdigest()[:32],
        "winner": {"timestamp_ns": NOW_NS - 5, "origin": origin_of(NODES[0]), "op": "update"},
        "loser": {
            "timestamp_ns": NOW_NS - 9,
            "origin": origin_of(NODES[2]),
            "op": "update",
            "value": LONG,
        },
        "resolved_by": {"timestamp_ns": NOW_NS, "origin": origin_of(NODES[1])},
    },
]
STATUS = {
    "tiers": {
        t: {"items": 12_345_678, "tombstones": 1_234_567, "seq": 98_765_432, "digest": "ab" * 32}
        for t in ("working", "episodic", "semantic")
    }
}
VECTORS = {
    "peers": [
        {"peer": n, "tiers": {"episodic": {"cursor": 123456789, "acked": 987654321}}} for n in NODES
    ]
}
HISTORY = [
    {
        "version": f"{NOW_NS - n}:{origin_of(NODES[n])}",
        "timestamp_ns": NOW_NS - n,
        "origin": origin_of(NODES[n]),
        "op": "update",
        "current": n == 0,
        "value": LONG,
    }
    for n in range(3)
]
SNAPSHOTS = [
    {
        "name": "debate-7-between-alden-and-the-research-agents-on-units",
        "namespace": "agents/alden/preferences/long-running-project/debates",
        "items": 12_345_678,
        "bytes": 9_876_543_210,
        "created_ns": NOW_NS - 3600 * 10**9,
        "expires_ns": NOW_NS + 3600 * 10**9,
    }
]
SYNC = {"synced": NODES[:2], "failed": NODES[2:]}


def tables(out: Output) -> dict[str, list[str]]:
    """Every table the CLI prints, rendered as the commands render them."""

    def lines(columns: list[Column], rows: list[list[Any]]) -> list[str]:
        return render_table(columns, rows, wide=out.wide)

    return {
        "peers": lines(PEER_COLUMNS, peer_rows(PEERS, out, now=NOW)),
        "list": lines(LIST_COLUMNS, list_rows([item(n, NODES[n], LONG) for n in range(3)], out)),
        "conflicts": lines(CONFLICT_COLUMNS, conflict_rows(CONFLICTS)),
        "conflicts --values": lines(CONFLICT_VALUE_COLUMNS, conflict_rows(CONFLICTS, values=True)),
        "status": lines(STATUS_COLUMNS, status_rows(STATUS, out)),
        "vectors": lines(VECTOR_COLUMNS, vector_rows(VECTORS, out)),
        "sync": lines(SYNC_COLUMNS, sync_rows(SYNC, out)),
        "history": lines(HISTORY_COLUMNS, history_rows(HISTORY, out)),
        "snapshot list": lines(SNAPSHOT_COLUMNS, snapshot_rows(SNAPSHOTS, out)),
        "watch": [
            watch_line(
                {**item(1, NODES[1], "x"), "tier": "episodic", "source": NODES[2]},
                wide=out.wide,
            )
        ],
    }


@pytest.mark.parametrize("name", sorted(tables(TABLE)))
def test_default_tables_fit_100_columns(name: str) -> None:
    rendered = tables(TABLE)[name]
    assert rendered, name
    assert max(len(line) for line in rendered) <= MAX_WIDTH, "\n".join(rendered)
    # nodes appear in the short form, never as 52 characters
    assert not any(node in line for node in NODES for line in rendered)


def test_wide_tables_keep_full_ids_and_every_column() -> None:
    wide = tables(WIDE)
    assert NODES[1] in "\n".join(wide["peers"])
    assert "bytes in/out" in wide["peers"][0] and "12345678901/98765432109" in wide["peers"][1]
    assert "timestamp" in wide["list"][0] and LONG in "\n".join(wide["list"])
    assert "ab" * 32 in "\n".join(wide["status"])
    assert NODES[2] in wide["watch"][0]
    # the default view names the reason of a peer not connected, in plain words
    default = "\n".join(tables(TABLE)["peers"])
    assert "refused by peer: our id is not in its config" in default
    assert "connection refused at node-c" in default


def test_origin_is_the_node_ids_short_form() -> None:
    for node in NODES:
        assert origin_text(origin_of(node)) == short_text(node) == node[:12]
        assert origin_text(int(origin_of(node), 16)) == node[:12]
    conflict = "\n".join(tables(TABLE)["conflicts"])
    assert NODES[0][:12] in conflict and NODES[1][:12] in conflict


def test_unique_prefixes_resolve_like_git_short_hashes() -> None:
    known = ["abcdefgh" + "a" * 44, "abcdxxxx" + "a" * 44, "zzzz" + "b" * 48]
    assert resolve_prefix("ABCDE", known) == known[0]
    assert resolve_prefix("zzzz-bbbb", known) == known[2]
    with pytest.raises(IdPrefixError, match="more than one"):
        resolve_prefix("abcd", known)
    with pytest.raises(IdPrefixError, match="at least 4"):
        resolve_prefix("zzz", known)
    with pytest.raises(IdPrefixError, match="no node id starts with"):
        resolve_prefix("qqqq", known)
    with pytest.raises(IdPrefixError, match="not a node id"):
        resolve_prefix("ab!d", known)


def test_cut_cells_are_marked_and_headers_kept() -> None:
    columns = [Column("id"), Column("value", shrink=1)]
    lines = render_table(columns, [["x" * 32, "y" * 300]])
    assert all(len(line) <= MAX_WIDTH for line in lines)
    assert lines[1].endswith("~") and lines[0].split() == ["id", "value"]


def test_ago_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    rows = peer_rows(PEERS, TABLE)
    assert [r[3] for r in rows] == ["2 h ago", "-", "1.0 s ago", "-"]
