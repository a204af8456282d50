"""``meshsyncd mcp``: serve the node's memory to MCP hosts (``meshsyncd/mcpserver.py``).

The MCP SDK is imported only when this command runs (it is an optional extra,
``meshsyncd[mcp]``, and heavy); ``meshsyncd --help`` and every other command load this
module without it.
"""

from __future__ import annotations

from pathlib import Path

import click

from .clientcli import Fail, OneLineCommand, die, resolve_socket

__all__ = ["mcp"]


@click.command(
    "mcp",
    cls=OneLineCommand,
    epilog='MCP host config: {"mcpServers": {"meshsyncd": {"command": "meshsyncd", '
    '"args": ["mcp", "--config", "/etc/meshsyncd/meshsyncd.toml"]}}}',
)
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
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (loopback only).",
)
def mcp(socket_path: Path | None, config_path: Path | None, http: str | None) -> None:
    """Serve this node's memory as MCP tools (remember, recall, search, forget, ...) over
    stdio, for an MCP host to spawn; the daemon must be running (`meshsyncd run`).

    \b
    Examples:
      meshsyncd mcp --config node-a/meshsyncd.toml
      meshsyncd mcp --socket /run/meshsyncd/control.sock --http 127.0.0.1:8765
    """
    try:
        socket = resolve_socket(socket_path, config_path)
    except Fail as exc:
        die(str(exc), exc.status)
    try:
        from ..mcpserver import build_server, check_loopback
    except ImportError as exc:
        die(f"the MCP SDK is not installed ({exc}): pip install 'meshsyncd[mcp]'", 2)
    server = build_server(socket)
    if http is None:
        server.run("stdio")
        return
    host, sep, port = http.rpartition(":")
    try:
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--http {http!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
        host = check_loopback(host.strip("[]"))
    except ValueError as exc:
        die(str(exc), 2)
    server.run("streamable-http", host=host, port=int(port))
