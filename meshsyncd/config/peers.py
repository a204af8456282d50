"""The ``[[peers]]`` tables of the config and ``max_peers``: who we trust, and how far.

Why apart from the loader: peers are the part of the file that ``peers add/remove`` edit
and that membership reads (``PeerConfig``); their rules (one table per id, tier lists,
``share`` entries, ``introducer``) are checked here, each error naming ``peers[i].key``.
"""

from __future__ import annotations

from typing import Any

from protocol import Tier

from ..identity import node_id_text, parse_node_id
from .values import (
    TIER_NAMES,
    ConfigError,
    PeerConfig,
    parse_address,
    parse_share,
    parse_tiers,
    reject_unknown,
    show_value,
)

__all__ = ["MAX_PEERS_LIMIT", "PEER_KEYS", "max_peers_value", "parse_peers"]

PEER_KEYS = ("id", "address", "tiers", "write_tiers", "share", "write_share", "introducer")
MAX_PEERS_LIMIT = 4096


def max_peers_value(value: Any) -> int:
    """``max_peers``: how many live sessions with introduced peers (configured ones count first)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PEERS_LIMIT:
        return value
    raise ConfigError(
        f"expected a whole number in 1..{MAX_PEERS_LIMIT}, got {show_value(value)}",
        key="max_peers",
    )


def parse_peers(value: Any) -> tuple[PeerConfig, ...]:
    """The ``[[peers]]`` tables: each id once, every key checked, errors name ``peers[i].key``."""
    if not isinstance(value, list):
        raise ConfigError(f"expected [[peers]] tables, got {show_value(value)}", key="peers")
    peers: list[PeerConfig] = []
    seen: dict[bytes, int] = {}
    for index, entry in enumerate(value):
        where = f"peers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"expected a table, got {show_value(entry)}", key=where)
        reject_unknown(entry, list(PEER_KEYS), f"{where}.")
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
