"""The ``meshsyncd`` command line (click). Talks to a daemon only through the control client."""

from __future__ import annotations

import click

from . import __version__
from .bench import bench
from .commands.node import id_command, init, peers
from .decode import decode
from .demo import demo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshsyncd")
def main() -> None:
    """meshsyncd: replicate memory items across a mesh of nodes over mutual TLS."""


main.add_command(bench)
main.add_command(decode)
main.add_command(demo)
main.add_command(init)
main.add_command(id_command)
main.add_command(peers)
