"""``meshsyncd bench flood``: rounds of half-open TLS handshakes against a real daemon.

Why: issue 18 found that rounds of 500 half-open handshakes grew a daemon from 50 to 135 MB
for good, and logged one line per connection. This bench repeats that probe against a real
``meshsyncd run`` process (``nodeproc``) and prints what the fixes are judged on: the
daemon's RSS (``VmRSS`` of /proc/PID/status) before, after each round and at the end, and
the log lines each round wrote.

A half-open handshake here is a TCP connection from ``--source`` (a loopback address other
than the daemon's, so it is a stranger to the node) that sends a TLS ClientHello and then
nothing: the daemon has answered, holds an OpenSSL connection, and waits for the client's
certificate until its deadline. The round holds all its connections until the daemon has
closed each of them (those beyond the ``[handshakes]`` limits at once, the rest at their
deadline), then closes its side and waits ``SETTLE`` seconds before reading RSS.

By default the node runs with the default limits, so most of a round is refused at once.
``--admit-all`` raises the limits above ``--connections``, so that every handshake is
admitted and held to its deadline: the memory figure that matters, since it is what a
flood from many addresses within the limits can cost.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import shutil
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from ..config.values import is_loopback
from .nodeproc import Node, NodeError

__all__ = ["run_flood_bench"]

SETTLE = 3.0  # after a round: the heap relief runs once no handshake is left (1 s quiet)
FINAL_SETTLE = 12.0  # at the end: the refusal log's 10 s window has closed
TARGET_MIB = 10.0  # RSS at the end within this of the start
FLAT_MIB = 2.0  # spread of the last five rounds' RSS
HOLD_MAX = 30.0  # a round never waits longer than this for the daemon to close


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise NodeError(f"no VmRSS for pid {pid}")


def _client_hello() -> bytes:
    """The bytes of one TLS 1.3 ClientHello, made with an in-memory SSL object."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="flood")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def _round(port: int, source: str, connections: int, hello: bytes) -> dict[str, Any]:
    """Open ``connections`` half-open handshakes; hold them until the daemon closed them.

    Returns how many the daemon closed within 0.5 s (refused at once) and how long the
    round took.

    Raises:
        NodeError: a connection could not be opened (file descriptor limit, no such address).
    """
    started = time.monotonic()
    socks: list[socket.socket] = []
    closed_at: dict[int, float] = {}
    try:
        for number in range(connections):
            try:
                s = socket.socket()
                socks.append(s)
                s.bind((source, 0))
                s.connect(("127.0.0.1", port))
            except OSError as exc:
                raise NodeError(
                    f"cannot open connection {number + 1} of {connections} from {source}: {exc}"
                ) from None
            with contextlib.suppress(OSError):  # already closed by the daemon: fine
                s.sendall(hello)
        opened = time.monotonic()
        poller = select.poll()
        by_fd = {s.fileno(): s for s in socks}
        for fd in by_fd:
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while len(closed_at) < len(socks) and time.monotonic() - opened < HOLD_MAX:
            for fd, _event in poller.poll(200):
                try:
                    data = by_fd[fd].recv(65536)
                except OSError:
                    data = b""
                if not data:
                    closed_at[fd] = time.monotonic() - opened
                    poller.unregister(fd)
    finally:
        for s in socks:
            s.close()
    return {
        "refused_at_once": sum(1 for t in closed_at.values() if t < 0.5),
        "held": sum(1 for t in closed_at.values() if t >= 0.5),
        "never_closed": len(socks) - len(closed_at),
        "seconds": round(time.monotonic() - started, 1),
    }


def _admit_all(node: Node, connections: int) -> None:
    """Raise the node's ``[handshakes]`` limits above ``connections`` (config text edit)."""
    text = node.config.read_text()
    text, n1 = re.subn(r"(?m)^max = \d+", f"max = {connections + 16}", text)
    text, n2 = re.subn(r"(?m)^max_per_source = \d+", f"max_per_source = {connections}", text)
    if n1 != 1 or n2 != 1:
        raise NodeError(f"no [handshakes] max lines to change in {node.config}")
    node.config.write_text(text)


def _log_lines(node: Node) -> int:
    try:
        return len(node.log.read_text(errors="replace").splitlines())
    except OSError:
        return 0


def _reliefs(node: Node) -> list[dict[str, Any]]:
    """The node's heap-relief log events (heap.py): RSS before and after, milliseconds."""
    return [
        {k: e.get(k) for k in ("rss_before_kib", "rss_after_kib", "ms")}
        for e in node.logs()
        if e.get("event") == "heap trimmed after a connection burst"
    ]


