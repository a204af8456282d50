"""``meshsyncd run``: the daemon in the foreground (what the systemd unit starts)."""

from __future__ import annotations

from pathlib import Path

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

    SIGHUP reloads the config (peers added are dialled, removed ones disconnected).

    \b
    Example:
      meshsyncd init --dir ~/node --listen 127.0.0.1:7700
      meshsyncd run --config ~/node/meshsyncd.toml
    """
    from ..node.daemon import run_daemon

    try:
        cfg = load_config(config)
        identity = load_identity(cfg.node_dir)
    except (ConfigError, IdentityError) as exc:
        click.echo(f"meshsyncd: {exc}", err=True)
        raise SystemExit(2) from None
    configure_logging(log_format or cfg.log_format, cfg.log_level)
    try:
        trio.run(run_daemon, cfg, identity)
    except OSError as exc:
        click.echo(f"meshsyncd: cannot start: {exc}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
