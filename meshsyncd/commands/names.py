"""Named-memory commands and options: ``--namespace``, ``namespaces`` and the resumable
``watch`` (issue 13; the socket side is ``control/names.py`` and ``control/watch.py``).

A name is checked here before anything is sent (an empty label, a label too long, too
deep: exit status 2, the part named), with the same rules the node applies.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..client import Client
from ..control.names import parse_namespace
from ..control.proto import ControlError
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
)
from .output import EXIT_USAGE

__all__ = ["NS_OPT", "named_target", "namespaces", "watch"]

NS_OPT = click.option(
    "--namespace",
    help="Namespace of --key: labels separated by '/' (agents/alden/prefs); default the root.",
)


def check_namespace(namespace: str) -> str:
    try:
        parse_namespace(namespace)
    except ControlError as exc:
        raise Fail(exc.message, EXIT_USAGE) from None
    return namespace


def named_target(target: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    """``target`` (from ``item_target``) with the namespace of its key, checked."""
    if namespace is None:
        return target
    if "key" not in target:
        raise Fail("--namespace names the namespace of a --key; give --key too", EXIT_USAGE)
    return {**target, "namespace": check_namespace(namespace)}


def name_pairs(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """``namespace``/``key`` lines for ``get``, when the item is named."""
    if "key" not in result:
        return []
    return [("namespace", result.get("namespace") or "(root)"), ("key", result.get("key"))]


@click.command(cls=OneLineCommand)
@click.option("--prefix", help="Only namespaces under this one (agents/alden).")
@click.option("--max-depth", type=click.IntRange(0), help="Fold deeper namespaces into depth D.")
@click.option("--tier", help=f"Only this tier: {TIERS} (default: all).")
@node_options
def namespaces(
    client: Client, out: Output, prefix: str | None, max_depth: int | None, tier: str | None
) -> None:
    """List namespaces of named items with their live item counts.

    \b
    Examples:
      meshsyncd namespaces
      meshsyncd namespaces --prefix agents --max-depth 2
    """
    found = client.namespaces(
        prefix=None if prefix is None else check_namespace(prefix),
        max_depth=max_depth,
        tier=None if tier is None else tier_arg(tier),
    )
    if out.json:
        emit_json(found)
        return
    if not found:
        click.echo("no named items")
        return
    print_table(
        [Column("namespace", shrink=1), Column("items", right=True), Column("per tier")],
        [
            [
                row["namespace"] or "(root)",
                row["items"],
                " ".join(f"{t}={n}" for t, n in sorted(row["tiers"].items())),
            ]
            for row in found
        ],
        wide=out.wide,
    )


@click.command(cls=OneLineCommand)
@click.option("--tier", help=f"Only this tier: {TIERS}.")
@click.option("--namespace", help="Only named items under this namespace prefix.")
@click.option(
    "--since",
    default="now",
    show_default=True,
    help="Replay every change after this cursor first (an event's 'cursor', or SEQ with --tier).",
)
@click.option("--values", is_flag=True, help="Include each item's value.")
@click.option("--count", type=click.IntRange(1), help="Stop after N events.")
@node_options
def watch(
    client: Client,
    out: Output,
    tier: str | None,
    namespace: str | None,
    since: str,
    values: bool,
    count: int | None,
) -> None:
    """Print changes after a cursor, then live ones, until Ctrl-C: gapless across restarts.

    Every event carries its cursor; pass the last one to --since to resume exactly there.
    A cursor the node cannot resume from (another store, purged deletions) is refused:
    list again, then watch from the cursor a new watch prints first.

    \b
    Examples:
      meshsyncd watch
      meshsyncd watch --namespace agents/alden --values --json
      meshsyncd watch --tier episodic --since 120 --count 10
      meshsyncd watch --since working:12,episodic:40,semantic:7
    """
    seen = 0

    def started(first: dict[str, Any]) -> None:
        if not out.json:
            click.echo(f"watching from {first.get('cursor')}", err=True)

    events = client.watch(
        None if tier is None else tier_arg(tier),
        since=since,
        namespace=None if namespace is None else check_namespace(namespace),
        values=values,
        started=started,
    )
    try:
        for event in events:
            if out.json:
                click.echo(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
            else:
                click.echo(_line(event, out.wide))
            seen += 1
            if count is not None and seen >= count:
                return
    except KeyboardInterrupt:
        return
    finally:
        events.close()


def _line(event: dict[str, Any], wide: bool) -> str:
    """``data.watch_line`` (time, tier, op, id, origin, source), then seq, name and value."""
    from .data import watch_line

    text = watch_line(event, wide=wide)
    if "seq" in event:
        text += f"  seq={event['seq']}"
    if "key" in event:
        ns = event.get("namespace")
        text += f"  {ns}/{event['key']}" if ns else f"  {event['key']}"
    if "value" in event:
        text += f"  value={event['value']}"
    return text
