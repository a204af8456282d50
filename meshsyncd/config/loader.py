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
``meshsyncd.toml: peers[1].address: "nohost" is not host:port``. The writers below
(:func:`write_new_config`, :func:`add_peer`, :func:`remove_peer`) edit the text in place, so
the operator's comments survive; each write is validated first, then made atomic.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import Tier

from ..identity import node_id_text, parse_node_id
from . import text as config_text
from .values import (
    ALL_TIERS,
    HANDSHAKE_KEYS,
    TIER_NAMES,
    ConfigError,
    HandshakeLimits,
    PeerConfig,
    is_loopback,
    parse_address,
    parse_duration,
    parse_handshakes,
    parse_share,
    parse_tiers,
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
    "add_peer",
    "load_config",
    "parse_address",
    "parse_duration",
    "parse_tiers",
    "remove_peer",
    "write_new_config",
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
_PEER_KEYS = ("id", "address", "tiers", "write_tiers", "share", "write_share", "introducer")
MAX_PEERS_LIMIT = 4096


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


def write_new_config(path: Path, *, listen: str, control_socket: str = "control.sock") -> None:
    """Write a fresh, fully commented config listening on ``listen``; never overwrites.

    ``control_socket`` as an absolute path (``/run/meshsyncd/control.sock``) lets every CLI
    command that reads the config find the socket of a systemd service without flags.

    Raises:
        ConfigError: ``listen`` or ``control_socket`` is bad, the file exists, or it cannot
            be written.
    """
    path = Path(path)
    parse_address(listen, "listen", allow_port_zero=True)
    text = config_text.new_config(listen, control_socket)
    _parse(text, path)
    _write(path, text, exclusive=True)


def add_peer(path: Path, peer: PeerConfig) -> None:
    """Append a ``[[peers]]`` table for ``peer`` to the config at ``path``.

    Raises:
        ConfigError: the current file is invalid, the id is already listed, or the write fails.
    """
    config = load_config(Path(path))
    for index, known in enumerate(config.peers):
        if known.node_id == peer.node_id:
            raise ConfigError(
                f"peer {peer.text} is already listed (address {known.address})",
                key=f"peers[{index}].id",
                path=Path(path),
            )
    table = config_text.peer_table(
        peer.text,
        peer.address,
        _tier_names(peer.tiers),
        _tier_names(peer.write_tiers),
        peer.introducer,
    )
    text = config_text.append_table(_read_text(config.path), table)
    _check_edit(text, config.path, peer.node_id, present=True)
    _write(config.path, text, exclusive=False)


def remove_peer(path: Path, node_id: bytes) -> None:
    """Delete the ``[[peers]]`` table with this id from the config at ``path``.

    Raises:
        ConfigError: the current file is invalid, the id is not listed, its table cannot be
            found in the text (an inline ``peers = [...]`` array), or the write fails.
    """
    config = load_config(Path(path))
    if config.peer(node_id) is None:
        raise ConfigError(
            f"no peer {node_id_text(node_id)} is listed", key="peers", path=Path(path)
        )

    def matches(entry: dict[str, Any]) -> bool:
        try:
            return parse_node_id(str(entry.get("id", ""))) == node_id
        except ValueError:
            return False

    text = config_text.remove_peer_table(_read_text(config.path), matches)
    if text is None:
        raise ConfigError(
            f"cannot find a [[peers]] table for {node_id_text(node_id)}; edit the file by hand",
            key="peers",
            path=Path(path),
        )
    _check_edit(text, config.path, node_id, present=False)
    _write(config.path, text, exclusive=False)


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


def _tier_names(tiers: frozenset[Tier]) -> list[str]:
    return [tier.name.lower() for tier in sorted(tiers)]


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
    _reject_unknown(data, [*_TOP_KEYS, *_TABLES, "peers"], "")
    top = {key: data.get(key, default) for key, default in _TOP_KEYS.items()}
    tables: dict[str, dict[str, Any]] = {}
    for name, defaults in _TABLES.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"expected a table [{name}], got {show_value(table)}", key=name)
        _reject_unknown(table, list(defaults), f"{name}.")
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
        peers=_peers(data.get("peers", [])),
        handshakes=parse_handshakes(tables["handshakes"]),
        max_peers=_max_peers(top["max_peers"]),
        conflict_bytes=conflict_bytes,
        history_versions=types.MappingProxyType(history),
        history_bytes=tables["history"]["max_bytes"],
        snapshot_bytes=snapshot_bytes,
    )


