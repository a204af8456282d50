"""Data commands: put, get, delete, merge, list and watch, through the control client.

Socket lookup, output and errors are shared with the operator commands (``clientcli.py``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from protocol import MAX_PAYLOAD

from ..client import Client
from .clientcli import (
    KEY_OPT,
    PRIO_OPT,
    TIER_OPT,
    TIERS,
    Fail,
    OneLineCommand,
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

__all__ = ["delete", "get", "list_items", "merge", "put", "watch"]


@click.command(cls=OneLineCommand)
@click.argument("value", required=False)
@click.option("--file", "file", type=click.File("rb"), help="Read the value from F ('-': stdin).")
@TIER_OPT
@PRIO_OPT
@click.option("--id", "item_id", help="Item id (32 hex digits); default: a new random id.")
@KEY_OPT
@node_options
def put(
    client: Client,
    as_json: bool,
    value: str | None,
    file: Any,
    tier: str,
    priority: str,
    item_id: str | None,
    key: str | None,
) -> None:
    """Write a whole value (INSERT if absent, else UPDATE).

    \b
    Examples:
      meshsyncd put 'the build is green' --key ci/status --tier working --priority urgent
      meshsyncd put --file notes.json --tier semantic
      meshsyncd put --id 00112233445566778899aabbccddeeff 'replaced value'
    """
    if (value is None) == (file is None):
        raise Fail("give the value either as an argument or with --file, not both", 2)
    data: str | bytes = value if value is not None else file.read(MAX_PAYLOAD + 1)
    size = len(data.encode() if isinstance(data, str) else data)
    if size > MAX_PAYLOAD:
        raise Fail(f"payload too large: more than {MAX_PAYLOAD} bytes (1 MiB)", 2)
    target = item_target(item_id, key, required=False)
    result = client.put(data, tier=tier_arg(tier), priority=prio_arg(priority), **target)
    written(result, as_json)


@click.command(cls=OneLineCommand)
@click.argument("item_id", required=False)
@KEY_OPT
@TIER_OPT
@click.option("--raw", is_flag=True, help="Write only the value's bytes to stdout.")
@node_options
def get(
    client: Client, as_json: bool, item_id: str | None, key: str | None, tier: str, raw: bool
) -> None:
    """Read one item.

    \b
    Examples:
      meshsyncd get 00112233445566778899aabbccddeeff
      meshsyncd get --key ci/status --tier working --raw
    """
    target = item_target(item_id, key, required=True)
    if raw:
        sys.stdout.buffer.write(client.get_bytes(tier=tier_arg(tier), **target))
        sys.stdout.flush()
        return
    result = client.get(tier=tier_arg(tier), **target)
    if as_json:
        emit_json(result)
        return
    value = result.get("value")
    if value is None:
        value = f"(binary, {result.get('size')} bytes; base64 {result.get('value_b64')})"
    pairs(
        [
            ("item_id", result.get("item_id")),
            ("tier", result.get("tier")),
            ("op", result.get("op")),
            ("seq", result.get("seq")),
            ("timestamp", when(result.get("timestamp_ns"))),
            ("origin", result.get("origin")),
            ("size", result.get("size")),
            ("value", value),
        ]
    )


@click.command(cls=OneLineCommand)
@click.argument("item_id", required=False)
@KEY_OPT
@TIER_OPT
@PRIO_OPT
@node_options
def delete(
    client: Client,
    as_json: bool,
    item_id: str | None,
    key: str | None,
    tier: str,
    priority: str,
) -> None:
    """Delete an item (a tombstone that replicates like any write).

    \b
    Examples:
      meshsyncd delete 00112233445566778899aabbccddeeff
      meshsyncd delete --key ci/status --tier working
    """
    target = item_target(item_id, key, required=True)
    written(client.delete(tier=tier_arg(tier), priority=prio_arg(priority), **target), as_json)


@click.command(cls=OneLineCommand)
@click.argument("fields_json", metavar="JSON")
@click.option("--id", "item_id", help="Item id (32 hex digits); default: a new random id.")
@KEY_OPT
@TIER_OPT
@PRIO_OPT
@node_options
def merge(
    client: Client,
    as_json: bool,
    fields_json: str,
    item_id: str | None,
    key: str | None,
    tier: str,
    priority: str,
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
        raise Fail(f"bad JSON: {exc}", 2) from None
    if not isinstance(fields, dict):
        raise Fail("merge takes a JSON object", 2)
    if len(json.dumps(fields, separators=(",", ":")).encode()) > MAX_PAYLOAD:
        raise Fail(f"payload too large: more than {MAX_PAYLOAD} bytes (1 MiB)", 2)
    target = item_target(item_id, key, required=False)
    result = client.merge(fields, tier=tier_arg(tier), priority=prio_arg(priority), **target)
    written(result, as_json)


@click.command(name="list", cls=OneLineCommand)
@TIER_OPT
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", help="Continue after this item id (the 'next' of a previous page).")
@click.option("--deleted", is_flag=True, help="Include tombstones.")
@node_options
def list_items(
    client: Client, as_json: bool, tier: str, limit: int, after: str | None, deleted: bool
) -> None:
    """List items of a tier in id order, one page at a time.

    \b
    Examples:
      meshsyncd list --tier semantic
      meshsyncd list --limit 100 --after 00112233445566778899aabbccddeeff --json
    """
    if after is not None:
        item_target(after, None, required=True)
    result = client.list(tier=tier_arg(tier), limit=limit, after=after, include_deleted=deleted)
    if as_json:
        emit_json(result)
        return
    if not result.get("items"):
        click.echo("no items")
        return
    print_table(
        ["item_id", "seq", "op", "timestamp", "origin", "size", "value"],
        [
            [
                i["item_id"],
                i["seq"],
                i["op"],
                when(i["timestamp_ns"]),
                i["origin"],
                i["size"],
                preview(i),
            ]
            for i in result.get("items", [])
        ],
    )
    if result.get("next"):
        click.echo(f"(more: --after {result['next']})")


@click.command(cls=OneLineCommand)
@click.option("--tier", help=f"Only this tier: {TIERS}.")
@click.option("--count", type=click.IntRange(1), help="Stop after N events.")
@node_options
def watch(client: Client, as_json: bool, tier: str | None, count: int | None) -> None:
    """Print changes as they are applied (local writes and replicated ones) until Ctrl-C.

    \b
    Examples:
      meshsyncd watch
      meshsyncd watch --tier working --json --count 10
    """
    seen = 0
    events = client.watch(None if tier is None else tier_arg(tier))
    try:
        for event in events:
            if as_json:
                click.echo(json.dumps(event, separators=(",", ":")))
            else:
                click.echo(
                    f"{when(event.get('timestamp_ns'))}  {event.get('tier', ''):<8}  "
                    f"{event.get('op', ''):<6}  {event.get('item_id')}  "
                    f"origin={event.get('origin')}  from={event.get('source')}"
                )
            seen += 1
            if count is not None and seen >= count:
                return
    except KeyboardInterrupt:
        return
    finally:
        events.close()
