"""``meshsyncd conflicts``: review the conflict log and resolve entries (SPEC.md 2.2).

A conflict is logged only when two writers had not seen each other's write; last-write-wins
still decided the value everywhere. ``conflicts resolve ID`` writes the kept (or a new)
value on top of both, and the mesh converges on it.
"""

from __future__ import annotations

import re
import time
from typing import Any

import click

from ..client import Client
from ..ids import origin_text
from .clientcli import (
    TIERS,
    Column,
    Fail,
    OneLineCommand,
    Output,
    emit_json,
    node_options,
    print_table,
    tier_arg,
    when,
)
from .output import EXIT_USAGE

__all__ = [
    "CONFLICT_COLUMNS",
    "CONFLICT_VALUE_COLUMNS",
    "conflict_rows",
    "conflicts",
    "parse_since",
]

_AGO = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now_ns: int) -> int:
    """Wall-clock ns from ``30m``/``2h``/``1d`` (that long ago) or a timestamp in ns.

    Raises:
        Fail: anything else (status 2).
    """
    text = text.strip()
    match = _AGO.match(text)
    if match:
        return now_ns - int(match.group(1)) * _UNIT[match.group(2)] * 1_000_000_000
    if text.isdigit():
        return int(text)
    raise Fail(f"bad --since {text!r}: use e.g. 30m, 2h, 1d or a timestamp in ns", EXIT_USAGE)


CONFLICT_COLUMNS = [
    Column("id", right=True),
    Column("seen"),
    Column("tier"),
    Column("item", shrink=2, floor=12),
    Column("winner"),
    Column("won at", wide_only=True),
    Column("loser"),
    Column("lost at", wide_only=True),
    Column("ops", wide_only=True),
    Column("resolved"),
    Column("resolved at", wide_only=True),
]
"""The ``conflicts`` table: each side as its writer's short node id; -o wide adds times
and both ops (winner's/loser's)."""

CONFLICT_VALUE_COLUMNS = [
    *(
        Column(c.header, c.shrink, True, c.right, c.floor) if c.header in ("seen", "tier") else c
        for c in CONFLICT_COLUMNS
    ),
    Column("winner value", shrink=1, floor=8),
    Column("loser value", shrink=1, floor=8),
]
"""With ``--values``: both values, cut to fit unless ``-o wide`` (which also shows when
and in which tier each conflict was seen)."""


def _value(side: dict[str, Any]) -> str:
    if "value" in side:
        return str(side["value"])
    if "value_b64" in side:
        return "(bytes)"
    return "(deleted)" if side.get("op") == "delete" else "-"


def conflict_rows(rows: list[dict[str, Any]], *, values: bool = False) -> list[list[Any]]:
    """Rows of the ``conflicts`` table (of :data:`CONFLICT_VALUE_COLUMNS` with ``values``)."""
    out = []
    for c in rows:
        winner, loser = c["winner"], c["loser"]
        resolved = c.get("resolved_by")
        row = [
            c.get("id", "-"),
            when(c["at_ns"], short=True),
            c["tier"],
            f"{c.get('namespace', '')}/{c['key']}".lstrip("/") if "key" in c else c["item_id"],
            origin_text(winner["origin"]),
            when(winner["timestamp_ns"]),
            origin_text(loser["origin"]),
            when(loser["timestamp_ns"]),
            f"{winner.get('op', '-')}/{loser.get('op', '-')}",
            "yes" if resolved else "-",
            when(resolved["timestamp_ns"]) if resolved else "-",
        ]
        if values:
            row += [_value(winner), _value(loser)]
        out.append(row)
    return out


@click.command(cls=OneLineCommand)
@click.argument("action", required=False, type=click.Choice(["resolve"]))
@click.argument("conflict_id", required=False, type=int)
@click.option("--namespace", help="Only named items under this namespace prefix.")
@click.option("--since", help="Only conflicts seen since: 30m, 2h, 1d, or a timestamp in ns.")
@click.option("--values", is_flag=True, help="Show both versions' values.")
@click.option("--open", "open_only", is_flag=True, help="Only conflicts not resolved yet.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--tier", help=f"Only this tier: {TIERS}.")
@click.option("--keep", type=click.Choice(["winner", "loser"]), help="resolve: keep this side.")
@click.option("--value", help="resolve: write this value instead.")
@node_options
def conflicts(
    client: Client,
    out: Output,
    action: str | None,
    conflict_id: int | None,
    namespace: str | None,
    since: str | None,
    values: bool,
    open_only: bool,
    limit: int,
    tier: str | None,
    keep: str | None,
    value: str | None,
) -> None:
    """The conflict log, newest first: two writers that had not seen each other's write.

    Each entry names the item, both versions (op and writer's node id, short form as
    `meshsyncd id` and `peers` show it; -o wide adds each version's time) and, with
    --values, both values: the loser's is kept here so it can be recovered. `conflicts
    resolve ID --keep winner|loser` (or `--value V`) writes a new version on top of both;
    the mesh converges on it and marks the entry resolved on every node it reaches.

    \b
    Examples:
      meshsyncd conflicts --namespace agents/alden --since 2h --values
      meshsyncd conflicts --tier semantic --limit 10 --json
      meshsyncd conflicts resolve 12 --keep loser
      meshsyncd conflicts resolve 12 --value '"metric"'
    """
    if action == "resolve":
        if conflict_id is None:
            raise Fail("conflicts resolve needs the conflict ID", EXIT_USAGE)
        if (keep is None) == (value is None):
            raise Fail(
                "conflicts resolve needs either --keep winner|loser or --value V", EXIT_USAGE
            )
        done = client.resolve_conflict(conflict_id, keep=keep, value=value)
        if out.json:
            emit_json(done)
        else:
            who = done["origin"] if out.wide else origin_text(done["origin"])
            click.echo(
                f"conflict {conflict_id} resolved: {done['op']} at {when(done['timestamp_ns'])}"
                f" by {who}"
            )
        return
    if conflict_id is not None or keep is not None or value is not None:
        raise Fail("an ID, --keep and --value only go with `conflicts resolve`", EXIT_USAGE)
    rows = client.conflicts(
        limit=limit,
        tier=None if tier is None else tier_arg(tier),
        namespace=namespace,
        since_ns=None if since is None else parse_since(since, time.time_ns()),
        values=values,
        open_only=open_only,
    )
    if out.json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no conflicts")
        return
    columns = CONFLICT_VALUE_COLUMNS if values else CONFLICT_COLUMNS
    print_table(columns, conflict_rows(rows, values=values), wide=out.wide)
