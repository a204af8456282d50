"""Operator commands: status, vectors, conflicts, sync and the bare ``peers`` table.

They talk to the daemon only through :class:`meshsyncd.client.Client`; socket lookup,
output and errors are shared with the data commands (``clientcli.py``). Importing this
module installs the peers table as ``commands.node.show_peers_hook``.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError, DaemonNotRunning
from ..ids import IdPrefixError, resolve_prefix, short_text
from . import node
from .clientcli import (
    Column,
    Fail,
    OneLineCommand,
    Output,
    client_status,
    die,
    emit_json,
    node_options,
    pairs,
    print_table,
    resolve_socket,
    service_hint,
    when,
)
from .output import EXIT_FAILED, EXIT_USAGE

__all__ = [
    "PEER_COLUMNS",
    "STATUS_COLUMNS",
    "SYNC_COLUMNS",
    "VECTOR_COLUMNS",
    "parse_duration",
    "peer_rows",
    "show_peers",
    "status",
    "status_rows",
    "sync",
    "vector_rows",
    "vectors",
]


@click.command(cls=OneLineCommand)
@node_options
def status(client: Client, out: Output) -> None:
    """Node id, incarnation, uptime and per-tier items, tombstones, sequence and digest.

    The table shows each digest's first 16 hex digits (enough to compare nodes by eye);
    -o wide and -o json show it whole.

    \b
    Examples:
      meshsyncd status
      meshsyncd status --json --config /etc/meshsyncd/node.toml
    """
    result = client.status()
    if out.json:
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
    print_table(STATUS_COLUMNS, status_rows(result, out), wide=out.wide)
    repair = result.get("repair")
    if repair:
        click.echo()
        pairs(
            [
                ("repairs", repair.get("repairs")),
                ("items repaired", repair.get("items_repaired")),
                ("cursor rewinds", repair.get("cursor_rewinds")),
                ("digest fixes", repair.get("digest_fixes")),
                ("last self-check", when(int((repair.get("last_verify") or 0) * 1e9))),
            ]
        )


STATUS_COLUMNS = [
    Column("tier"),
    Column("items", right=True),
    Column("tombstones", right=True),
    Column("seq", right=True),
    Column("digest"),
]


def status_rows(result: dict[str, Any], out: Output) -> list[list[Any]]:
    """Rows of the ``status`` table."""
    tiers = result.get("tiers", {})
    return [
        [
            name,
            t.get("items"),
            t.get("tombstones"),
            t.get("seq"),
            t.get("digest") if out.wide else str(t.get("digest", ""))[:16],
        ]
        for name, t in tiers.items()
    ]


@click.command(cls=OneLineCommand)
@node_options
def vectors(client: Client, out: Output) -> None:
    """Sync vectors: per peer and tier, our cursor on its sequence and its ack of ours.

    \b
    Examples:
      meshsyncd vectors
      meshsyncd vectors --json
    """
    result = client.vectors()
    if out.json:
        emit_json(result)
        return
    local = result.get("local_seq", {})
    click.echo("local seq: " + ", ".join(f"{k}={v}" for k, v in local.items()))
    rows = vector_rows(result, out)
    if rows:
        print_table(VECTOR_COLUMNS, rows, wide=out.wide)
    else:
        click.echo("no peers known yet")


VECTOR_COLUMNS = [
    Column("peer"),
    Column("tier"),
    Column("cursor", right=True),
    Column("acked", right=True),
]


def vector_rows(result: dict[str, Any], out: Output) -> list[list[Any]]:
    """Rows of the ``vectors`` table: a peer by its node id (short unless wide)."""
    rows = []
    for peer in result.get("peers", []):
        name = str(peer.get("peer") or "")
        shown = name if out.wide else short_text(name)
        for tier, v in peer.get("tiers", {}).items():
            rows.append([shown, tier, v.get("cursor"), v.get("acked")])
    return rows


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``2``, ``2s``, ``500ms`` or ``1m``.

    Raises:
        Fail: anything else (status 2).
    """
    match = _DURATION.match(text)
    if not match:
        raise Fail(f"bad duration {text!r}: use e.g. 2s, 500ms or 1m", EXIT_USAGE)
    value = float(match.group(1))
    seconds = value * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    if seconds <= 0:
        raise Fail("the timeout must be positive", EXIT_USAGE)
    return seconds


@click.command(cls=OneLineCommand)
@click.option("--now", is_flag=True, help="Sync now and wait (required).")
@click.option("--peer", "peers", multiple=True, help="Peer node id (repeatable; default all).")
@click.option("--timeout", default="2s", show_default=True, help="Give up after (2s, 500ms, 1m).")
@node_options
def sync(client: Client, out: Output, now: bool, peers: tuple[str, ...], timeout: str) -> None:
    """Sync barrier. By default mesh-wide: when it exits 0, every write acknowledged on any
    node reachable through sessions before it began is readable here, and this node's
    earlier writes are on every reachable node. It exits 1 naming the nodes it could not
    cover (configured peers not connected here or further along, peers that did not answer
    in time). With --peer, two-node syncs with those direct peers only.

    --peer takes a node id or a unique prefix of one (at least 4 characters).

    \b
    Examples:
      meshsyncd sync --now
      meshsyncd sync --now --peer 4x3k --peer 7mfa --timeout 5s
    """
    if not now:
        raise Fail("sync needs --now (the only mode: sync now and wait)", EXIT_USAGE)
    seconds = parse_duration(timeout)
    wanted = resolve_peer_ids(client, peers)
    show = not out.json and sys.stderr.isatty()
    with _progress(client.path, enabled=show):
        result = client.sync(wanted or None, seconds)
    failed = result.get("failed", [])
    nodes: dict[str, str] | None = result.get("nodes")
    if out.json:
        emit_json(result)
    elif nodes is not None:  # the mesh-wide barrier: every node it knows of
        rows = sync_rows(result, out)
        if rows:
            print_table(SYNC_NODE_COLUMNS, rows, wide=out.wide)
        covered = sum(1 for s in nodes.values() if s == "covered")
        click.echo(f"{covered}/{len(nodes)} nodes synced in {result.get('seconds', 0):.2f} s")
    else:
        rows = sync_rows(result, out)
        if rows:
            print_table(SYNC_COLUMNS, rows, wide=out.wide)
        else:
            click.echo("no connected peers")
    if failed:
        named = [f"{n} ({nodes[n]})" if nodes and n in nodes else n for n in failed]
        raise Fail(f"sync did not complete with: {', '.join(named)}", EXIT_FAILED)


