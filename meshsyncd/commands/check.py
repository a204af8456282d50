"""``meshsyncd check``: does the mesh agree? Per tier, this node's digest against its peers'.

Why a command of its own: cursors say what was sent, digests prove what is held (DESIGN.md
"The mesh", Repair). The node tells every connected peer its digests and compares them with
the ones the peers announce back (``meshsyncd/mesh/repair.py`` says how fresh they are); a
peer that is configured but not connected is listed as unreachable. Exit status: 0 when
every tier agrees with every connected peer, 1 when a node differs (or has not announced a
digest yet).
"""

from __future__ import annotations

from typing import Any

import click

from ..client import Client
from ..ids import short_text
from .clientcli import Fail, OneLineCommand, emit_json, node_options
from .output import EXIT_FAILED, Column, Output, print_table

__all__ = ["CHECK_COLUMNS", "check", "check_rows"]

CHECK_COLUMNS = [
    Column("tier"),
    Column("nodes", right=True),
    Column("digest here"),
    Column("mesh", shrink=1, floor=20),
]


def check_rows(result: dict[str, Any], out: Output) -> list[list[Any]]:
    """Rows of the ``check`` table: per tier, whether the nodes agree, else who differs."""
    here = str(result.get("node_id") or "")
    rows = []
    for name, tier in result.get("tiers", {}).items():
        nodes = tier.get("nodes", {})
        digest = str((nodes.get(here) or {}).get("digest") or "")
        differ = [n if out.wide else short_text(n) for n in tier.get("differ", [])]
        state = "agree" if tier.get("agree") else "DIFFER: " + ", ".join(differ)
        rows.append([name, len(nodes), digest if out.wide else digest[:16], state])
    return rows


@click.command(cls=OneLineCommand)
@node_options
def check(client: Client, out: Output) -> None:
    """Compare this node's per-tier digests with every connected peer's; exit 1 if any differ.

    The table shows each digest's first 16 hex digits and short node ids; -o wide and
    -o json show them whole.

    \b
    Examples:
      meshsyncd check
      meshsyncd check -o json
    """
    result: dict[str, Any] = client.check()
    if out.json:
        emit_json(result)
    else:
        print_table(CHECK_COLUMNS, check_rows(result, out), wide=out.wide)
        for peer in result.get("unreachable", []):
            click.echo(f"unreachable: {peer if out.wide else short_text(peer)}")
    bad = sorted({n for t in result.get("tiers", {}).values() for n in t.get("differ", [])})
    if bad:
        raise Fail(f"digests differ at: {', '.join(short_text(n) for n in bad)}", EXIT_FAILED)
