"""Shared plumbing of the data and operator commands: finding the control socket, one-line
errors with the right exit status, tables and argument checks.

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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click

from ..client import Client, ClientError
from ..control.proto import ControlError, parse_item_id, parse_priority, parse_tier

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


def die(message: str, status: int) -> NoReturn:
    click.echo(f"meshsyncd: {message}", err=True)
    sys.exit(status)


def node_options(fn: F) -> F:
    """--socket, --config and --json for every command, plus one-line error handling."""

    @click.option(
        "--socket",
        "socket_path",
        type=click.Path(dir_okay=False, readable=False, path_type=Path),
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
            with Client(resolve_socket(socket_path, config_path)) as client:
                fn(client, as_json, **kw)
        except Fail as exc:
            die(str(exc), exc.status)
        except ClientError as exc:
            die(exc.message, 2 if exc.code in USAGE_CODES else 1)
        except ControlError as exc:
            die(exc.message, 2)

    return wrapper  # type: ignore[return-value]


def resolve_socket(socket_path: Path | None, config_path: Path | None) -> Path:
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


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def pairs(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        click.echo(f"{k.ljust(width)}  {'' if v is None else v}")


def when(ns: Any) -> str:
    if not isinstance(ns, int) or ns <= 0:
        return "-"
    dt = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def preview(item: dict[str, Any], width: int = 48) -> str:
    if item.get("deleted"):
        return "(deleted)"
    text = item.get("value")
    if text is None:
        return f"({item.get('size', 0)} bytes, binary)" if "value_b64" in item else ""
    text = str(text).replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


# -- argument checks (exit 2 before anything is sent) ------------------------------------


def tier_arg(value: str) -> str:
    try:
        return parse_tier(value).name.lower()
    except ControlError as exc:
        raise Fail(exc.message, 2) from None


def prio_arg(value: str) -> str:
    try:
        return parse_priority(value).name.lower()
    except ControlError as exc:
        raise Fail(exc.message, 2) from None


def item_target(item_id: str | None, key: str | None, *, required: bool) -> dict[str, Any]:
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


def written(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    pairs(
        [
            ("item_id", result.get("item_id")),
            ("tier", result.get("tier")),
            ("op", result.get("op")),
            ("priority", result.get("priority")),
            ("timestamp", when(result.get("timestamp_ns"))),
            ("origin", result.get("origin")),
        ]
    )


TIER_OPT = click.option("--tier", default="episodic", show_default=True, help=f"Tier: {TIERS}.")
PRIO_OPT = click.option(
    "--priority", default="normal", show_default=True, help=f"Priority: {PRIORITIES}."
)
KEY_OPT = click.option("--key", help="Item named by a key (id = SHA-256('key:'+NAME)[:16]).")
