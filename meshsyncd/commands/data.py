"""Data commands: put, get, delete, merge and list, through the control client.

Socket lookup, output and errors are shared with the operator commands (``clientcli.py``).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import click

from protocol import MAX_PAYLOAD, Tier

from ..client import Client, ClientError
from ..ids import origin_text, short_text
from .clientcli import (
    KEY_OPT,
    PRIO_OPT,
    TIER_OPT,
    Column,
    Fail,
    OneLineCommand,
    Output,
    emit_json,
    item_target,
    node_options,
    pairs,
    preview,
    print_table,
    prio_arg,
    tier_arg,
    when,
    written,
)
from .guard import conditional
from .names import NS_OPT, check_namespace, name_pairs, named_target
from .output import EXIT_FAILED, EXIT_USAGE

SNAPSHOT_OPT = click.option("--snapshot", help="Read snapshot NAME (see `snapshot create`).")

__all__ = ["delete", "get", "list_items", "merge", "put", "watch_line"]


@click.command(cls=OneLineCommand)
@click.argument("value", required=False)
@click.option("--file", "file", type=click.File("rb"), help="Read the value from F ('-': stdin).")
@TIER_OPT
@PRIO_OPT
@click.option("--id", "item_id", help="Item id (32 hex digits); default: a new random id.")
@KEY_OPT
@NS_OPT
@node_options
@conditional
def put(
    client: Client,
    out: Output,
    value: str | None,
    file: Any,
    tier: str,
    priority: str,
    item_id: str | None,
    key: str | None,
    namespace: str | None,
    cond: dict[str, Any],
) -> None:
    """Write a whole value (INSERT if absent, else UPDATE).

    \b
    Examples:
      meshsyncd put 'the build is green' --key ci/status --tier working --priority urgent
      meshsyncd put '{"units": "metric"}' --namespace agents/alden/prefs --key units
      meshsyncd put --file notes.json --tier semantic
      meshsyncd put --id 00112233445566778899aabbccddeeff 'replaced value'
    """
    if value is None and file is None:
        raise Fail("put needs a value: give it as an argument or with --file", EXIT_USAGE)
    if value is not None and file is not None:
        raise Fail("give the value either as an argument or with --file, not both", EXIT_USAGE)
    data: str | bytes = value if value is not None else file.read(MAX_PAYLOAD + 1)
    size = len(data.encode() if isinstance(data, str) else data)
    if size > MAX_PAYLOAD:
        raise Fail(f"payload too large: more than {MAX_PAYLOAD} bytes (1 MiB)", EXIT_USAGE)
    target = named_target(item_target(item_id, key, required=False), namespace)
    result = client.put(data, tier=tier_arg(tier), priority=prio_arg(priority), **target, **cond)
    written(result, out)


@click.command(cls=OneLineCommand)
@click.argument("item_id", required=False)
@KEY_OPT
@NS_OPT
@TIER_OPT
@click.option("--raw", is_flag=True, help="Write only the value's bytes to stdout.")
@SNAPSHOT_OPT
@node_options
def get(
    client: Client,
    out: Output,
    item_id: str | None,
    key: str | None,
    namespace: str | None,
    tier: str,
    raw: bool,
    snapshot: str | None,
) -> None:
    """Read one item.

    \b
    Examples:
      meshsyncd get 00112233445566778899aabbccddeeff
      meshsyncd get --key ci/status --tier working --raw
      meshsyncd get --namespace agents/alden/prefs --key units
    """
    target = named_target(item_target(item_id, key, required=True), namespace)
    if snapshot is not None:
        target["snapshot"] = snapshot
    try:
        if raw:
            data = client.get_bytes(tier=tier_arg(tier), **target)
        else:
            result = client.get(tier=tier_arg(tier), **target)
    except ClientError as exc:
        if exc.code == "not_found" and snapshot is None:  # else the daemon's own words:
            raise Fail(_not_found(client, target, tier_arg(tier)), EXIT_FAILED) from None
        raise  # a missing snapshot is not a missing item
    if raw:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    if out.json:
        emit_json(result)
        return
    value = result.get("value")
    if value is None:
        value = f"(binary, {result.get('size')} bytes; base64 {result.get('value_b64')})"
    pairs(
        [
            *name_pairs(result),
            ("item_id", result.get("item_id")),
            ("tier", result.get("tier")),
            ("op", result.get("op")),
            ("seq", result.get("seq")),
            ("timestamp", when(result.get("timestamp_ns"))),
            ("origin", origin_text(result.get("origin"))),
            ("version", result.get("version")),
            ("size", result.get("size")),
            ("value", value),
        ]
    )


def _not_found(client: Client, target: dict[str, Any], tier: str) -> str:
    """Name what was asked for, and the tier it is in if it is in another one.

    Why: ``get`` reads the episodic tier unless told otherwise, and an item written with
    ``--tier working`` looked missing.
    """
    what = f'key "{target["key"]}"' if "key" in target else f"id {target['item_id']}"
    message = f"no item with {what} in tier {tier}"
    for other in (t.name.lower() for t in Tier):
        if other == tier:
            continue
        try:
            client.get(tier=other, **target)
        except ClientError:
            continue
        return f"{message}; it is in tier {other}: add --tier {other}"
    return message


@click.command(cls=OneLineCommand)
@click.argument("item_id", required=False)
@KEY_OPT
@NS_OPT
@TIER_OPT
@PRIO_OPT
@node_options
@functools.partial(conditional, absent=False)
def delete(
    client: Client,
    out: Output,
    item_id: str | None,
    key: str | None,
    namespace: str | None,
    tier: str,
    priority: str,
    cond: dict[str, Any],
) -> None:
    """Delete an item (a tombstone that replicates like any write).

    \b
    Examples:
      meshsyncd delete 00112233445566778899aabbccddeeff
      meshsyncd delete --key ci/status --tier working
      meshsyncd delete --namespace agents/alden/prefs --key units
    """
    target = named_target(item_target(item_id, key, required=True), namespace)
    result = client.delete(tier=tier_arg(tier), priority=prio_arg(priority), **target, **cond)
    written(result, out)


@click.command(cls=OneLineCommand)
@click.argument("fields_json", metavar="JSON")
@click.option("--id", "item_id", help="Item id (32 hex digits); default: a new random id.")
@KEY_OPT
@NS_OPT
@TIER_OPT
@PRIO_OPT
@node_options
@conditional
def merge(
    client: Client,
    out: Output,
    fields_json: str,
    item_id: str | None,
    key: str | None,
    namespace: str | None,
    tier: str,
    priority: str,
    cond: dict[str, Any],
) -> None:
    """Merge top-level fields of a JSON object into an item (per-field last write wins).

    \b
    Examples:
      meshsyncd merge '{"status": "done", "owner": "agent-7"}' --key task/42
      meshsyncd merge '{"confidence": 0.9}' --id 00112233445566778899aabbccddeeff
    """
    try:
        fields = json.loads(fields_json)
    except ValueError as exc:
        raise Fail(f"bad JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(fields, dict):
        raise Fail("merge takes a JSON object", EXIT_USAGE)
    if len(json.dumps(fields, separators=(",", ":")).encode()) > MAX_PAYLOAD:
        raise Fail(f"payload too large: more than {MAX_PAYLOAD} bytes (1 MiB)", EXIT_USAGE)
    target = named_target(item_target(item_id, key, required=False), namespace)
    result = client.merge(
        fields, tier=tier_arg(tier), priority=prio_arg(priority), **target, **cond
    )
    written(result, out)


@click.command(name="list", cls=OneLineCommand)
@TIER_OPT
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", help="Continue after this cursor (the 'next' of a previous page).")
@click.option("--deleted", is_flag=True, help="Include tombstones.")
@click.option(
    "--namespace", help="Named items under this namespace prefix, in name order ('' for all)."
)
@SNAPSHOT_OPT
@node_options
def list_items(
    client: Client,
    out: Output,
    tier: str,
    limit: int,
    after: str | None,
    deleted: bool,
    namespace: str | None,
    snapshot: str | None,
) -> None:
    """List items of a tier in id order, or named items by namespace, a page at a time.

    The table fits 100 columns (the value cut to fit); -o wide adds the timestamp and
    shows whole values.

    \b
    Examples:
      meshsyncd list --tier semantic
      meshsyncd list --limit 100 --after 00112233445566778899aabbccddeeff --json
      meshsyncd list --namespace agents/alden --limit 20
    """
    if after is not None and namespace is None:
        item_target(after, None, required=True)
    if namespace is not None:
        check_namespace(namespace)
    result = client.list(
        tier=tier_arg(tier),
        limit=limit,
        after=after,
        include_deleted=deleted,
        namespace=namespace,
        snapshot=snapshot,
    )
    if out.json:
        emit_json(result)
        return
    if not result.get("items"):
        click.echo("no items")
        return
    items = result.get("items", [])
    if namespace is not None:  # named items: the name first
        rows = [
            [i.get("namespace") or "(root)", i.get("key"), *r]
            for i, r in zip(items, list_rows(items, out), strict=True)
        ]
        print_table(NAMED_COLUMNS, rows, wide=out.wide)
    else:
        print_table(LIST_COLUMNS, list_rows(items, out), wide=out.wide)
    if result.get("next"):
        click.echo(f"(more: --after {result['next']})")


LIST_COLUMNS = [
    Column("item_id"),
    Column("seq", right=True),
    Column("op"),
    Column("timestamp", wide_only=True),
    Column("origin"),
    Column("size", right=True),
    Column("value", shrink=1),
]


NAMED_COLUMNS = [Column("namespace", shrink=1), Column("key", shrink=1), *LIST_COLUMNS]


def list_rows(items: list[dict[str, Any]], out: Output) -> list[list[Any]]:
    """Rows of the ``list`` table (also rendered by the table-width test)."""
    return [
        [
            i["item_id"],
            i["seq"],
            i["op"],
            when(i["timestamp_ns"]),
            origin_text(i["origin"]),
            i["size"],
            preview(i, width=1 << 16 if out.wide else 200),
        ]
        for i in items
    ]


def watch_line(event: dict[str, Any], *, wide: bool = False) -> str:
    """One change as a line of at most 100 columns (unless ``wide``)."""
    stamp = when(event.get("timestamp_ns"))
    source = str(event.get("source") or "")
    if not wide:
        stamp = stamp[11:]  # the time of day; a watch runs for hours, not days
        source = source if source == "local" else short_text(source)
    return (
        f"{stamp}  {event.get('tier', '') or '':<8}  {event.get('op', '') or '':<6}  "
        f"{event.get('item_id')}  {origin_text(event.get('origin')):<12}  from {source}"
    )
