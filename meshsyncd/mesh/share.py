"""Sharing by namespace: which named items a peer receives from us and may write to us.

Theory of operation: a peer's ``share`` (what it receives) and ``write_share`` (what it may
write) are lists of ``"tier:namespace/"`` entries, e.g. ``"semantic:prefs/"`` or
``"episodic:agents/alden/"``. A tier named by at least one entry is *restricted*: only
named items whose namespace lies under one of its prefixes cross the link in that
direction, nameless items of it do not; ``"semantic:"`` (empty prefix) lets every named
item of the tier through. A tier named by no entry is governed by ``tiers``/``write_tiers``
alone, as before. So the tier lists say which tiers a link carries at all, and the share
lists narrow tiers down to namespaces.

A :class:`ShareRule` is a small pure object: the session asks it about each item it is about
to send (pull answers, pushes and relays, which all leave through the session) and each
item it received (pull batches and pushes), and never touches storage. A refused incoming
item is dropped before the apply, counted and logged with the peer and its namespace; a
pull's cursor still moves past it (it is refused, not missing), so it is never asked again.
Items are judged by the name block at the start of their payload (SPEC.md section 2.1), so
a rule costs nothing for a tier it does not restrict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol import NAMED, SEPARATOR, Item, Tier
from protocol.names import index_key

from ..config.values import parse_share as parse_config_share

__all__ = ["ShareRule", "namespace_of", "narrowed", "parse_share"]


@dataclass(frozen=True, slots=True)
class ShareRule:
    """Namespace prefixes (index form, ``agents/alden/``) per restricted tier."""

    prefixes: Mapping[Tier, tuple[str, ...]]

    def restricts(self, tier: Tier) -> bool:
        return tier in self.prefixes

    def allows(self, tier: Tier, flags: int, payload: bytes) -> bool:
        """May a version of ``tier`` with these flags and payload cross this way?"""
        prefixes = self.prefixes.get(tier)
        if prefixes is None:
            return True
        if not flags & NAMED:
            return False
        ns = index_key(payload)[0]
        return any(ns.startswith(p) for p in prefixes)

    def split(self, tier: Tier, items: Sequence[Item]) -> tuple[list[Item], list[Item]]:
        """``(allowed, refused)`` versions of ``tier``, order kept."""
        if tier not in self.prefixes:
            return list(items), []
        kept: list[Item] = []
        refused: list[Item] = []
        for item in items:
            (kept if self.allows(tier, item.flags, item.payload) else refused).append(item)
        return kept, refused

    def describe(self) -> list[str]:
        """The rule as config entries (for the peers table)."""
        return [f"{t.name.lower()}:{p}" for t, ps in sorted(self.prefixes.items()) for p in ps]


def narrowed(session: object, tier: Tier) -> bool:
    """Does a share rule of ``session`` narrow ``tier`` (either way)?

    Then the two nodes' digests of the tier cannot agree (each holds items the other may
    not), so repair and ``check`` leave the tier alone rather than reconcile forever.
    """
    rules = (getattr(session, "send_share", None), getattr(session, "accept_share", None))
    return any(rule is not None and rule.restricts(tier) for rule in rules)


def namespace_of(item: Item) -> str:
    """The namespace of an item for a log line (``(nameless)`` when it has none)."""
    if not item.flags & NAMED:
        return "(nameless)"
    return index_key(item.payload)[0].rstrip(SEPARATOR) or "(root)"


def parse_share(entries: Iterable[object], key: str) -> ShareRule | None:
    """A rule from config entries (``config.values.parse_share``); ``None`` for none.

    Raises:
        ConfigError: a bad entry (the key names it).
    """
    prefixes: dict[Tier, list[str]] = {}
    for tier, prefix in parse_config_share(entries, key):
        prefixes.setdefault(tier, []).append(prefix)
    if not prefixes:
        return None
    return ShareRule({tier: tuple(found) for tier, found in prefixes.items()})
