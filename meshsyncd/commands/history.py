"""``meshsyncd history``: the last versions this node has seen of one item."""

from __future__ import annotations

from typing import Any

import click

from ..client import Client
from ..ids import origin_text
from .clientcli import (
    KEY_OPT,
    TIER_OPT,
    Column,
    OneLineCommand,
    Output,
    emit_json,
    item_target,
    node_options,
    print_table,
    tier_arg,
    when,
)
from .names import NS_OPT, named_target

__all__ = ["HISTORY_COLUMNS", "history", "history_rows"]

HISTORY_COLUMNS = [
    Column("version"),
    Column("now"),
    Column("time", wide_only=True),
    Column("origin"),
    Column("op"),
    Column("value", shrink=1, floor=8),
]
"""The ``history`` table. ``version`` stays whole: it is what ``--if-version`` takes."""


def history_rows(rows: list[dict[str, Any]], out: Output) -> list[list[Any]]:
    """Rows of the ``history`` table, newest first; ``now`` marks the current version."""
    return [
        [
            r["version"],
            "*" if r.get("current") else "",
            when(r["timestamp_ns"]),
            origin_text(r["origin"]),
            r["op"],
            r.get("value", "(deleted)" if r["op"] == "delete" else "(bytes)"),
        ]
        for r in rows
    ]


@click.command(cls=OneLineCommand)
@click.argument("item_id", required=False)
@KEY_OPT
@NS_OPT
@TIER_OPT
@node_options
def history(
    client: Client,
    out: Output,
    item_id: str | None,
    key: str | None,
    namespace: str | None,
    tier: str,
) -> None:
    """The last versions of an item seen here, newest first: winners and losers.

    How many per item is set per tier in the config ([history], default 8; 0 turns it off).
    A version (TS:ORIGIN) is what `put --if-version` takes; `*` marks the current one.

    \b
    Examples:
      meshsyncd history --namespace agents/alden/prefs --key units
      meshsyncd history 00112233445566778899aabbccddeeff --tier semantic --json
    """
    target = named_target(item_target(item_id, key, required=True), namespace)
    rows = client.history(tier=tier_arg(tier), **target)
    if out.json:
        emit_json(rows)
        return
    print_table(HISTORY_COLUMNS, history_rows(rows, out), wide=out.wide)
