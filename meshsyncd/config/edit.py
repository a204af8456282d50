"""Edits of the config file: a new one (``meshsyncd init``), ``peers add``, ``peers remove``.

Why in place, on the text: the operator's comments and layout must survive an edit, so the
writers change the TOML text (``text.py``) rather than dumping a parsed copy. Each edit is
parsed and checked as a whole before it is written (a write never leaves an invalid file),
and the write is atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protocol import Tier

from ..identity import node_id_text, parse_node_id
from . import text as config_text
from .loader import _parse, _read_text, load_config
from .values import ConfigError, PeerConfig, parse_address

__all__ = ["add_peer", "remove_peer", "write_new_config"]


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
        tier_names(peer.tiers),
        tier_names(peer.write_tiers),
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


def tier_names(tiers: frozenset[Tier]) -> list[str]:
    """Tiers as the file writes them, in tier order."""
    return [tier.name.lower() for tier in sorted(tiers)]


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
