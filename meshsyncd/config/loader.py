"""The node's configuration: one TOML file, read once into a frozen :class:`Config`.

Why one strict file: an operator (or systemd) edits it by hand, so a typo must fail at start
with a message naming the key, never be ignored. Unknown keys are errors; every value is
checked here, so the daemon only ever sees a valid ``Config``.

Where the file is: ``--config PATH``, else ``$MESHSYNCD_CONFIG``, else
``$CONFIGURATION_DIRECTORY/meshsyncd.toml`` (systemd ``ConfigurationDirectory=``), else
``./meshsyncd.toml``. Durations are strings such as ``"500ms"``, ``"30s"``, ``"5m"``,
``"24h"``, ``"7d"`` or combinations (``"1h30m"``). Keys (the full reference with examples is
``docs/config.md``):

``node_dir`` (default: the config file's directory)
    Holds ``node.key``, ``node.crt``, ``peers/`` and ``meshsyncd.pid``. Relative: to the
    config file's directory.
``listen = "127.0.0.1:7700"``
    Address (``host:port``, IPv6 as ``[::1]:7700``) the daemon accepts peers on.
``store = "store.db"``
    SQLite store. Relative: to ``$STATE_DIRECTORY`` when set (systemd ``StateDirectory=``),
    else to ``node_dir``.
``control_socket = "control.sock"``
    Unix socket for local programs and the CLI. Relative: to ``$RUNTIME_DIRECTORY`` when set
    (systemd ``RuntimeDirectory=``), else to ``node_dir``. At most 107 bytes (a Unix limit).
``sync_interval = "30s"``
    How often each peer is pulled (LOW and BACKGROUND writes travel this way). Above zero.
``verify_interval = "1h"``
    How often the store's digests are checked against its rows (also once at start); a
    mismatch is fixed, logged and counted, and repair then fetches what is missing. Above
    zero.
``max_clock_skew = "500ms"``
    Items stamped further ahead of our wall clock are refused and counted. Above zero.
``durability = "full"``
    ``"full"``: an acknowledged local write survives power loss (fsync per commit).
    ``"normal"``: it survives ``kill -9`` of the daemon but not an OS crash; faster.
``log_format = "auto"``
    ``"json"`` (JSON lines, for journald), ``"console"`` (human), or ``"auto"`` (console on
    a terminal, else JSON).
``log_level = "info"``
    ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
``max_peers = 8``
    Most live sessions with *introduced* peers (1..4096); configured peers always have
    theirs and count first. With more members known, the node keeps a few near and a few
    random far links (``meshsyncd/mesh/membership.py``) and relay does the rest.
``[retention]`` ``working = "24h"``, ``episodic = "unlimited"``, ``semantic = "unlimited"``
    How long items of each tier are kept; ``"unlimited"`` keeps them forever.
``[tombstones]`` ``grace = "7d"``
    A deleted item's tombstone is purged only after every peer has it and this much time
    passed, so deleted items never come back.
``[conflicts]`` ``max_bytes = 16777216``
    Bound of the conflict log in bytes (both values of each entry plus ~100 bytes); the
    oldest entries are dropped beyond it and the drops counted (``conflicts`` shows them).
    At least 4096.
``[history]`` ``working = 8``, ``episodic = 8``, ``semantic = 8``, ``max_bytes = 67108864``
    Versions of each item kept in its history (``meshsyncd history``), per tier; 0 turns
    it off for that tier (at most 1000). ``max_bytes`` bounds the whole history (at least
    4096); the oldest entries go first.
``[snapshots]`` ``max_bytes = 268435456``
    Largest snapshot (``meshsyncd snapshot create``) in bytes, checked before it is made
    (at least 4096).
``[metrics]`` ``listen = ""``
    Opt-in metrics endpoint on a loopback ``host:port``; empty turns it off.
``[handshakes]`` ``max = 64``, ``max_per_source = 8``, ``reserved = 16``,
``timeout = "10s"``, ``first_contact_timeout = "3s"``
    Unauthenticated connections mid-handshake: at most ``max`` at once, ``max_per_source``
    from one address (IPv6: one /64), ``reserved`` of ``max`` kept for addresses peers are
    known at; handshakes from other addresses get ``first_contact_timeout``.
``[[peers]]`` (one table per peer)
    ``id``: the peer's node id (52 base32 characters, see ``meshsyncd id``);
    ``address``: ``host:port`` to dial; ``tiers``: tiers the peer receives from us;
    ``write_tiers``: tiers it may write to us. Both default to
    ``["working", "episodic", "semantic"]``. ``share`` and ``write_share``: lists of
    ``"tier:namespace/"`` that narrow a tier to the named items under those namespaces, in
    each direction (``meshsyncd/mesh/share.py``); empty (the default) narrows nothing.
    Each id appears once. ``introducer = false``: when true, the peers this one vouches for
    are trusted too (never more than it gets), kept in ``introduced.json`` in ``node_dir``
    and dropped when no introducer vouches.

Errors name the file and the key, peers counted from 0:
``meshsyncd.toml: peers[1].address: "nohost" is not host:port``. The writers
(:func:`write_new_config`, :func:`add_peer`, :func:`remove_peer`) edit the text in place, so
the operator's comments survive; each write is validated first, then made atomic
(``edit.py``). The ``[[peers]]`` tables are checked in ``peers.py``.
"""

