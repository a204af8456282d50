"""``meshsyncd init``, ``id`` and ``peers add/remove``: a node's files, without a daemon.

These commands work on the node directory and its config directly, so they run before the
daemon exists and while it is stopped. A running daemon learns about a config edit by SIGHUP:
it writes its decimal pid to ``<node_dir>/meshsyncd.pid`` and reloads the config when it gets
the signal. Before signalling we check (on Linux, via ``/proc``) that the pid still belongs to
a meshsyncd process, because a stale pid file can name an unrelated process that SIGHUP would
kill.

Errors are one line on stderr, ``meshsyncd: ...``; the exit status is the same as every
command's (``output.EXIT_HELP``): 2 for a bad argument (id, tier, address) or a config that
cannot be loaded, 1 when the operation fails (a peer listed twice, a node already there).
The bare ``meshsyncd peers`` table needs the daemon's control socket and is provided
elsewhere through :data:`show_peers_hook`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import click

from ..config import (
    ALL_TIERS,
    CONFIG_FILE,
    DEFAULT_LISTEN,
    Config,
    ConfigError,
    PeerConfig,
    add_peer,
    load_config,
    parse_address,
    parse_tiers,
    remove_peer,
    write_new_config,
)
from ..identity import (
    CERT_FILE,
    KEY_FILE,
    IdentityError,
    create_identity,
    load_identity,
    node_id_text,
    parse_node_id,
)
from ..ids import resolve_prefix, short_text
from ..store import Store
from .output import EXIT_HELP, Output, output_options

__all__ = [
    "BadArgument",
    "NodeError",
    "id_command",
    "init",
    "peers",
    "show_peers_hook",
    "signal_reload",
]

ShowPeersHook = Callable[[Path | None, Path | None, str], None]
"""Called by a bare ``meshsyncd peers`` with ``--config``, ``--socket`` (or None) and the
output form (``table``, ``wide`` or ``json``)."""

_ALL = ",".join(tier.name.lower() for tier in sorted(ALL_TIERS))


class NodeError(click.ClickException):
    """A failure reported as one line, ``meshsyncd: <message>``; exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"meshsyncd: {self.format_message()}", err=True, file=file)


class BadArgument(NodeError):
    """A bad id, tier or address, or a config that cannot be loaded; exit status 2."""

    exit_code = 2


class _OneLineUsage(click.UsageError):
    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"meshsyncd: {self.format_message()}", err=True, file=file)


