"""Shared plumbing of the data and operator commands: finding the control socket, one-line
errors with the right exit status, tables and argument checks.

Every command finds the node's control socket from ``--socket PATH`` (or
``MESHSYNCD_SOCKET``), else from the node config (``--config PATH`` or
``MESHSYNCD_CONFIG``). Output is a table that fits 100 columns, ``-o wide`` or ``-o json``
(``--json``); see ``output.py``. Errors are one line ``meshsyncd: ...``, and the exit status
is the same on every command (:data:`output.EXIT_HELP`): 1 the operation failed, 2 a usage
or configuration error, 3 the daemon is not reachable.
"""

from __future__ import annotations

import datetime
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click

from ..client import Client, ClientError, DaemonNotRunning, Unreachable
from ..control.proto import ControlError, parse_item_id, parse_priority, parse_tier
from ..ids import origin_text
from .output import (
    EXIT_DAEMON,
    EXIT_FAILED,
    EXIT_HELP,
    EXIT_USAGE,
    Column,
    Output,
    emit_json,
    output_options,
    print_table,
)

__all__ = [
    "Column",
    "Fail",
    "OneLineCommand",
    "OneLineGroup",
    "Output",
    "client_status",
    "die",
    "emit_json",
    "node_options",
    "print_table",
    "resolve_socket",
    "socket_options",
]

F = TypeVar("F", bound=Callable[..., Any])
USAGE_CODES = {"bad_request", "unknown_tier", "too_large", "usage"}
UNREACHABLE_CODES = {"daemon_not_running", "permission_denied", "timeout"}
TIERS = "working|episodic|semantic (or L1|L2|L3, 0|1|2)"
PRIORITIES = "background|low|normal|high|urgent"
SOCKET_HELP = (
    "Control socket of the node [env: MESHSYNCD_SOCKET; default: the config's control_socket]."
)
CONFIG_HELP = (
    "Node config file, which says where the control socket is "
    "[env: MESHSYNCD_CONFIG; default: ./meshsyncd.toml]."
)


class Fail(Exception):
    """A one-line error for the user, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class _OneLineUsage(click.UsageError):
    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"meshsyncd: {self.format_message()}", err=True, file=file)


class OneLineGroup(click.Group):
    """A group of :class:`OneLineCommand`: usage errors as one line, help ending with the
    exit statuses (``snapshot create/list/drop``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EXIT_HELP)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _OneLineUsage(exc.format_message(), ctx) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _OneLineUsage(exc.format_message(), ctx) from None


class OneLineCommand(click.Command):
    """Argument errors as one line ``meshsyncd: ...`` with status 2, not usage + Error.

    The help of every such command ends with the exit statuses.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EXIT_HELP)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _OneLineUsage(exc.format_message(), ctx) from None


def die(message: str, status: int) -> NoReturn:
    click.echo(f"meshsyncd: {message}", err=True)
    sys.exit(status)


def client_status(exc: ClientError) -> int:
    """The exit status for a failed request: 3 unreachable, 2 refused as bad input, else 1."""
    if isinstance(exc, Unreachable) or exc.code in UNREACHABLE_CODES:
        return EXIT_DAEMON
    return EXIT_USAGE if exc.code in USAGE_CODES else EXIT_FAILED


def socket_options(fn: F) -> F:
    """``--socket`` and ``--config``: where the daemon's control socket is."""

    @click.option(
        "--socket",
        "socket_path",
        type=click.Path(dir_okay=False, readable=False, path_type=Path),
        envvar="MESHSYNCD_SOCKET",
        help=SOCKET_HELP,
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="MESHSYNCD_CONFIG",
        help=CONFIG_HELP,
    )
    @functools.wraps(fn)
    def wrapper(**kw: Any) -> Any:
        return fn(**kw)

    return wrapper  # type: ignore[return-value]


