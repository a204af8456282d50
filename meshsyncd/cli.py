"""The ``meshsyncd`` command line (click). Talks to a daemon only through the control client."""

from __future__ import annotations

import click

from . import __version__
from .bench import bench
from .commands.data import (
    conflicts,
    delete,
    get,
    list_items,
    merge,
    put,
    status,
    sync,
    vectors,
    watch,
)
from .commands.node import id_command, init, peers
from .commands.run import run
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
main.add_command(run)
main.add_command(status)
main.add_command(put)
main.add_command(get)
main.add_command(delete)
main.add_command(merge)
main.add_command(list_items)
main.add_command(vectors)
main.add_command(conflicts)
main.add_command(watch)
main.add_command(sync)