class _Command(click.Command):
    """A command whose argument errors are one line (status 2) instead of usage + Error;
    its help ends with the exit statuses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EXIT_HELP)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _OneLineUsage(exc.format_message(), ctx) from None


class _Group(click.Group):
    command_class = _Command

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


def _default_show_peers(config: Path | None, socket: Path | None, form: str) -> None:
    raise NodeError("peers table needs the daemon's control socket (not available yet)")


show_peers_hook: ShowPeersHook = _default_show_peers
"""Replace to implement the bare ``meshsyncd peers`` table (looked up at call time)."""

_config_option = click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file [env: MESHSYNCD_CONFIG; default: ./meshsyncd.toml].",
)


@click.command(cls=_Command)
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Node directory to create (mode 0700).",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Address the daemon accepts peers on.",
)
@click.option(
    "--control-socket",
    default="control.sock",
    show_default=True,
    metavar="PATH",
    help="The config's control_socket. Under systemd give /run/meshsyncd/control.sock, so "
    "that commands reading the config find the service's socket without --socket.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"node_id": ..., "config": ...}.')
def init(directory: Path, listen: str, control_socket: str, as_json: bool) -> None:
    """Create a node: Ed25519 key and certificate, meshsyncd.toml and an empty store.

    Prints the new node id; give it to the peers that should trust this node. Refuses a
    directory that already holds a node.

    \b
    Examples:
      meshsyncd init --dir /etc/meshsyncd --listen 0.0.0.0:7700 \\
          --control-socket /run/meshsyncd/control.sock
      NODE=$(meshsyncd init --dir ./node-a --listen 127.0.0.1:7701)
      meshsyncd init --dir ./node-b --listen [::1]:7702 --json
    """
    try:
        parse_address(listen, "--listen", allow_port_zero=True)
    except ConfigError as exc:
        raise BadArgument(str(exc)) from None
    if not control_socket.strip():
        raise BadArgument("--control-socket: give a path (default control.sock)")
    for name in (KEY_FILE, CERT_FILE, CONFIG_FILE, "store.db"):
        if (directory / name).exists():
            raise NodeError(f"{directory} already holds a node ({name}); refusing to overwrite")
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # the umask may have narrowed it; never leave it wider
        identity = create_identity(directory)
        config_path = directory / CONFIG_FILE
        write_new_config(config_path, listen=listen, control_socket=control_socket)
        config = load_config(config_path)
        config.store_path.parent.mkdir(parents=True, exist_ok=True)
        Store.open(config.store_path).close()
    except (IdentityError, ConfigError) as exc:
        raise NodeError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise NodeError(f"{directory}: cannot create the node: {exc}") from None
    if as_json:
        click.echo(json.dumps({"node_id": identity.text, "config": str(config.path)}))
    else:
        click.echo(identity.text)


@click.command("id", cls=_Command)
@_config_option
@click.option("--json", "as_json", is_flag=True, help='Print {"node_id": ..., "short": ...}.')
def id_command(config: Path | None, as_json: bool) -> None:
    """Print this node's id (what peers put in their config).

    In --json, "short" is the short form that tables and logs show (the first 12
    characters, all that the origin of items written here determines), and "origin" that
    64-bit origin in hex, as the control socket's JSON carries it.

    \b
    Examples:
      meshsyncd id
      meshsyncd id --config /etc/meshsyncd/meshsyncd.toml --json
    """
    try:
        identity = load_identity(load_config(config).node_dir)
    except (IdentityError, ConfigError) as exc:
        raise BadArgument(str(exc)) from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "node_id": identity.text,
                    "short": short_text(identity.text),
                    "origin": f"{identity.short:016x}",
                }
            )
        )
    else:
        click.echo(identity.text)


@click.group(cls=_Group, invoke_without_command=True)
@_config_option
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, readable=False, path_type=Path),
    envvar="MESHSYNCD_SOCKET",
    help="Control socket of the node, for the table [env: MESHSYNCD_SOCKET; default: the "
    "config's control_socket].",
)
@output_options
@click.pass_context
def peers(
    ctx: click.Context, config: Path | None, socket_path: Path | None, output: Output
) -> None:
    """Show the peers table (needs the running daemon), or add and remove peers.

    The table fits 100 columns: each peer by the short form of its node id, its state,
    when it was last seen and, for a peer not connected, the reason in plain words.
    -o wide adds round trip, clock offset, cursors and lag, traffic and full ids.

    \b
    Examples:
      meshsyncd peers
      meshsyncd peers -o wide --socket /run/meshsyncd/control.sock
      meshsyncd peers add 6xziurmgrqyz4xmoovsawsqnldlxpqsyxdk2cmuy5dyvdieg53pa 10.0.0.2:7700
      meshsyncd peers remove 6xzi
    """
    if ctx.invoked_subcommand is None:
        show_peers_hook(config, socket_path, output.form)


@peers.command("add")
@click.argument("node_id", metavar="NODE_ID")
@click.argument("address", metavar="HOST:PORT")
@click.option(
    "--tiers",
    default=_ALL,
    show_default=True,
    help="Tiers the peer receives from us (comma-separated; empty for none).",
)
@click.option(
    "--write-tiers",
    default=_ALL,
    show_default=True,
    help="Tiers the peer may write to us (comma-separated; empty for none).",
)
@click.option(
    "--introducer",
    is_flag=True,
    help="Also trust the peers this one vouches for (never with wider tiers than its own).",
)
@_config_option
@click.pass_context
def peers_add(
    ctx: click.Context,
    node_id: str,
    address: str,
    tiers: str,
    write_tiers: str,
    introducer: bool,
    config: Path | None,
) -> None:
    """Trust a peer: list NODE_ID at HOST:PORT in the config, then reload a running daemon.

    \b
    Examples:
      meshsyncd peers add 6xziurmgrqyz4xmoovsawsqnldlxpqsyxdk2cmuy5dyvdieg53pa 10.0.0.2:7700
      meshsyncd peers add 6XZI-URMG-... laptop.lan:7700 --tiers semantic --write-tiers ""
      meshsyncd peers add 6xziurmg... hub.lan:7700 --introducer   # join the hub's mesh
    """
    try:
        peer_id = parse_node_id(node_id)
    except ValueError as exc:
        raise BadArgument(f"NODE_ID: {exc}") from None
    try:
        host, port = parse_address(address, "HOST:PORT")
        peer = PeerConfig(
            peer_id,
            host,
            port,
            parse_tiers(tiers, "--tiers"),
            parse_tiers(write_tiers, "--write-tiers"),
            introducer=introducer,
        )
    except ConfigError as exc:
        raise BadArgument(str(exc)) from None
    loaded = _load(config, ctx)
    try:
        own = load_identity(loaded.node_dir).node_id
    except IdentityError:
        own = None
    if own == peer_id:
        raise BadArgument(f"NODE_ID: {node_id_text(peer_id)} is this node's own id")
    try:
        add_peer(loaded.path, peer)
    except ConfigError as exc:
        raise NodeError(str(exc)) from None
    receives = ", ".join(t.name.lower() for t in sorted(peer.tiers)) or "nothing"
    writes = ", ".join(t.name.lower() for t in sorted(peer.write_tiers)) or "nothing"
    role = ", introducer" if introducer else ""
    click.echo(
        f"added peer {peer.text} at {peer.address} (receives {receives}; writes {writes}{role})"
    )
    _reload(loaded.pid_file)


@peers.command("remove")
@click.argument("node_id", metavar="NODE_ID")
@_config_option
@click.pass_context
def peers_remove(ctx: click.Context, node_id: str, config: Path | None) -> None:
    """Stop trusting a peer: drop NODE_ID from the config, then reload a running daemon.

    NODE_ID is the peer's node id or a unique prefix of it (at least 4 characters).

    \b
    Examples:
      meshsyncd peers remove 6xziurmgrqyz4xmoovsawsqnldlxpqsyxdk2cmuy5dyvdieg53pa
      meshsyncd peers remove 6xziurmg --config /etc/meshsyncd/meshsyncd.toml
    """
    loaded = _load(config, ctx)
    try:
        typed = resolve_prefix(node_id, [p.text for p in loaded.peers], what="peer")
        peer_id = parse_node_id(typed)
    except ValueError as exc:  # IdPrefixError is one
        raise BadArgument(f"NODE_ID: {exc}") from None
    try:
        remove_peer(loaded.path, peer_id)
    except ConfigError as exc:
        raise NodeError(str(exc)) from None
    click.echo(f"removed peer {node_id_text(peer_id)}")
    _reload(loaded.pid_file)


def signal_reload(pid_file: Path) -> int | None:
    """Send SIGHUP to the daemon named in ``pid_file``; its pid, or None if none is running.

    A missing or unreadable-as-a-number pid file, a dead process, or a live process that is
    not meshsyncd (the pid was reused) all mean "not running".

    Raises:
        NodeError: the daemon runs but we may not signal it (another user).
    """
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if pid <= 1 or pid == os.getpid() or not _is_meshsyncd(pid):
        return None  # 0 and -1 would signal whole process groups
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    except PermissionError:
        raise NodeError(
            f"config saved, but the daemon (pid {pid}) belongs to another user; "
            f"reload it as that user: kill -HUP {pid}"
        ) from None
    return pid


def _is_meshsyncd(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False  # procfs is there, so the process is gone
    except OSError:
        pass
    else:
        return b"meshsyncd" in cmdline  # empty for a zombie: dead
    try:  # no procfs (not Linux): alive is the best we can tell
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load(config: Path | None, ctx: click.Context) -> Config:
    if config is None and ctx.parent is not None:
        config = ctx.parent.params.get("config")
    try:
        return load_config(config)
    except ConfigError as exc:
        raise BadArgument(str(exc)) from None


def _reload(pid_file: Path) -> None:
    pid = signal_reload(pid_file)
    if pid is None:
        click.echo("daemon not running; the change applies at next start")
    else:
        click.echo(f"sent SIGHUP to the daemon (pid {pid}); it reloads the config now")
