"""Data and operator commands: status, put, get, delete, merge, list, vectors, conflicts,
watch, sync and the peers table. They talk to the running daemon only through
:class:`meshsyncd.client.Client`.

Every command finds the node's control socket from ``--socket PATH`` (or
``MESHSYNCD_SOCKET``), else from the node config (``--config PATH`` or
``MESHSYNCD_CONFIG``). Output is a readable table, or JSON with ``--json``. Errors are one
line ``meshsyncd: ...``; the exit status is 2 for a usage error (bad id, unknown tier,
payload too large, bad JSON) and 1 for everything else (daemon not running, permission
denied, not found, failed sync).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click

from protocol import MAX_PAYLOAD

from ..client import Client, ClientError
from ..control_proto import ControlError, parse_item_id, parse_priority, parse_tier
from . import node

__all__ = ["COMMANDS", "show_peers"]

F = TypeVar("F", bound=Callable[..., Any])
USAGE_CODES = {"bad_request", "unknown_tier", "too_large", "usage"}
TIERS = "working|episodic|semantic (or L1|L2|L3, 0|1|2)"
PRIORITIES = "background|low|normal|high|urgent"


class Fail(Exception):
    """A one-line error for the user, with its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _OneLineUsage(click.UsageError):
    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"meshsyncd: {self.format_message()}", err=True, file=file)


