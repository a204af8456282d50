"""``introduced.json``: the peers introducers vouched for, kept apart from the operator's file.

Why a separate file: ``meshsyncd.toml`` is the operator's, edited by hand and by ``peers
add``; what introducers told us changes on its own and must never rewrite it. The daemon
writes this file (atomically: a temp file, then ``os.replace``) whenever the set of
introduced peers or their vouchers changes, and reads it at start so that a restarted node
trusts and dials its introduced peers before any introducer is reachable again. A file that
is missing starts empty; one that cannot be parsed is set aside (renamed ``.bad``) and
logged by the caller, because the introducers will tell us everything again.

Layout: ``{"version": 1, "peers": {"<node id text>": {"address": "host:port",
"vouchers": {"<introducer id text>": {"tiers": [...], "write_tiers": [...]}}}}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import Tier

from ..identity import node_id_text, parse_node_id
from .text import atomic_write
from .values import ConfigError, parse_address, parse_tiers

__all__ = ["INTRODUCED_FILE", "Grant", "IntroducedPeer", "load_introduced", "save_introduced"]

INTRODUCED_FILE = "introduced.json"


@dataclass(frozen=True)
class Grant:
    """What one introducer's vouching lets us exchange with a peer (already capped)."""

    tiers: frozenset[Tier]
    write_tiers: frozenset[Tier]


@dataclass
class IntroducedPeer:
    """A peer we trust because at least one introducer vouches for it."""

    node_id: bytes
    host: str
    port: int
    vouchers: dict[bytes, Grant] = field(default_factory=dict)

    @property
    def grant(self) -> Grant:
        """The union of the vouchers' grants: each is within what its introducer gets."""
        tiers: set[Tier] = set()
        write: set[Tier] = set()
        for g in self.vouchers.values():
            tiers |= g.tiers
            write |= g.write_tiers
        return Grant(frozenset(tiers), frozenset(write))


def _names(tiers: frozenset[Tier]) -> list[str]:
    return [t.name.lower() for t in sorted(tiers)]


def save_introduced(node_dir: Path, peers: dict[bytes, IntroducedPeer]) -> None:
    """Write the introduced peers to ``node_dir/introduced.json`` atomically.

    Raises:
        OSError: the file cannot be written (the caller logs it; the state stays in memory).
    """
    data = {
        "version": 1,
        "peers": {
            node_id_text(p.node_id): {
                "address": f"[{p.host}]:{p.port}" if ":" in p.host else f"{p.host}:{p.port}",
                "vouchers": {
                    node_id_text(v): {
                        "tiers": _names(g.tiers),
                        "write_tiers": _names(g.write_tiers),
                    }
                    for v, g in sorted(p.vouchers.items())
                },
            }
            for p in sorted(peers.values(), key=lambda p: p.node_id)
        },
    }
    atomic_write(node_dir / INTRODUCED_FILE, json.dumps(data, indent=1) + "\n", exclusive=False)


def load_introduced(node_dir: Path) -> dict[bytes, IntroducedPeer]:
    """Read ``node_dir/introduced.json``; a missing file is an empty set.

    Raises:
        ConfigError: the file exists but is not what :func:`save_introduced` writes.
    """
    path = node_dir / INTRODUCED_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", path=path) from None
    try:
        return _parse(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"not an introduced-peers file: {exc}", path=path) from None


def _parse(data: Any) -> dict[bytes, IntroducedPeer]:
    if data.get("version") != 1:
        raise ValueError(f"unknown version {data.get('version')!r}")
    out: dict[bytes, IntroducedPeer] = {}
    for text, entry in data["peers"].items():
        node_id = parse_node_id(text)
        host, port = parse_address(entry["address"], f"peers.{text[:16]}.address")
        peer = IntroducedPeer(node_id, host, port)
        for voucher, grant in entry["vouchers"].items():
            peer.vouchers[parse_node_id(voucher)] = Grant(
                parse_tiers(list(grant["tiers"]), "tiers"),
                parse_tiers(list(grant["write_tiers"]), "write_tiers"),
            )
        out[node_id] = peer
    return out
