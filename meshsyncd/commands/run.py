"""``meshsyncd run``: the daemon in the foreground (what the systemd unit starts)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click
import trio

from ..config import ConfigError, load_config
from ..identity import IdentityError, load_identity
from ..logs import configure_logging

__all__ = ["run"]


@click.command("run")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="MESHSYNCD_CONFIG",
    help="The node's meshsyncd.toml (default: $MESHSYNCD_CONFIG, then ./meshsyncd.toml).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default=None,
    help="Override the config's log_format (auto: JSON unless stderr is a terminal).",
)
def run(config: Path | None, log_format: str | None) -> None:
    """Run the node daemon in the foreground until SIGTERM or Ctrl-C.

    SIGHUP reloads the config (peers added are dialled, removed ones disconnected). The
    node directory is locked while the daemon runs; a second `run` on it exits 2.

    \b
    Exit status: 0 stopped by SIGTERM or Ctrl-C; 2 it could not start (bad config or key,
    the node already running, a port or the control socket taken, the store not
    openable): one line on stderr says which. The systemd unit does not restart on 2.

    \b
    Example:
      meshsyncd init --dir ~/node --listen 127.0.0.1:7700
      meshsyncd run --config ~/node/meshsyncd.toml
    """
    from ..node.daemon import run_daemon
    from ..node.lock import NodeLock, NodeLockError
    from ..node.startup import find_startup_error, first_os_error

    try:
        cfg = load_config(config)
        identity = load_identity(cfg.node_dir)
    except (ConfigError, IdentityError) as exc:
        _fail(str(exc))
    lock = NodeLock(cfg.node_dir)
    try:
        lock.acquire()  # before the store, the sockets or the pid file are touched
    except NodeLockError as exc:
        _fail(str(exc))
    try:
        configure_logging(log_format or cfg.log_format, cfg.log_level)
        trio.run(run_daemon, cfg, identity)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        found = find_startup_error(exc)
        if found is not None:
            _fail(str(found))
        os_error = first_os_error(exc)
        if os_error is None:
            raise  # a bug: the traceback is the report
        # Not a startup step (those are named): worth a restart, so status 1, one line.
        click.echo(f"meshsyncd: daemon failed: {os_error}", err=True)
        raise SystemExit(1) from None
    finally:
        lock.release()


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2: the operator has something to fix first."""
    from ..node.startup import EXIT_STARTUP

    click.echo(f"meshsyncd: {message}", err=True)
    raise SystemExit(EXIT_STARTUP)