def node_options(fn: F) -> F:
    """--socket, --config, -o/--json for every command, plus one-line error handling."""

    @socket_options
    @output_options
    @functools.wraps(fn)
    def wrapper(
        socket_path: Path | None, config_path: Path | None, output: Output, **kw: Any
    ) -> None:
        try:
            path = resolve_socket(socket_path, config_path)
            with Client(path) as client:
                fn(client, output, **kw)
        except Fail as exc:
            die(str(exc), exc.status)
        except DaemonNotRunning as exc:
            die(exc.message + service_hint(path), client_status(exc))
        except ClientError as exc:
            die(exc.message, client_status(exc))
        except ControlError as exc:
            die(exc.message, EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


SERVICE_SOCKET = Path("/run/meshsyncd/control.sock")
"""Where the shipped systemd unit's daemon has its socket (``RuntimeDirectory=meshsyncd``)."""


def service_hint(tried: Path) -> str:
    """A pointer to the systemd service's socket when that one exists and was not tried.

    Why: in a login shell ``$RUNTIME_DIRECTORY`` is unset, so a config with a relative
    ``control_socket`` points at the node directory while the service listens in /run.
    """
    if tried != SERVICE_SOCKET and SERVICE_SOCKET.exists():
        return (
            f" (a meshsyncd service listens on {SERVICE_SOCKET}: pass --socket "
            f"{SERVICE_SOCKET}, or set control_socket to it in the config)"
        )
    return ""


def resolve_socket(socket_path: Path | None, config_path: Path | None) -> Path:
    """The control socket: ``--socket``, else the config's ``control_socket``.

    Raises:
        Fail: the config cannot be loaded (status 2).
    """
    if socket_path is not None:
        return socket_path
    from ..config import ConfigError, load_config  # lazily: only when no --socket

    try:
        cfg = load_config(config_path)
    except (ConfigError, OSError) as exc:
        raise Fail(f"cannot load the config: {exc}", EXIT_USAGE) from exc
    return Path(cfg.control_socket)


# -- output -------------------------------------------------------------------------------


def pairs(pairs: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        click.echo(f"{k.ljust(width)}  {'' if v is None else v}")


def when(ns: Any, *, short: bool = False) -> str:
    """UTC time of a nanosecond timestamp: to the millisecond, or to the second if short."""
    if not isinstance(ns, int) or ns <= 0:
        return "-"
    dt = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    if short:
        return dt.strftime("%Y-%m-%d %H:%M:%S")
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
        raise Fail(exc.message, EXIT_USAGE) from None


def prio_arg(value: str) -> str:
    try:
        return parse_priority(value).name.lower()
    except ControlError as exc:
        raise Fail(exc.message, EXIT_USAGE) from None


def item_target(item_id: str | None, key: str | None, *, required: bool) -> dict[str, Any]:
    if item_id is not None and key is not None:
        raise Fail("give either an item id or --key, not both", EXIT_USAGE)
    if item_id is not None:
        try:
            parse_item_id(item_id.lower())
        except ControlError as exc:
            raise Fail(exc.message, EXIT_USAGE) from None
        return {"item_id": item_id.lower()}
    if key is not None:
        return {"key": key}
    if required:
        raise Fail("give an item id (32 hex digits) or --key NAME", EXIT_USAGE)
    return {}


def written(result: dict[str, Any], out: Output) -> None:
    """What a write command prints: the written version (origin as the short node id)."""
    if out.json:
        emit_json(result)
        return
    pairs(
        [
            ("item_id", result.get("item_id")),
            ("tier", result.get("tier")),
            ("op", result.get("op")),
            ("priority", result.get("priority")),
            ("timestamp", when(result.get("timestamp_ns"))),
            ("origin", origin_text(result.get("origin"))),
        ]
    )


TIER_OPT = click.option("--tier", default="episodic", show_default=True, help=f"Tier: {TIERS}.")
PRIO_OPT = click.option(
    "--priority", default="normal", show_default=True, help=f"Priority: {PRIORITIES}."
)
KEY_OPT = click.option("--key", help="Item named by a key (in --namespace, default the root).")
