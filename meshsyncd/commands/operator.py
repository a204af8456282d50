"""Operator commands: status, vectors, conflicts, sync and the bare ``peers`` table.

They talk to the daemon only through :class:`meshsyncd.client.Client`; socket lookup,
output and errors are shared with the data commands (``clientcli.py``). Importing this
module installs the peers table as ``commands.node.show_peers_hook``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError
from . import node
from .clientcli import (
    TIERS,
    USAGE_CODES,
    Fail,
    OneLineCommand,
    die,
    emit_json,
    node_options,
    pairs,
    print_table,
    resolve_socket,
    tier_arg,
    when,
)

__all__ = ["conflicts", "parse_duration", "show_peers", "status", "sync", "vectors"]


@click.command(cls=OneLineCommand)
@node_options
def status(client: Client, as_json: bool) -> None:
    """Node id, incarnation, uptime and per-tier items, tombstones, sequence and digest.

    \b
    Examples:
      meshsyncd status
      meshsyncd status --json --config /etc/meshsyncd/node.toml
    """
    result = client.status()
    if as_json:
        emit_json(result)
        return
    pairs(
        [
            ("node id", result.get("node_id")),
            ("incarnation", result.get("incarnation")),
            ("uptime", f"{result.get('uptime', 0):.0f} s"),
        ]
    )
    click.echo()
    tiers = result.get("tiers", {})
    print_table(
        ["tier", "items", "tombstones", "seq", "digest"],
        [
            [name, t.get("items"), t.get("tombstones"), t.get("seq"), t.get("digest")]
            for name, t in tiers.items()
        ],
    )


@click.command(cls=OneLineCommand)
@node_options
def vectors(client: Client, as_json: bool) -> None:
    """Sync vectors: per peer and tier, our cursor on its sequence and its ack of ours.

    \b
    Examples:
      meshsyncd vectors
      meshsyncd vectors --json
    """
    result = client.vectors()
    if as_json:
        emit_json(result)
        return
    local = result.get("local_seq", {})
    click.echo("local seq: " + ", ".join(f"{k}={v}" for k, v in local.items()))
    rows = []
    for peer in result.get("peers", []):
        for tier, v in peer.get("tiers", {}).items():
            rows.append([peer.get("peer"), tier, v.get("cursor"), v.get("acked")])
    if rows:
        print_table(["peer", "tier", "cursor", "acked"], rows)
    else:
        click.echo("no peers known yet")


@click.command(cls=OneLineCommand)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--tier", help=f"Only this tier: {TIERS}.")
@node_options
def conflicts(client: Client, as_json: bool, limit: int, tier: str | None) -> None:
    """The conflict log, newest first: which version won over which.

    \b
    Examples:
      meshsyncd conflicts
      meshsyncd conflicts --tier semantic --limit 10 --json
    """
    rows = client.conflicts(limit=limit, tier=None if tier is None else tier_arg(tier))
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no conflicts")
        return
    print_table(
        ["seen", "tier", "item_id", "winner", "loser"],
        [
            [
                when(c["at_ns"]),
                c["tier"],
                c["item_id"],
                f"{when(c['winner']['timestamp_ns'])} {c['winner']['origin']}",
                f"{when(c['loser']['timestamp_ns'])} {c['loser']['origin']}",
            ]
            for c in rows
        ],
    )


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
@node_options
def sync(client: Client, as_json: bool, now: bool, peers: tuple[str, ...], timeout: str) -> None:
    """Sync barrier. By default mesh-wide: when it exits 0, every write acknowledged on any
    node reachable through sessions before it began is readable here, and this node's
    earlier writes are on every reachable node. It exits 1 naming the nodes it could not
    cover (configured peers not connected here or further along, peers that did not answer
    in time). With --peer, two-node syncs with those direct peers only.

    \b
    Examples:
      meshsyncd sync --now
      meshsyncd sync --now --peer 4x3k...q --peer 7mfa...a --timeout 5s
    """
    if not now:
        raise Fail("sync needs --now (the only mode: sync now and wait)", 2)
    seconds = parse_duration(timeout)
    show = not as_json and sys.stderr.isatty()
    with _progress(client.path, enabled=show):
        result = client.sync(list(peers) or None, seconds)
    failed = result.get("failed", [])
    nodes: dict[str, str] | None = result.get("nodes")
    if as_json:
        emit_json(result)
    elif nodes is not None:  # the mesh-wide barrier: every node it knows of
        rows = [[n, "synced" if s == "covered" else s.upper()] for n, s in nodes.items()]
        if rows:
            print_table(["node", "result"], rows)
        covered = sum(1 for s in nodes.values() if s == "covered")
        click.echo(f"{covered}/{len(nodes)} nodes synced in {result.get('seconds', 0):.2f} s")
    else:
        rows = [[p, "synced"] for p in result.get("synced", [])]
        rows += [[p, "FAILED"] for p in failed]
        if rows:
            print_table(["peer", "result"], rows)
        else:
            click.echo("no connected peers")
    if failed:
        named = [f"{n} ({nodes[n]})" if nodes and n in nodes else n for n in failed]
        raise Fail(f"sync did not complete with: {', '.join(named)}", 1)


@contextlib.contextmanager
def _progress(path: Path, *, enabled: bool) -> Iterator[None]:
    """On a terminal, show items pulled and the remaining lag while a long sync runs.

    A full resync of a large tier can take minutes; a silent command looks hung. The
    progress line comes from a second control connection polling the peers table.
    """
    if not enabled:
        yield
        return
    done = threading.Event()

    def poll() -> None:
        with contextlib.suppress(ClientError, OSError), Client(path, timeout=5) as watcher:
            while not done.wait(0.5):
                rows = watcher.peers()
                got = sum(int(r.get("items_in") or 0) for r in rows)
                lag = sum(
                    int(v)
                    for r in rows
                    for v in (r.get("lag") or {}).values()
                    if isinstance(v, int)
                )
                nodes = watcher.request("sync_progress", {})
                covered = f"{nodes.get('covered', 0)}/{nodes.get('known', 0)} nodes, "
                click.echo(
                    f"\rsync: {covered}{got:,} items in, {lag:,} behind   ", err=True, nl=False
                )

    thread = threading.Thread(target=poll, name="sync-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(2)
        click.echo("\r" + " " * 60 + "\r", err=True, nl=False)


def _fmt_ms(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1f} ms"


def _ago(value: Any) -> str:
    if not isinstance(value, int | float) or value <= 0:
        return "-"
    return f"{max(0.0, time.time() - value):.1f} s ago"


def _cursor_lag(row: dict[str, Any]) -> str:
    cursors = row.get("cursors") or {}
    lags = row.get("lag") or {}
    if not isinstance(cursors, dict) or not cursors:
        return "-"
    lags = lags if isinstance(lags, dict) else {}
    return " ".join(f"{t}:{c}/{lags.get(t, '-')}" for t, c in cursors.items())


def show_peers(client: Client, as_json: bool) -> None:
    """The peers table from the running daemon: one row per configured peer."""
    rows = client.peers()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no peers configured")
        return
    body = [
        [
            r.get("id") or r.get("node_id"),
            r.get("address"),
            r.get("state"),
            _fmt_ms(r.get("rtt_ms")),
            _ago(r.get("last_seen")),
            _fmt_ms(r.get("clock_offset_ms")),
            _cursor_lag(r),
            f"{r.get('bytes_in', 0)}/{r.get('bytes_out', 0)}",
            f"{r.get('items_in', 0)}/{r.get('items_out', 0)}",
            r.get("pushes_dropped", 0),
            r.get("rejected", 0),
        ]
        for r in rows
    ]
    headers = ["peer", "address", "state", "rtt", "last seen", "clock offset"]
    headers += ["cursor/lag by tier", "bytes in/out", "items in/out", "dropped", "rejected"]
    print_table(headers, body)


def _show_peers(config_path: Path | None, as_json: bool) -> None:
    """The bare ``meshsyncd peers`` (hook of ``commands/node.py``); one-line errors."""
    socket_env = os.environ.get("MESHSYNCD_SOCKET")
    try:
        path = resolve_socket(Path(socket_env) if socket_env else None, config_path)
        with Client(path) as client:
            show_peers(client, as_json)
    except Fail as exc:
        die(str(exc), exc.status)
    except ClientError as exc:
        die(exc.message, 2 if exc.code in USAGE_CODES else 1)


if node.show_peers_hook is node._default_show_peers:  # leave a hook someone else set
    node.show_peers_hook = _show_peers
peers = node.peers  # what the CLI runs as ``meshsyncd peers``: the group, hook installed