SYNC_COLUMNS = [Column("peer"), Column("result")]
SYNC_NODE_COLUMNS = [Column("node"), Column("result")]


def sync_rows(result: dict[str, Any], out: Output) -> list[list[Any]]:
    """Rows of the ``sync`` table: each node or peer (short id unless wide), how it went."""

    def name(p: Any) -> str:
        return str(p) if out.wide else short_text(str(p))

    nodes = result.get("nodes")
    if isinstance(nodes, dict):
        return [[name(n), "synced" if s == "covered" else str(s).upper()] for n, s in nodes.items()]
    rows = [[name(p), "synced"] for p in result.get("synced", [])]
    return rows + [[name(p), "FAILED"] for p in result.get("failed", [])]


def resolve_peer_ids(client: Client, typed: tuple[str, ...]) -> list[str]:
    """Full node ids for ``--peer`` values, each a node id or a unique prefix of a peer's.

    Raises:
        Fail: a prefix matches no configured peer or several (status 2).
    """
    if not typed:
        return []
    known = [str(r.get("id") or r.get("node_id") or "") for r in client.peers()]
    try:
        return [resolve_prefix(t, known, what="peer") for t in typed]
    except IdPrefixError as exc:
        raise Fail(f"--peer: {exc}", EXIT_USAGE) from None


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


def _ago(value: Any, now: float | None = None) -> str:
    """How long ago a wall-clock time was, in at most 10 columns."""
    if not isinstance(value, int | float) or value <= 0:
        return "-"
    seconds = max(0.0, (time.time() if now is None else now) - value)
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def _cursor_lag(row: dict[str, Any]) -> str:
    cursors = row.get("cursors") or {}
    lags = row.get("lag") or {}
    if not isinstance(cursors, dict) or not cursors:
        return "-"
    lags = lags if isinstance(lags, dict) else {}
    return " ".join(f"{t}:{c}/{lags.get(t, '-')}" for t, c in cursors.items())


def _state(row: dict[str, Any]) -> str:
    """The state column; an introduced peer says by whom (``introduced_by``)."""
    by = row.get("introduced_by") or []
    state = str(row.get("state"))
    return f"{state}, introduced by {', '.join(str(b)[:16] for b in by)}" if by else state


PEER_COLUMNS = [
    Column("peer"),
    Column("address", shrink=1, floor=15),
    Column("state"),
    Column("last seen"),
    Column("rtt", wide_only=True, right=True),
    Column("clock offset", wide_only=True, right=True),
    Column("cursor/lag by tier", wide_only=True),
    Column("bytes in/out", wide_only=True),
    Column("items in/out", wide_only=True),
    Column("dropped", wide_only=True, right=True),
    Column("rejected", wide_only=True, right=True),
    Column("reason", shrink=2, floor=20),
]


def peer_rows(rows: list[dict[str, Any]], out: Output, now: float | None = None) -> list[list[Any]]:
    """Rows of the ``peers`` table: a peer by its node id (short unless wide)."""
    body = []
    for r in rows:
        name = str(r.get("id") or r.get("node_id") or "")
        body.append(
            [
                name if out.wide else short_text(name),
                r.get("address"),
                _state(r),
                _ago(r.get("last_seen"), now),
                _fmt_ms(r.get("rtt_ms")),
                _fmt_ms(r.get("clock_offset_ms")),
                _cursor_lag(r),
                f"{r.get('bytes_in', 0)}/{r.get('bytes_out', 0)}",
                f"{r.get('items_in', 0)}/{r.get('items_out', 0)}",
                r.get("pushes_dropped", 0),
                r.get("rejected", 0),
                "" if r.get("state") == "connected" else r.get("reason") or r.get("last_error"),
            ]
        )
    return body


def show_peers(client: Client, out: Output) -> None:
    """The peers table from the running daemon: one row per configured peer.

    Every peer not connected has a reason in plain words; last seen and the cursors are
    those of its last session.
    """
    rows = client.peers()
    if out.json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no peers configured")
        return
    print_table(PEER_COLUMNS, peer_rows(rows, out), wide=out.wide)


def _show_peers(config_path: Path | None, socket_path: Path | None, form: str) -> None:
    """The bare ``meshsyncd peers`` (hook of ``commands/node.py``); one-line errors."""
    try:
        path = resolve_socket(socket_path, config_path)
        with Client(path) as client:
            show_peers(client, Output(form))
    except Fail as exc:
        die(str(exc), exc.status)
    except DaemonNotRunning as exc:
        die(exc.message + service_hint(path), client_status(exc))
    except ClientError as exc:
        die(exc.message, client_status(exc))


if node.show_peers_hook is node._default_show_peers:  # leave a hook someone else set
    node.show_peers_hook = _show_peers
peers = node.peers  # what the CLI runs as ``meshsyncd peers``: the group, hook installed
