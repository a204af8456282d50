"""``meshsyncd check``: does the mesh agree? Per tier, this node's digest against its peers'.

Why a command of its own: cursors say what was sent, digests prove what is held (DESIGN.md
"The mesh", Repair). The node tells every connected peer its digests and compares them with
the ones the peers announce back (``meshsyncd/mesh/repair.py`` says how fresh they are); a
peer that is configured but not connected is listed as unreachable. Exit status: 0 when
every tier agrees with every connected peer, 1 when a node differs (or has not announced a
digest yet), 2 for usage errors.
"""

from __future__ import annotations

from typing import Any

import click

from ..client import Client
from .clientcli import Fail, OneLineCommand, emit_json, node_options, print_table

__all__ = ["check"]


@click.command(cls=OneLineCommand)
@node_options
def check(client: Client, as_json: bool) -> None:
    """Compare this node's per-tier digests with every connected peer's; exit 1 if any differ.

    \b
    Examples:
      meshsyncd check
      meshsyncd check --json
    """
    result: dict[str, Any] = client.check()
    tiers: dict[str, Any] = result.get("tiers", {})
    if as_json:
        emit_json(result)
    else:
        rows = []
        for name, tier in tiers.items():
            nodes = tier.get("nodes", {})
            differ = tier.get("differ", [])
            state = "agree" if tier.get("agree") else "DIFFER: " + ", ".join(n[:16] for n in differ)
            rows.append([name, len(nodes), state])
        print_table(["tier", "nodes", "mesh"], rows)
        for peer in result.get("unreachable", []):
            click.echo(f"unreachable: {peer}")
    bad = sorted({n for t in tiers.values() for n in t.get("differ", [])})
    if bad:
        raise Fail(f"digests differ at: {', '.join(bad)}", 1)
