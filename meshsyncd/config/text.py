"""Text-level editing of ``meshsyncd.toml``: the writer half of :mod:`meshsyncd.config`.

Why text and not "load, change, dump": the file is the operator's, with their comments and
layout. A new node gets a fully commented template; ``peers add`` appends one ``[[peers]]``
table; ``peers remove`` cuts one out. Nothing here knows the schema beyond that: the caller
(:mod:`meshsyncd.config`) validates the edited text with the real loader before it is written,
so a failed edit never reaches the disk. Writes go through a temp file in the same directory,
then ``os.replace`` (or ``os.link`` when the file must not exist yet).
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..fsutil import fsync_dir

__all__ = ["append_table", "atomic_write", "new_config", "peer_table", "remove_peer_table"]

_PEERS_HEADER = re.compile(r"\s*\[\[\s*peers\s*\]\]\s*(#.*)?")

_TEMPLATE = """\
# meshsyncd node configuration. Every key is described in docs/config.md.
# Durations: "500ms", "30s", "5m", "24h", "7d". Relative paths: to this file's directory.

listen = {listen}                  # host:port peers dial
store = "store.db"                 # SQLite store ($STATE_DIRECTORY when set)
control_socket = {control_socket}    # local API socket ($RUNTIME_DIRECTORY when set)
sync_interval = "30s"              # periodic pull from every peer
max_clock_skew = "500ms"           # refuse items stamped further ahead of our clock
durability = "full"                # "full": survives power loss; "normal": survives kill -9
log_format = "auto"                # "auto", "json" or "console"
log_level = "info"                 # debug, info, warning, error, critical
max_peers = 8                      # live sessions with introduced peers (configured ones: always)

[retention]                        # how long each tier keeps items
working = "24h"
episodic = "unlimited"
semantic = "unlimited"

[tombstones]
grace = "7d"                       # keep deletions at least this long after all peers have them

[metrics]
listen = ""                        # e.g. "127.0.0.1:9770" to turn metrics on (loopback only)

[handshakes]                       # unauthenticated connections (docs/operations.md)
max = 64                           # TLS handshakes in progress at once; beyond: closed at once
max_per_source = 8                 # ... from one address (IPv6: one /64)
reserved = 16                      # ... of max kept for addresses peers are known at
timeout = "10s"                    # handshake deadline for those addresses
first_contact_timeout = "3s"       # handshake deadline for any other address

# Peers: meshsyncd peers add NODE_ID HOST:PORT [--tiers ...] [--write-tiers ...] [--introducer]
# tiers: what the peer receives from us; write_tiers: what it may write to us;
# introducer = true: also trust the peers it vouches for (kept in introduced.json).
"""


def toml_str(value: str) -> str:
    """``value`` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def new_config(listen: str, control_socket: str = "control.sock") -> str:
    """The commented template for a new node, listening on ``listen``."""
    return _TEMPLATE.format(listen=toml_str(listen), control_socket=toml_str(control_socket))


def peer_table(
    node_id: str,
    address: str,
    tiers: Iterable[str],
    write_tiers: Iterable[str],
    introducer: bool = False,
) -> str:
    """One ``[[peers]]`` table, with every key spelled out so the operator sees the defaults."""

    def names(values: Iterable[str]) -> str:
        return "[" + ", ".join(toml_str(v) for v in values) + "]"

    return (
        "[[peers]]\n"
        f"id = {toml_str(node_id)}\n"
        f"address = {toml_str(address)}\n"
        f"tiers = {names(tiers)}\n"
        f"write_tiers = {names(write_tiers)}\n" + ("introducer = true\n" if introducer else "")
    )


def append_table(text: str, table: str) -> str:
    """``text`` with ``table`` appended after one blank line (arrays of tables may go last)."""
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + table


def remove_peer_table(text: str, matches: Callable[[dict[str, Any]], bool]) -> str | None:
    """``text`` without the first ``[[peers]]`` table whose values satisfy ``matches``.

    A table runs from its header to its last key line; comments just before the next header
    stay, since they introduce that one. Returns None when no table matches (for example
    peers written as an inline ``peers = [...]`` array).
    """
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.lstrip().startswith("[")]
    for n, start in enumerate(headers):
        if not _PEERS_HEADER.fullmatch(lines[start].rstrip("\r\n")):
            continue
        end = headers[n + 1] if n + 1 < len(headers) else len(lines)
        while end > start + 1 and lines[end - 1].strip()[:1] in ("", "#"):
            end -= 1
        try:
            entry = tomllib.loads("".join(lines[start:end]))["peers"][0]
        except (tomllib.TOMLDecodeError, KeyError, IndexError):
            continue
        if isinstance(entry, dict) and matches(entry):
            if start > 0 and not lines[start - 1].strip():
                start -= 1  # the blank line that separated it from the table before
            return "".join(lines[:start] + lines[end:])
    return None


def atomic_write(path: Path, text: str, *, exclusive: bool) -> None:
    """Replace ``path`` with ``text`` all at once, keeping its mode (0644 for a new file).

    Raises:
        FileExistsError: ``exclusive`` and ``path`` already exists (it is left untouched).
        OSError: the directory is not writable or the disk is full.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(text.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # fails if ``path`` exists: never overwrites
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