def run_flood_bench(
    rounds: int, connections: int, *, source: str = "127.0.0.2", admit_all: bool = False
) -> dict[str, Any]:
    """Run the flood rounds against a fresh node; the figures as a JSON-able dict.

    Raises:
        NodeError: the node could not be made or started, or died during the flood.
    """
    root = Path(tempfile.mkdtemp(prefix="msflood-", dir="/tmp"))
    node: Node | None = None
    hello = _client_hello()
    try:
        node = Node(root, "A")
        if admit_all:
            _admit_all(node, connections)
        node.start()
        node.wait_ready()
        assert node.proc is not None
        pid = node.proc.pid
        time.sleep(1)
        start_kib = _rss_kib(pid)
        per_round: list[dict[str, Any]] = []
        for number in range(1, rounds + 1):
            lines_before = _log_lines(node)
            result = _round(node.port, source, connections, hello)
            time.sleep(SETTLE)
            if node.proc.poll() is not None:
                raise NodeError(f"the node died in round {number}; see {node.log}")
            result |= {
                "round": number,
                "rss_mib": round(_rss_kib(pid) / 1024, 1),
                "log_lines": _log_lines(node) - lines_before,
            }
            per_round.append(result)
        lines_before = _log_lines(node)
        time.sleep(FINAL_SETTLE)
        end_kib = _rss_kib(pid)
        final_lines = _log_lines(node) - lines_before
        reliefs = _reliefs(node)
        node.stop()
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
    start, end = start_kib / 1024, end_kib / 1024
    last = [r["rss_mib"] for r in per_round[-5:]]
    spread = round(max(last) - min(last), 1) if last else 0.0
    return {
        "connections": connections,
        "rounds": rounds,
        "source": source,
        "limits": "raised above --connections" if admit_all else "defaults",
        "rss_start_mib": round(start, 1),
        "per_round": per_round,
        "rss_end_mib": round(end, 1),
        "log_lines_after_rounds": final_lines,
        "log_lines_total": sum(r["log_lines"] for r in per_round) + final_lines,
        "targets": {
            f"end RSS within {TARGET_MIB:g} MiB of start": round(end - start, 1) <= TARGET_MIB,
            f"last 5 rounds within {FLAT_MIB:g} MiB": spread <= FLAT_MIB,
        },
        "growth_mib": round(end - start, 1),
        "reliefs": reliefs,
        "last5_spread_mib": spread,
    }


@click.command("flood")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--connections", default=500, show_default=True, type=click.IntRange(1, 5000))
@click.option(
    "--source",
    default="127.0.0.2",
    show_default=True,
    help="Loopback address the flood comes from (any of 127.0.0.0/8).",
)
@click.option(
    "--admit-all",
    is_flag=True,
    help="Raise the node's [handshakes] limits so every connection is admitted and held.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def flood(rounds: int, connections: int, source: str, admit_all: bool, as_json: bool) -> None:
    """Rounds of half-open TLS handshakes against a real node: RSS and log lines per round.

    \b
    Example:
      meshsyncd bench flood
      meshsyncd bench flood --rounds 10 --connections 500 --admit-all --json
    """
    if not is_loopback(source) or source == "localhost":
        raise click.BadParameter("must be a loopback IP address", param_hint="--source")
    figures = run_flood_bench(rounds, connections, source=source, admit_all=admit_all)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(
        f"{connections} half-open handshakes per round from {source}, limits: {figures['limits']}"
    )
    click.echo(f"RSS before: {figures['rss_start_mib']} MiB")
    click.echo(f"{'round':>5}{'RSS MiB':>9}{'at once':>9}{'held':>6}{'log lines':>11}{'s':>6}")
    for r in figures["per_round"]:
        click.echo(
            f"{r['round']:>5}{r['rss_mib']:>9}{r['refused_at_once']:>9}{r['held']:>6}"
            f"{r['log_lines']:>11}{r['seconds']:>6}"
        )
    click.echo(
        f"RSS at end: {figures['rss_end_mib']} MiB ({figures['growth_mib']:+} MiB), "
        f"last {min(5, rounds)} rounds spread {figures['last5_spread_mib']} MiB; "
        f"{figures['log_lines_total']} log lines in all"
    )
    reliefs = figures["reliefs"]
    if reliefs:
        click.echo(
            f"heap reliefs: {len(reliefs)}, each "
            f"{min(r['ms'] for r in reliefs)}-{max(r['ms'] for r in reliefs)} ms of the event loop"
        )
    for name, ok in figures["targets"].items():
        click.echo(f"  {'ok  ' if ok else 'MISS'} {name}")