from __future__ import annotations

import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import Tier

from .peers import PEER_KEYS as _PEER_KEYS  # noqa: F401 - the docs test reads every key here
from .peers import max_peers_value, parse_peers
from .values import (
    ALL_TIERS,
    HANDSHAKE_KEYS,
    ConfigError,
    HandshakeLimits,
    PeerConfig,
    is_loopback,
    parse_address,
    parse_duration,
    parse_handshakes,
    parse_tiers,
    reject_unknown,
    show_value,
)

__all__ = [
    "ALL_TIERS",
    "CONFIG_FILE",
    "DEFAULT_LISTEN",
    "PID_FILE",
    "Config",
    "ConfigError",
    "HandshakeLimits",
    "PeerConfig",
    "load_config",
    "parse_address",
    "parse_duration",
    "parse_tiers",
]

CONFIG_FILE = "meshsyncd.toml"
PID_FILE = "meshsyncd.pid"
DEFAULT_LISTEN = "127.0.0.1:7700"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL

_TOP_KEYS = {
    "node_dir": "",
    "listen": DEFAULT_LISTEN,
    "store": "store.db",
    "control_socket": "control.sock",
    "sync_interval": "30s",
    "verify_interval": "1h",
    "max_clock_skew": "500ms",
    "durability": "full",
    "log_format": "auto",
    "log_level": "info",
    "max_peers": 8,
}
_TABLES: dict[str, dict[str, Any]] = {
    "retention": {"working": "24h", "episodic": "unlimited", "semantic": "unlimited"},
    "tombstones": {"grace": "7d"},
    "metrics": {"listen": ""},
    "handshakes": HANDSHAKE_KEYS,
    "conflicts": {"max_bytes": 16 << 20},
    "history": {"working": 8, "episodic": 8, "semantic": 8, "max_bytes": 64 << 20},
    "snapshots": {"max_bytes": 256 << 20},
}


@dataclass(frozen=True)
class Config:
    """A checked configuration; every path is absolute, every duration in seconds or ns."""

    path: Path
    node_dir: Path
    listen_host: str
    listen_port: int
    store_path: Path
    control_socket: Path
    sync_interval: float
    verify_interval: float
    max_clock_skew_ns: int
    durability: str
    log_format: str
    log_level: str
    retention_ns: Mapping[Tier, int | None]
    tombstone_grace_ns: int
    metrics_listen: str
    peers: tuple[PeerConfig, ...]
    handshakes: HandshakeLimits = field(default_factory=HandshakeLimits)
    max_peers: int = 8
    conflict_bytes: int = 16 << 20
    history_versions: Mapping[Tier, int] = field(
        default_factory=lambda: types.MappingProxyType(
            {Tier.WORKING: 8, Tier.EPISODIC: 8, Tier.SEMANTIC: 8}
        )
    )
    history_bytes: int = 64 << 20
    snapshot_bytes: int = 256 << 20

    @property
    def pid_file(self) -> Path:
        """Where the running daemon writes its pid (``peers add/remove`` send it SIGHUP)."""
        return self.node_dir / PID_FILE

    def peer(self, node_id: bytes) -> PeerConfig | None:
        """The configured peer with this node id, or None if it is not listed (not trusted)."""
        for peer in self.peers:
            if peer.node_id == node_id:
                return peer
        return None


def load_config(path: Path | None = None) -> Config:
    """Find, read and check the config file (see the module docstring for the search order).

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or any key is unknown or bad.
    """
    path = _locate(path)
    return _parse(_read_text(path), path)


def _locate(path: Path | None) -> Path:
    if path is not None:
        return Path(path)
    if os.environ.get("MESHSYNCD_CONFIG"):
        return Path(os.environ["MESHSYNCD_CONFIG"])
    conf_dir = _env_dir("CONFIGURATION_DIRECTORY")
    if conf_dir is not None:
        return conf_dir / CONFIG_FILE
    return Path(CONFIG_FILE)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "no such file (run meshsyncd init, or point --config / MESHSYNCD_CONFIG at it)",
            path=path,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=path) from None


def _env_dir(name: str) -> Path | None:
    """First entry of a systemd ``*_DIRECTORY`` variable (it may list several, ``:``-joined)."""
    value = os.environ.get(name, "").split(":")[0]
    return Path(value) if value else None


