"""``meshsyncd bench replicate``: two real daemons on loopback, B pulls what A holds.

The run itself (``run_replicate_bench``) lives with the other two-daemon benches in
``mesh.py``; this module is the command: alternating nameless and NAMED runs (issue 13:
named within 10% of nameless), medians with ranges, the wire ratio and the targets.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .mesh import N_ITEMS, run_replicate_bench
from .observe import print_targets, progress_printer

__all__ = ["replicate"]


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one), with every run's rate range."""
    ordered = sorted(runs, key=lambda r: r["items_per_s"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["items_per_s_range"] = [ordered[0]["items_per_s"], ordered[-1]["items_per_s"]]
    out["items_per_s_runs"] = [r["items_per_s"] for r in runs]
    return out


@click.command("replicate")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--items", default=N_ITEMS, show_default=True, type=click.IntRange(1000))
@click.option(
    "--names/--no-names",
    default=False,
    help="Then run it again with NAMED items and compare (issue 13: within 10%).",
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Runs of each kind, alternating with --names; rates are medians with ranges.",
)
def replicate(as_json: bool, items: int, names: bool, repeat: int) -> None:
    """Two nodes on loopback: time B's pull of ITEMS items written on A, and wire bytes.

    A's store is preloaded while A is stopped; the clock runs from B's session opening to
    B's EPISODIC digest equalling A's. Prints items/s and bytes per item on the wire (TLS
    and protocol frames) against the raw item bytes, and whether the targets hold.

    \b
    Example:
      meshsyncd bench replicate
      meshsyncd bench replicate --items 20000 --json | jq .targets
    """
    # Alternating runs: one run each was 0.44x to 1.40x named/nameless on this shared VM.
    plain_runs: list[dict[str, Any]] = []
    named_runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        plain_runs.append(run_replicate_bench(items, progress_printer()))
        if names:
            named_runs.append(run_replicate_bench(items, progress_printer(), named=True))
    figures = _median_run(plain_runs)
    if names:
        named = _median_run(named_runs)
        ratio = round(named["items_per_s"] / max(1, figures["items_per_s"]), 3)
        figures["named"] = named
        figures["targets"]["named>=90%_of_nameless"] = ratio >= 0.9
        figures["named_vs_nameless"] = ratio
        figures["named_vs_nameless_per_pair"] = [
            round(n["items_per_s"] / max(1, p["items_per_s"]), 3)
            for p, n in zip(plain_runs, named_runs, strict=True)
        ]
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    wire = figures["wire"]
    click.echo(
        f"{figures['items']:,} items, {figures['raw_bytes_per_item']} raw bytes/item "
        f"(preload {figures['preload_s']} s)"
    )
    click.echo(
        f"replicated in {figures['seconds']} s from session open "
        f"({figures['seconds_from_spawn']} s from spawning B): {figures['items_per_s']:,} items/s"
    )
    click.echo(
        f"frames: {wire['frame_bytes_per_item']} bytes/item, {wire['frame_ratio']}x raw "
        f"({wire['frames_are']})"
    )
    if "tls_ratio" in wire:
        click.echo(
            f"TLS:    {wire['tls_bytes_per_item']} bytes/item, {wire['tls_ratio']}x raw "
            f"({wire['tls_is']})"
        )
    if repeat > 1:
        lo, hi = figures["items_per_s_range"]
        click.echo(f"median of {repeat} runs, range {lo:,}-{hi:,} items/s")
    if names:
        named = figures["named"]
        click.echo(
            f"named:  {named['items_per_s']:,} items/s "
            f"({figures['named_vs_nameless']:.0%} of nameless), "
            f"{named['raw_bytes_per_item']} raw bytes/item"
        )
        if repeat > 1:
            lo, hi = named["items_per_s_range"]
            pairs = ", ".join(f"{r:.2f}" for r in figures["named_vs_nameless_per_pair"])
            click.echo(f"        range {lo:,}-{hi:,} items/s; per pair of runs: {pairs}")
    print_targets(figures["targets"])
