"""``meshsyncd snapshot create/list/drop``: frozen views of this node's memory.

Read one with ``get --snapshot NAME`` and ``list --snapshot NAME``. Taken right after a
successful ``sync --now`` on every participant, every participant reads the same memory.
"""

from __future__ import annotations

from typing import Any

import click

from ..client import Client
from .clientcli import (
    Column,
    Fail,
    OneLineCommand,
    OneLineGroup,
    Output,
    emit_json,
    node_options,
    print_table,
    when,
)
from .guard import parse_for
from .output import EXIT_USAGE

__all__ = ["SNAPSHOT_COLUMNS", "snapshot", "snapshot_rows"]

SNAPSHOT_COLUMNS = [
    Column("name", shrink=2, floor=8),
    Column("namespace", shrink=1, floor=9),
    Column("items", right=True),
    Column("bytes", right=True),
    Column("created", wide_only=True),
    Column("expires"),
]
"""The ``snapshot list`` table."""


def snapshot_rows(rows: list[dict[str, Any]], out: Output) -> list[list[Any]]:
    """Rows of the ``snapshot list`` table (times to the second unless wide)."""
    return [
        [
            r["name"],
            r["namespace"] or "-",
            r["items"],
            r["bytes"],
            when(r["created_ns"], short=not out.wide),
            when(r["expires_ns"], short=not out.wide),
        ]
        for r in rows
    ]


@click.group(cls=OneLineGroup)
def snapshot() -> None:
    """Snapshots: what this node holds at one instant, readable while writes go on."""


@snapshot.command(cls=OneLineCommand)
@click.argument("name")
@click.option("--namespace", help="Only named items under this namespace prefix.")
@click.option("--ttl", default="1h", show_default=True, help="Expires after: 90s, 30m, 2h, 1d.")
@node_options
def create(client: Client, out: Output, name: str, namespace: str | None, ttl: str) -> None:
    """Freeze what this node holds now (under --namespace) as snapshot NAME.

    \b
    Examples:
      meshsyncd sync --now && meshsyncd snapshot create debate-7 --namespace kb --ttl 2h
    """
    try:
        seconds = parse_for(ttl)
    except Fail as exc:
        raise Fail(str(exc).replace("--for", "--ttl"), EXIT_USAGE) from None
    info = client.snapshot_create(name, namespace=namespace, ttl=seconds)
    if out.json:
        emit_json(info)
    else:
        click.echo(
            f"snapshot {info['name']}: {info['items']} items, {info['bytes']} bytes,"
            f" expires {when(info['expires_ns'])}"
        )


@snapshot.command(name="list", cls=OneLineCommand)
@node_options
def list_snapshots(client: Client, out: Output) -> None:
    """Live snapshots with their size and expiry (-o wide adds when each was made)."""
    rows = client.snapshots()
    if out.json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no snapshots")
        return
    print_table(SNAPSHOT_COLUMNS, snapshot_rows(rows, out), wide=out.wide)


@snapshot.command(cls=OneLineCommand)
@click.argument("name")
@node_options
def drop(client: Client, out: Output, name: str) -> None:
    """Remove a snapshot before it expires."""
    done = client.snapshot_drop(name)
    if out.json:
        emit_json(done)
    else:
        click.echo(f"snapshot {name} dropped")