class OneLineCommand(click.Command):
    """Argument errors as one line ``meshsyncd: ...`` with status 2, not usage + Error."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _OneLineUsage(exc.format_message(), ctx) from None


def _die(message: str, status: int) -> NoReturn:
    click.echo(f"meshsyncd: {message}", err=True)
    sys.exit(status)


def _node_options(fn: F) -> F:
    """--socket, --config and --json for every command, plus one-line error handling."""

    @click.option(
        "--socket",
        "socket_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="MESHSYNCD_SOCKET",
        help="Control socket of the node (default: from the config).",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="MESHSYNCD_CONFIG",
        help="Node config file (locates the control socket).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @functools.wraps(fn)
    def wrapper(
        socket_path: Path | None, config_path: Path | None, as_json: bool, **kw: Any
    ) -> None:
        try:
            with Client(_socket_path(socket_path, config_path)) as client:
                fn(client, as_json, **kw)
        except Fail as exc:
            _die(str(exc), exc.status)
        except ClientError as exc:
            _die(exc.message, 2 if exc.code in USAGE_CODES else 1)
        except ControlError as exc:
            _die(exc.message, 2)

    return wrapper  # type: ignore[return-value]


def _socket_path(socket_path: Path | None, config_path: Path | None) -> Path:
    """The control socket: ``--socket``, else the config's ``control_socket``.

    Raises:
        Fail: no config module yet, or the config cannot be loaded (status 2).
    """
    if socket_path is not None:
        return socket_path
    from ..config import ConfigError, load_config  # lazily: only when no --socket

    try:
        cfg = load_config(config_path)
    except (ConfigError, OSError) as exc:
        raise Fail(f"cannot load the config: {exc}", 2) from exc
    return Path(cfg.control_socket)


# -- output -------------------------------------------------------------------------------


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _pairs(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        click.echo(f"{k.ljust(width)}  {'' if v is None else v}")


def _when(ns: Any) -> str:
    if not isinstance(ns, int) or ns <= 0:
        return "-"
    dt = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _preview(item: dict[str, Any], width: int = 48) -> str:
    if item.get("deleted"):
        return "(deleted)"
    text = item.get("value")
    if text is None:
        return f"({item.get('size', 0)} bytes, binary)" if "value_b64" in item else ""
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


# -- argument checks (exit 2 before anything is sent) ------------------------------------


def _tier_arg(value: str) -> str:
    try:
        return parse_tier(value).name.lower()
    except ControlError as exc:
        raise Fail(exc.message, 2) from None


def _prio_arg(value: str) -> str:
    try:
        return parse_priority(value).name.lower()
    except ControlError as exc:
        raise Fail(exc.message, 2) from None


def _target(item_id: str | None, key: str | None, *, required: bool) -> dict[str, Any]:
    if item_id is not None and key is not None:
        raise Fail("give either an item id or --key, not both", 2)
    if item_id is not None:
        try:
            parse_item_id(item_id.lower())
        except ControlError as exc:
            raise Fail(exc.message, 2) from None
        return {"item_id": item_id.lower()}
    if key is not None:
        return {"key": key}
    if required:
        raise Fail("give an item id (32 hex digits) or --key NAME", 2)
    return {}


def _written(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(result)
        return
    _pairs(
        [
            ("item_id", result.get("item_id")),
            ("tier", result.get("tier")),
            ("op", result.get("op")),
            ("priority", result.get("priority")),
            ("timestamp", _when(result.get("timestamp_ns"))),
            ("origin", result.get("origin")),
        ]
    )


_TIER_OPT = click.option("--tier", default="episodic", show_default=True, help=f"Tier: {TIERS}.")
_PRIO_OPT = click.option(
    "--priority", default="normal", show_default=True, help=f"Priority: {PRIORITIES}."
)
_KEY_OPT = click.option("--key", help="Item named by a key (id = SHA-256('key:'+NAME)[:16]).")


# -- commands -----------------------------------------------------------------------------


@click.command(cls=OneLineCommand)
@_node_options
def status(client: Client, as_json: bool) -> None:
    """Node id, incarnation, uptime and per-tier items, tombstones, sequence and digest.

    \b
    Examples:
      meshsyncd status
      meshsyncd status --json --config /etc/meshsyncd/node.toml
    """
    result = client.status()
    if as_json:
        _emit_json(result)
        return
    _pairs(
        [
            ("node id", result.get("node_id")),
            ("incarnation", result.get("incarnation")),
            ("uptime", f"{result.get('uptime', 0):.0f} s"),
        ]
    )
    click.echo()
    tiers = result.get("tiers", {})
    _table(
        ["tier", "items", "tombstones", "seq", "digest"],
        [
            [name, t.get("items"), t.get("tombstones"), t.get("seq"), t.get("digest")]
            for name, t in tiers.items()
        ],
    )


@click.command(cls=OneLineCommand)
@click.argument("value", required=False)
@click.option("--file", "file", type=click.File("rb"), help="Read the value from F ('-': stdin).")
@_TIER_OPT
@_PRIO_OPT
@click.option("--id", "item_id", help="Item id (32 hex digits); default: a new random id.")
@_KEY_OPT
@_node_options
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
    target = _target(item_id, key, required=False)
    result = client.put(data, tier=_tier_arg(tier), priority=_prio_arg(priority), **target)
    _written(result, as_json)


@click.command(cls=OneLineCommand)
@click.argument("item_id", required=False)
@_KEY_OPT
@_TIER_OPT
@click.option("--raw", is_flag=True, help="Write only the value's bytes to stdout.")
@_node_options
def get(
    client: Client, as_json: bool, item_id: str | None, key: str | None, tier: str, raw: bool
) -> None:
    """Read one item.

    \b
    Examples:
      meshsyncd get 00112233445566778899aabbccddeeff
      meshsyncd get --key ci/status --tier working --raw
    """
    target = _target(item_id, key, required=True)
    if raw:
        sys.stdout.buffer.write(client.get_bytes(tier=_tier_arg(tier), **target))
        sys.stdout.flush()
        return
    result = client.get(tier=_tier_arg(tier), **target)
    if as_json:
        _emit_json(result)
        return
    value = result.get("value")
    if value is None:
        value = f"(binary, {result.get('size')} bytes; base64 {result.get('value_b64')})"
    _pairs(
        [
            ("item_id", result.get("item_id")),
            ("tier", result.get("tier")),
            ("op", result.get("op")),
            ("seq", result.get("seq")),
            ("timestamp", _when(result.get("timestamp_ns"))),
            ("origin", result.get("origin")),
            ("size", result.get("size")),
            ("value", value),
        ]
    )


@click.command(cls=OneLineCommand)
@click.argument("item_id", required=False)
@_KEY_OPT
@_TIER_OPT
@_PRIO_OPT
@_node_options
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
    target = _target(item_id, key, required=True)
    _written(client.delete(tier=_tier_arg(tier), priority=_prio_arg(priority), **target), as_json)


@click.command(cls=OneLineCommand)
@click.argument("fields_json", metavar="JSON")
@click.option("--id", "item_id", help="Item id (32 hex digits); default: a new random id.")
@_KEY_OPT
@_TIER_OPT
@_PRIO_OPT
@_node_options
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
    target = _target(item_id, key, required=False)
    result = client.merge(fields, tier=_tier_arg(tier), priority=_prio_arg(priority), **target)
    _written(result, as_json)


@click.command(name="list", cls=OneLineCommand)
@_TIER_OPT
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", help="Continue after this item id (the 'next' of a previous page).")
@click.option("--deleted", is_flag=True, help="Include tombstones.")
@_node_options
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
        _target(after, None, required=True)
    result = client.list(tier=_tier_arg(tier), limit=limit, after=after, include_deleted=deleted)
    if as_json:
        _emit_json(result)
        return
    _table(
        ["item_id", "seq", "op", "timestamp", "origin", "size", "value"],
        [
            [
                i["item_id"],
                i["seq"],
                i["op"],
                _when(i["timestamp_ns"]),
                i["origin"],
                i["size"],
                _preview(i),
            ]
            for i in result.get("items", [])
        ],
    )
    if result.get("next"):
        click.echo(f"(more: --after {result['next']})")


@click.command(cls=OneLineCommand)
@_node_options
def vectors(client: Client, as_json: bool) -> None:
    """Sync vectors: per peer and tier, our cursor on its sequence and its ack of ours.

    \b
    Examples:
      meshsyncd vectors
      meshsyncd vectors --json
    """
    result = client.vectors()
    if as_json:
        _emit_json(result)
        return
    local = result.get("local_seq", {})
    click.echo("local seq: " + ", ".join(f"{k}={v}" for k, v in local.items()))
    rows = []
    for peer in result.get("peers", []):
        for tier, v in peer.get("tiers", {}).items():
            rows.append([peer.get("peer"), tier, v.get("cursor"), v.get("acked")])
    _table(["peer", "tier", "cursor", "acked"], rows)


@click.command(cls=OneLineCommand)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--tier", help=f"Only this tier: {TIERS}.")
@_node_options
def conflicts(client: Client, as_json: bool, limit: int, tier: str | None) -> None:
    """The conflict log, newest first: which version won over which.

    \b
    Examples:
      meshsyncd conflicts
      meshsyncd conflicts --tier semantic --limit 10 --json
    """
    rows = client.conflicts(limit=limit, tier=None if tier is None else _tier_arg(tier))
    if as_json:
        _emit_json(rows)
        return
    _table(
        ["seen", "tier", "item_id", "winner", "loser"],
        [
            [
                _when(c["at_ns"]),
                c["tier"],
                c["item_id"],
                f"{_when(c['winner']['timestamp_ns'])} {c['winner']['origin']}",
                f"{_when(c['loser']['timestamp_ns'])} {c['loser']['origin']}",
            ]
            for c in rows
        ],
    )


@click.command(cls=OneLineCommand)
@click.option("--tier", help=f"Only this tier: {TIERS}.")
@click.option("--count", type=click.IntRange(1), help="Stop after N events.")
@_node_options
def watch(client: Client, as_json: bool, tier: str | None, count: int | None) -> None:
    """Print changes as they are applied (local writes and replicated ones) until Ctrl-C.

    \b
    Examples:
      meshsyncd watch
      meshsyncd watch --tier working --json --count 10
    """
    seen = 0
    events = client.watch(None if tier is None else _tier_arg(tier))
    try:
        for event in events:
            if as_json:
                click.echo(json.dumps(event, separators=(",", ":")))
            else:
                click.echo(
                    f"{_when(event.get('timestamp_ns'))}  {event.get('tier', ''):<8}  "
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


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``2``, ``2s``, ``500ms`` or ``1m``.

    Raises:
        Fail: anything else (status 2).
    """
    match = _DURATION.match(text)
    if not match:
        raise Fail(f"bad duration {text!r}: use e.g. 2s, 500ms or 1m", 2)
    value = float(match.group(1))
    seconds = value * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    if seconds <= 0:
        raise Fail("the timeout must be positive", 2)
    return seconds


