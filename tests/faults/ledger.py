"""A ledger of acknowledged writes and the values the conflict order makes win.

Each write goes through a node's control client; only once the daemon answered is it
recorded, with the ``(timestamp_ns, origin)`` key it returned (DESIGN.md "Conflict order":
the greater key wins, node-id tie-break). Whole-value writes and deletes of one (tier, key)
leave the greatest-keyed version; MERGEs (kept on their own keys here) leave, per field, the
value of the greatest-keyed MERGE that set it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from faultnodes import FaultNode

from meshsyncd.client import ClientError


@dataclass
class Expect:
    """Acknowledged writes per (tier, key) and the value the conflict order makes win."""

    writes: dict[tuple[str, str], list[tuple[tuple[int, int], str | None]]] = field(
        default_factory=dict
    )
    merges: dict[tuple[str, str], dict[str, tuple[tuple[int, int], Any]]] = field(
        default_factory=dict
    )

    @staticmethod
    def _key(result: dict[str, Any]) -> tuple[int, int]:
        return (int(result["timestamp_ns"]), int(result["origin"], 16))

    def put(self, node: FaultNode, tier: str, key: str, value: str, priority: str) -> None:
        with node.client() as c:
            r = c.put(value, tier=tier, key=key, priority=priority)
        self.writes.setdefault((tier, key), []).append((self._key(r), value))

    def delete(self, node: FaultNode, tier: str, key: str, priority: str = "high") -> None:
        with node.client() as c:
            r = c.delete(tier=tier, key=key, priority=priority)
        self.writes.setdefault((tier, key), []).append((self._key(r), None))

    def merge(
        self,
        node: FaultNode,
        tier: str,
        key: str,
        fields: dict[str, Any],
        priority: str = "normal",
    ) -> None:
        with node.client() as c:
            r = c.merge(fields, tier=tier, key=key, priority=priority)
        got = self.merges.setdefault((tier, key), {})
        for name, value in fields.items():
            if name not in got or self._key(r) > got[name][0]:
                got[name] = (self._key(r), value)

    def mismatches(self, node: FaultNode) -> list[str]:
        """Every (tier, key) whose value on ``node`` is not the conflict order's winner."""
        bad: list[str] = []
        with node.client() as c:
            for (tier, key), versions in self.writes.items():
                _, want = max(versions)
                try:
                    have: str | None = c.get(tier=tier, key=key)["value"]
                except ClientError as exc:
                    assert exc.code == "not_found", exc
                    have = None
                if have != want:
                    bad.append(f"{node.name}: {tier}/{key} is {have!r}, expected {want!r}")
            for (tier, key), fields in self.merges.items():
                try:
                    obj = json.loads(c.get(tier=tier, key=key)["value"])
                except ClientError as exc:
                    obj = f"missing ({exc})"
                want_obj = {name: v for name, (_, v) in fields.items()}
                if obj != want_obj:
                    bad.append(f"{node.name}: merged {tier}/{key} is {obj}, expected {want_obj}")
        return bad

    def check(self, node: FaultNode) -> None:
        bad = self.mismatches(node)
        assert not bad, f"{len(bad)} wrong values, first: {bad[:5]}"
