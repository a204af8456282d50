"""Checked values of ``meshsyncd.toml``: durations, addresses, tiers, and a peer entry.

These are the leaves of :mod:`meshsyncd.config` (which re-exports them): each parser takes
the key it is parsing so that its :class:`ConfigError` names where the bad value sits, both
for a value read from the file and for the same value typed on the command line.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import LocalProtocolError, Tier, name_block

from ..identity import node_id_text

__all__ = [
    "ALL_TIERS",
    "TIER_NAMES",
    "ConfigError",
    "HandshakeLimits",
    "PeerConfig",
    "is_loopback",
    "parse_address",
    "parse_duration",
    "parse_handshakes",
    "parse_share",
    "parse_tiers",
    "reject_unknown",
    "show_value",
]

ALL_TIERS: frozenset[Tier] = frozenset(Tier)
TIER_NAMES: dict[str, Tier] = {tier.name.lower(): tier for tier in Tier}
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


class ConfigError(Exception):
    """The config file is missing, not TOML, or has a bad value; ``key`` names the culprit.

    ``key`` is a dotted path such as ``"peers[1].address"`` (None for whole-file problems);
    ``path`` is the file (None when the value did not come from a file).
    """

    def __init__(self, detail: str, *, key: str | None = None, path: Path | None = None) -> None:
        self.detail = detail
        self.key = key
        self.path = path
        parts = [str(p) for p in (path, key) if p is not None]
        super().__init__(": ".join([*parts, detail]))


@dataclass(frozen=True)
class PeerConfig:
    """One configured peer: who it is, where to dial it, and what it may receive and write."""

    node_id: bytes
    host: str
    port: int
    tiers: frozenset[Tier] = ALL_TIERS
    write_tiers: frozenset[Tier] = ALL_TIERS
    share: tuple[str, ...] = ()  # "tier:namespace/" entries (meshsyncd/mesh/share.py)
    write_share: tuple[str, ...] = ()
    # Believe its introductions (DESIGN.md "Membership"): the peers it vouches for are
    # trusted too, with grants no wider than this one.
    introducer: bool = False

    @property
    def address(self) -> str:
        """``host:port`` as written in the config (IPv6 hosts in brackets)."""
        return _join_address(self.host, self.port)

    @property
    def text(self) -> str:
        """The peer's node id in base32 text form."""
        return node_id_text(self.node_id)


@dataclass(frozen=True)
class HandshakeLimits:
    """``[handshakes]``: how many unauthenticated connections may be mid-handshake at once.

    Why: a TLS handshake costs the server memory and CPU before it knows who is calling, so
    anyone who can reach the listen port could otherwise hold any number of them. The
    limiter is :mod:`meshsyncd.node.admission`; docs/operations.md explains the numbers.
    """

    max: int = 64
    max_per_source: int = 8
    reserved: int = 16
    timeout: float = 10.0
    first_contact_timeout: float = 3.0


HANDSHAKE_KEYS: dict[str, Any] = {
    "max": 64,
    "max_per_source": 8,
    "reserved": 16,
    "timeout": "10s",
    "first_contact_timeout": "3s",
}
_MAX_HANDSHAKES = 100_000


def parse_handshakes(table: dict[str, Any]) -> HandshakeLimits:
    """Check the ``[handshakes]`` table (keys already known, defaults filled in).

    Raises:
        ConfigError: a count that is not a whole number in range, ``reserved`` not below
            ``max``, or a timeout that is not a duration above zero.
    """
    counts: dict[str, int] = {}
    for key, low in (("max", 1), ("max_per_source", 1), ("reserved", 0)):
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"expected a whole number, got {show_value(value)}", key=f"handshakes.{key}"
            )
        if not low <= value <= _MAX_HANDSHAKES:
            raise ConfigError(
                f"must be between {low} and {_MAX_HANDSHAKES}, got {value}", key=f"handshakes.{key}"
            )
        counts[key] = value
    if counts["reserved"] >= counts["max"]:
        raise ConfigError(
            f"must be below handshakes.max ({counts['max']}), got {counts['reserved']}: "
            "first contacts need at least one slot",
            key="handshakes.reserved",
        )
    timeouts: dict[str, float] = {}
    for key in ("timeout", "first_contact_timeout"):
        seconds = parse_duration(table[key], f"handshakes.{key}")
        if seconds <= 0:
            raise ConfigError(f'must be above zero, got "{table[key]}"', key=f"handshakes.{key}")
        timeouts[key] = seconds
    return HandshakeLimits(
        max=counts["max"],
        max_per_source=counts["max_per_source"],
        reserved=counts["reserved"],
        timeout=timeouts["timeout"],
        first_contact_timeout=timeouts["first_contact_timeout"],
    )