@click.command(cls=OneLineCommand)
@click.option("--now", is_flag=True, help="Sync now and wait (required).")
@click.option("--peer", "peers", multiple=True, help="Peer node id (repeatable; default all).")
@click.option("--timeout", default="2s", show_default=True, help="Give up after (2s, 500ms, 1m).")
@_node_options
def sync(client: Client, as_json: bool, now: bool, peers: tuple[str, ...], timeout: str) -> None:
    """Bidirectional sync barrier: returns once both directions are applied with every
    given peer (default: all connected); exits 1 naming the peers that did not make it.

    \b
    Examples:
      meshsyncd sync --now
      meshsyncd sync --now --peer 4x3k...q --peer 7mfa...a --timeout 5s
    """
    if not now:
        raise Fail("sync needs --now (the only mode: sync now and wait)", 2)
    result = client.sync(list(peers) or None, parse_duration(timeout))
    failed = result.get("failed", [])
    if as_json:
        _emit_json(result)
    else:
        rows = [[p, "synced"] for p in result.get("synced", [])]
        rows += [[p, "FAILED"] for p in failed]
        if rows:
            _table(["peer", "result"], rows)
        else:
            click.echo("no connected peers")
    if failed:
        raise Fail(f"sync did not complete with: {', '.join(failed)}", 1)


