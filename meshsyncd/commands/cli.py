"""The ``meshsyncd`` command line (click). Talks to a daemon only through the control client.

Commands are imported when they are invoked, not when the CLI starts: the daemon pulls in
trio, cryptography and structlog, the benches the whole engine, and an agent calling
``meshsyncd put`` in a loop should pay for none of that (start-up went from ~360 ms and
44 MiB with everything imported to what the one command needs).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import IO, Any

import click

from .. import __version__
from .output import EXIT_HELP

__all__ = ["LazyGroup", "main"]


class LazyGroup(click.Group):
    """A click group whose subcommands are ``"module:attribute"`` paths, imported on use."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):  # a wrong table entry is our bug
            raise TypeError(f"{target} is not a click command")
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """An unknown command is one line naming the nearest ones (``peer``: ``peers``)."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise _UnknownCommand(
                f"no such command {name!r}{hint} (meshsyncd --help lists them)", ctx
            )
        return super().resolve_command(ctx, args)


class _UnknownCommand(click.UsageError):
    """One line ``meshsyncd: ...``, exit status 2, instead of usage + Error."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"meshsyncd: {self.format_message()}", err=True, file=file)


_COMMANDS = {
    "bench": "meshsyncd.bench.commands:bench",
    "check": "meshsyncd.commands.check:check",
    "conflicts": "meshsyncd.commands.conflicts:conflicts",
    "decode": "meshsyncd.commands.decode:decode",
    "delete": "meshsyncd.commands.data:delete",
    "demo": "meshsyncd.commands.demo:demo",
    "export": "meshsyncd.commands.memshadow:export",
    "freeze": "meshsyncd.commands.guard:freeze",
    "get": "meshsyncd.commands.data:get",
    "history": "meshsyncd.commands.history:history",
    "id": "meshsyncd.commands.node:id_command",
    "import": "meshsyncd.commands.memshadow:import_command",
    "init": "meshsyncd.commands.node:init",
    "list": "meshsyncd.commands.data:list_items",
    "mcp": "meshsyncd.commands.mcpcmd:mcp",
    "merge": "meshsyncd.commands.data:merge",
    "namespaces": "meshsyncd.commands.names:namespaces",
    "peers": "meshsyncd.commands.operator:peers",
    "put": "meshsyncd.commands.data:put",
    "run": "meshsyncd.commands.run:run",
    "snapshot": "meshsyncd.commands.snapshot:snapshot",
    "status": "meshsyncd.commands.operator:status",
    "sync": "meshsyncd.commands.operator:sync",
    "unfreeze": "meshsyncd.commands.guard:unfreeze",
    "vectors": "meshsyncd.commands.operator:vectors",
    "watch": "meshsyncd.commands.names:watch",
}


@click.group(
    cls=LazyGroup,
    lazy=_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_HELP + " Commands that talk to a daemon find its control socket with --socket or "
    "MESHSYNCD_SOCKET, else from the config (--config or MESHSYNCD_CONFIG).",
)
@click.version_option(__version__, prog_name="meshsyncd")
def main() -> None:
    """meshsyncd: replicate memory items across a mesh of nodes over mutual TLS."""