def parse_duration(text: str, key: str) -> float:
    """Seconds in a duration string such as ``"500ms"``, ``"30s"``, ``"24h"`` or ``"1h30m"``.

    ``"unlimited"`` is not a duration; the keys that allow it check for it before calling.

    Raises:
        ConfigError: ``text`` is not a duration (``key`` names where it came from).
    """
    if not isinstance(text, str):
        raise ConfigError(f'expected a duration string like "30s", got {show_value(text)}', key=key)
    compact = text.strip().lower()
    if compact == "unlimited":
        raise ConfigError('"unlimited" is only allowed for [retention] tiers', key=key)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ConfigError(
            f'"{text}" is not a duration (use a number and ms, s, m, h or d, e.g. "30s")',
            key=key,
        )
    return total


def parse_address(text: str, key: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and check both halves.

    Raises:
        ConfigError: not host:port, an unusable host, or a port outside 1..65535 (0 allowed
            only with ``allow_port_zero``: "any free port", for listening).
    """
    if not isinstance(text, str):
        raise ConfigError(f'expected a "host:port" string, got {show_value(text)}', key=key)
    bracketed = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
    plain = re.fullmatch(r"([^:\[\]]+):(\d+)", text)
    match = bracketed or plain
    if match is None:
        raise ConfigError(f'"{text}" is not host:port', key=key)
    host, port = match.group(1), int(match.group(2))
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f'"{text}": {host} is not an IPv6 address', key=key) from None
    elif not _HOST.fullmatch(host):
        raise ConfigError(f'"{text}": "{host}" is not a host name or address', key=key)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ConfigError(f'"{text}": port {port} is out of range', key=key)
    return host, port


def parse_tiers(value: str | Iterable[str], key: str) -> frozenset[Tier]:
    """Tier names (a list, or one comma-separated string) as a set of :class:`Tier`.

    Raises:
        ConfigError: not a list of strings, or a name that is not a tier.
    """
    names = value.split(",") if isinstance(value, str) else value
    if isinstance(value, str) and not value.strip():
        names = []
    if not isinstance(names, list | tuple):
        raise ConfigError(
            f'expected a list like ["working", "semantic"], got {show_value(value)}', key=key
        )
    tiers: set[Tier] = set()
    for name in names:
        tier = TIER_NAMES.get(name.strip().lower()) if isinstance(name, str) else None
        if tier is None:
            raise ConfigError(
                f"unknown tier {show_value(name)} (choose from {', '.join(TIER_NAMES)})", key=key
            )
        tiers.add(tier)
    return frozenset(tiers)


def parse_share(entries: Iterable[object], key: str) -> tuple[tuple[Tier, str], ...]:
    """``share``/``write_share`` entries ``"tier:namespace/"`` as (tier, prefix) pairs.

    The prefix is in the index form ``agents/alden/`` (``""``: every named item of the
    tier); ``agents/alden`` and ``agents/alden/`` are the same prefix. How the pairs are
    enforced is ``meshsyncd/mesh/share.py``.

    Raises:
        ConfigError: an entry that is not ``"tier:namespace/"``, names no tier, or holds a
            namespace no named item can have (an empty label, too long, too deep); the
            key names the entry (``peers[0].share[1]``).
    """
    out: list[tuple[Tier, str]] = []
    for index, entry in enumerate(entries):
        where = f"{key}[{index}]"
        if not isinstance(entry, str) or ":" not in entry:
            raise ConfigError(f'expected "tier:namespace/", got {show_value(entry)}', key=where)
        tier_text, _, ns = entry.partition(":")
        (tier,) = parse_tiers([tier_text], where)
        labels = ns.split("/") if ns else []
        if labels and labels[-1] == "":
            labels.pop()
        try:
            name_block(tuple(labels), "k")
        except LocalProtocolError as exc:
            raise ConfigError(f"bad namespace {show_value(ns)}: {exc.reason}", key=where) from None
        out.append((tier, "".join(label + "/" for label in labels)))
    return tuple(out)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def show_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return f"{type(value).__name__} {value!r}"


def _join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reject_unknown(table: dict[str, Any], known: list[str], prefix: str) -> None:
    """A typo fails at start naming the key and its closest known spelling."""
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key ({hint})", key=f"{prefix}{key}")