def _fmt_ms(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1f} ms"


def show_peers(client: Client, as_json: bool) -> None:
    """The peers table from the running daemon (rows as the daemon reports them)."""
    rows = client.peers()
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no peers configured")
        return
    table = []
    for r in rows:
        lags = r.get("tiers") or {}
        cursors = " ".join(
            f"{t}:{v.get('cursor', '-')}/{v.get('lag', '-')}"
            for t, v in lags.items()
            if isinstance(v, dict)
        )
        table.append(
            [
                r.get("node_id") or r.get("id"),
                r.get("address"),
                r.get("state"),
                _fmt_ms(r.get("rtt_ms")),
                r.get("last_seen") or "-",
                _fmt_ms(r.get("clock_offset_ms")),
                cursors or "-",
                f"{r.get('bytes_in', 0)}/{r.get('bytes_out', 0)}",
                f"{r.get('items_in', 0)}/{r.get('items_out', 0)}",
                r.get("pushes_dropped", 0),
                r.get("rejected", 0),
            ]
        )
    _table(
        [
            "peer",
            "address",
            "state",
            "rtt",
            "last seen",
            "clock offset",
            "cursor/lag",
            "bytes in/out",
            "items in/out",
            "dropped",
            "rejected",
        ],
        table,
    )


def _show_peers(config_path: Path | None, as_json: bool) -> None:
    """The bare ``meshsyncd peers`` (hook of ``commands/node.py``); one-line errors."""
    socket_env = os.environ.get("MESHSYNCD_SOCKET")
    try:
        path = _socket_path(Path(socket_env) if socket_env else None, config_path)
        with Client(path) as client:
            show_peers(client, as_json)
    except Fail as exc:
        _die(str(exc), exc.status)
    except ClientError as exc:
        _die(exc.message, 2 if exc.code in USAGE_CODES else 1)


node.show_peers_hook = _show_peers

COMMANDS = [status, put, get, delete, merge, list_items, vectors, conflicts, watch, sync]
