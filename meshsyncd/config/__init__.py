"""The node's configuration: one frozen :class:`Config` loaded from ``meshsyncd.toml``.

``loader`` reads and validates the file, ``values`` parses single values (durations,
addresses, tier lists), ``text`` edits the TOML text in place so that ``peers add`` keeps the
operator's comments. The names below are the package's public face; import them from here.
"""

from __future__ import annotations

from .loader import (
    ALL_TIERS,
    CONFIG_FILE,
    DEFAULT_LISTEN,
    PID_FILE,
    Config,
    ConfigError,
    PeerConfig,
    add_peer,
    load_config,
    parse_address,
    parse_duration,
    parse_tiers,
    remove_peer,
    write_new_config,
)

__all__ = [
    "ALL_TIERS",
    "CONFIG_FILE",
    "DEFAULT_LISTEN",
    "PID_FILE",
    "Config",
    "ConfigError",
    "PeerConfig",
    "add_peer",
    "load_config",
    "parse_address",
    "parse_duration",
    "parse_tiers",
    "remove_peer",
    "write_new_config",
]