def _max_peers(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PEERS_LIMIT:
        return value
    raise ConfigError(
        f"expected a whole number in 1..{MAX_PEERS_LIMIT}, got {show_value(value)}",
        key="max_peers",
    )


def _peers(value: Any) -> tuple[PeerConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"expected [[peers]] tables, got {show_value(value)}", key="peers")
    peers: list[PeerConfig] = []
    seen: dict[bytes, int] = {}
    for index, entry in enumerate(value):
        where = f"peers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"expected a table, got {show_value(entry)}", key=where)
        _reject_unknown(entry, list(_PEER_KEYS), f"{where}.")
        for required in ("id", "address"):
            if required not in entry:
                raise ConfigError(
                    "missing (every peer needs id and address)", key=f"{where}.{required}"
                )
        if not isinstance(entry["id"], str):
            raise ConfigError(
                f"expected a node id string, got {show_value(entry['id'])}", key=f"{where}.id"
            )
        try:
            node_id = parse_node_id(entry["id"])
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"{where}.id") from None
        if node_id in seen:
            raise ConfigError(
                f"duplicate peer {node_id_text(node_id)} (also peers[{seen[node_id]}])",
                key=f"{where}.id",
            )
        seen[node_id] = index
        host, port = parse_address(entry["address"], f"{where}.address")
        tiers, write = (_tier_list(entry, where, key) for key in ("tiers", "write_tiers"))
        share, write_share = (_share_list(entry, where, key) for key in ("share", "write_share"))
        introducer = entry.get("introducer", False)
        if not isinstance(introducer, bool):
            raise ConfigError(
                f"expected true or false, got {show_value(introducer)}", key=f"{where}.introducer"
            )
        peers.append(PeerConfig(node_id, host, port, tiers, write, share, write_share, introducer))
    return tuple(peers)


def _tier_list(entry: dict[str, Any], where: str, key: str) -> frozenset[Tier]:
    value = entry.get(key, list(TIER_NAMES))
    if not isinstance(value, list):  # a comma string is for the command line only
        raise ConfigError(
            f'expected a list like ["working", "semantic"], got {show_value(value)}',
            key=f"{where}.{key}",
        )
    return parse_tiers(value, f"{where}.{key}")


def _share_list(entry: dict[str, Any], where: str, key: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(
            f'expected a list like ["semantic:prefs/"], got {show_value(value)}',
            key=f"{where}.{key}",
        )
    parse_share(value, f"{where}.{key}")  # refuses a bad entry, naming it
    return tuple(value)


def _reject_unknown(table: dict[str, Any], known: list[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key ({hint})", key=f"{prefix}{key}")


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


def _check_edit(text: str, path: Path, node_id: bytes, *, present: bool) -> None:
    try:
        config = _parse(text, path)
    except ConfigError as exc:
        raise ConfigError(
            f"the edit would make the file invalid ({exc.detail}); edit it by hand",
            key=exc.key,
            path=path,
        ) from None
    if (config.peer(node_id) is not None) != present:
        raise ConfigError("the edit did not take; edit the file by hand", key="peers", path=path)


def _write(path: Path, text: str, *, exclusive: bool) -> None:
    try:
        config_text.atomic_write(path, text, exclusive=exclusive)
    except FileExistsError:
        raise ConfigError("already exists; refusing to overwrite", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror or exc}", path=path) from None