def _parse(text: str, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    try:
        return _build(data, path)
    except ConfigError as exc:
        raise ConfigError(exc.detail, key=exc.key, path=path) from None


def _build(data: dict[str, Any], path: Path) -> Config:
    reject_unknown(data, [*_TOP_KEYS, *_TABLES, "peers"], "")
    top = {key: data.get(key, default) for key, default in _TOP_KEYS.items()}
    tables: dict[str, dict[str, Any]] = {}
    for name, defaults in _TABLES.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"expected a table [{name}], got {show_value(table)}", key=name)
        reject_unknown(table, list(defaults), f"{name}.")
        tables[name] = {key: table.get(key, default) for key, default in defaults.items()}

    base = path.absolute().parent
    node_dir = base / _path_value(top["node_dir"], "node_dir") if top["node_dir"] else base
    store = _path_value(top["store"], "store")
    store_path = (_env_dir("STATE_DIRECTORY") or node_dir) / store
    socket = _path_value(top["control_socket"], "control_socket")
    control_socket = (_env_dir("RUNTIME_DIRECTORY") or node_dir) / socket
    if len(os.fsencode(control_socket)) > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"{control_socket} is longer than {_MAX_SOCKET_PATH} bytes, too long for a Unix "
            "socket; use a shorter path",
            key="control_socket",
        )
    listen_host, listen_port = parse_address(top["listen"], "listen", allow_port_zero=True)
    sync_interval = parse_duration(top["sync_interval"], "sync_interval")
    skew = parse_duration(top["max_clock_skew"], "max_clock_skew")
    verify = parse_duration(top["verify_interval"], "verify_interval")
    for key, value in (
        ("sync_interval", sync_interval),
        ("verify_interval", verify),
        ("max_clock_skew", skew),
    ):
        if value <= 0:
            raise ConfigError(f'must be above zero, got "{top[key]}"', key=key)

    retention: dict[Tier, int | None] = {}
    for tier in Tier:
        key = f"retention.{tier.name.lower()}"
        value = tables["retention"][tier.name.lower()]
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            retention[tier] = None
            continue
        seconds = parse_duration(value, key)
        if seconds <= 0:
            raise ConfigError(f'must be above zero or "unlimited", got "{value}"', key=key)
        retention[tier] = _ns(seconds)

    conflict_bytes = tables["conflicts"]["max_bytes"]
    if (
        not isinstance(conflict_bytes, int)
        or isinstance(conflict_bytes, bool)
        or conflict_bytes < 4096
    ):
        raise ConfigError(
            f"expected a number of bytes of at least 4096, got {show_value(conflict_bytes)}",
            key="conflicts.max_bytes",
        )

    snapshot_bytes = tables["snapshots"]["max_bytes"]
    if (
        not isinstance(snapshot_bytes, int)
        or isinstance(snapshot_bytes, bool)
        or snapshot_bytes < 4096
    ):
        raise ConfigError(
            f"expected a number of bytes of at least 4096, got {show_value(snapshot_bytes)}",
            key="snapshots.max_bytes",
        )
    history: dict[Tier, int] = {}
    for name, lo, hi in [(t.name.lower(), 0, 1000) for t in Tier] + [("max_bytes", 4096, 1 << 40)]:
        value = tables["history"][name]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(
                f"expected an integer from {lo} to {hi}, got {show_value(value)}",
                key=f"history.{name}",
            )
        if name != "max_bytes":
            history[Tier[name.upper()]] = value

    metrics = tables["metrics"]["listen"]
    if not isinstance(metrics, str):
        raise ConfigError(
            f'expected "host:port" or "", got {show_value(metrics)}', key="metrics.listen"
        )
    if metrics:
        host, _ = parse_address(metrics, "metrics.listen")
        if not is_loopback(host):
            raise ConfigError(
                f'"{metrics}": metrics are unauthenticated, listen on loopback only '
                "(127.0.0.1, ::1 or localhost)",
                key="metrics.listen",
            )

    return Config(
        path=path.absolute(),
        node_dir=node_dir,
        listen_host=listen_host,
        listen_port=listen_port,
        store_path=store_path,
        control_socket=control_socket,
        sync_interval=sync_interval,
        verify_interval=verify,
        max_clock_skew_ns=_ns(skew),
        durability=_choice(top["durability"], "durability", ("full", "normal")),
        log_format=_choice(top["log_format"], "log_format", ("auto", "json", "console")),
        log_level=_choice(top["log_level"], "log_level", LOG_LEVELS),
        retention_ns=types.MappingProxyType(retention),
        tombstone_grace_ns=_ns(parse_duration(tables["tombstones"]["grace"], "tombstones.grace")),
        metrics_listen=metrics,
        peers=parse_peers(data.get("peers", [])),
        handshakes=parse_handshakes(tables["handshakes"]),
        max_peers=max_peers_value(top["max_peers"]),
        conflict_bytes=conflict_bytes,
        history_versions=types.MappingProxyType(history),
        history_bytes=tables["history"]["max_bytes"],
        snapshot_bytes=snapshot_bytes,
    )


def _path_value(value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty path string, got {show_value(value)}", key=key)
    return Path(value).expanduser()


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise ConfigError(f"{show_value(value)} is not one of {', '.join(allowed)}", key=key)


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)
