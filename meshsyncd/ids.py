"""The one form of a node's identity that humans read and type: its node id, or a prefix.

Why: an operator used to see a node as 52 base32 characters (``peers``), as 16 hex digits
(the ``origin`` of items and conflicts), in decimal (``decode``) and as 16-character base32
prefixes (logs); mapping a conflict to a node took ``id --json`` on every node. Now every
place a human reads shows the node id or its first :data:`SHORT_LEN` characters, and every
place a human types an id takes the full id or a unique prefix, like git's short hashes.

The short form is exactly what an item's 64-bit ``origin`` (the first 8 bytes of the node
id, DESIGN.md "Item header") determines: 12 base32 characters carry 60 of its bits, the 13th
would need a bit beyond the origin. So :func:`origin_text` of an item written on a node is
that node's :func:`short_text`, and ``meshsyncd id`` and the peers table show the same
characters that ``conflicts`` and ``list`` print in their ``origin`` column.

Pure standard library: the CLI's data commands import this without paying for the daemon.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

__all__ = [
    "MIN_PREFIX",
    "SHORT_LEN",
    "IdPrefixError",
    "normalize",
    "origin_text",
    "resolve_prefix",
    "short_text",
]

SHORT_LEN = 12
"""Characters of a node id shown in tables and logs; also all that an origin determines."""

MIN_PREFIX = 4
"""Shortest prefix accepted as input (git's minimum too): fewer is a typo, not an id."""


_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class IdPrefixError(ValueError):
    """A typed id matches no known node, or more than one (the message names them)."""


def normalize(text: str) -> str:
    """Lowercase, without whitespace, ``-`` separators or base32 padding."""
    return "".join(text.split()).replace("-", "").rstrip("=").lower()


def short_text(node_id: str) -> str:
    """The short form of a full node id text (its first :data:`SHORT_LEN` characters)."""
    return normalize(node_id)[:SHORT_LEN]


def origin_text(origin: int | str | None) -> str:
    """The short node id of an item's writer from its 64-bit origin (an int or 16 hex).

    Anything that is not an origin is returned as text unchanged, so a table never fails
    on an unexpected value.
    """
    if isinstance(origin, str):
        try:
            value = int(origin, 16)
        except ValueError:
            return origin
    elif isinstance(origin, int) and not isinstance(origin, bool):
        value = origin
    else:
        return "" if origin is None else str(origin)
    if not 0 <= value < 1 << 64:
        return str(origin)
    raw = value.to_bytes(8, "big")
    return base64.b32encode(raw).decode("ascii").lower()[:SHORT_LEN]


def resolve_prefix(typed: str, known: Iterable[str], *, what: str = "node") -> str:
    """The one id in ``known`` (full node id texts) that ``typed`` names.

    ``typed`` may be a full id or a prefix of at least :data:`MIN_PREFIX` characters, in any
    case and with ``-`` separators. A full id that is not in ``known`` is returned as is
    (the caller decides whether an unknown full id is an error).

    Raises:
        IdPrefixError: too short, no match, or ambiguous (the candidates are named).
    """
    want = normalize(typed)
    if not want or set(want) - _BASE32:
        raise IdPrefixError(f"{typed!r} is not a node id (base32 characters: a-z, 2-7)")
    ids = sorted({normalize(k) for k in known})
    if want in ids:
        return want
    if len(want) >= 52:
        return want
    if len(want) < MIN_PREFIX:
        raise IdPrefixError(
            f"{typed!r} is too short to name a {what}: give at least {MIN_PREFIX} characters"
        )
    matches = [k for k in ids if k.startswith(want)]
    if not matches:
        raise IdPrefixError(f"no {what} id starts with {typed!r}")
    if len(matches) > 1:
        shown = ", ".join(m[: max(SHORT_LEN, len(want) + 2)] for m in matches[:5])
        raise IdPrefixError(f"{typed!r} names more than one {what}: {shown}")
    return matches[0]
