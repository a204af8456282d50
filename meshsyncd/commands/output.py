"""How commands print: tables that fit 100 columns, ``-o wide``, ``-o json``, exit statuses.

Why: the ``peers``, ``conflicts`` and ``list`` tables were 198, 153 and 145 columns wide, so
on a terminal every row wrapped. A table now has a default form that fits
:data:`MAX_WIDTH` columns (short node ids, the columns an operator reads first, long cells
cut with ``~``) and a wide form with every column and full ids for a wider screen. JSON
(``-o json``, or the older ``--json``) always carries full ids and every field; scripts
should read that, never the tables.

The exit statuses are the same for every command, and every command's ``--help`` ends with
:data:`EXIT_HELP`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

__all__ = [
    "EXIT_DAEMON",
    "EXIT_FAILED",
    "EXIT_HELP",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_WIDTH",
    "Column",
    "Output",
    "emit_json",
    "output_options",
    "render_table",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DAEMON = 3

EXIT_HELP = (
    "Exit status: 0 ok; 1 the operation failed (not found, refused, sync incomplete); "
    "2 usage or configuration error (bad argument, bad or missing config); "
    "3 daemon not reachable (not running, no permission on its socket, no answer)."
)

MAX_WIDTH = 100
"""Columns a default table may use: fits a 100-column terminal without wrapping."""

CUT = "~"
"""Marks a cell cut to fit (one column; ``...`` would cost three)."""

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Output:
    """The chosen output form: ``table`` (fits 100 columns), ``wide`` or ``json``."""

    form: str = "table"

    @property
    def json(self) -> bool:
        return self.form == "json"

    @property
    def wide(self) -> bool:
        return self.form == "wide"


@dataclass(frozen=True)
class Column:
    """A table column. ``wide_only``: only in ``-o wide``.

    ``shrink``: 0 never cut; otherwise the column may be cut to fit, down to ``floor``
    characters, columns of a lower ``shrink`` first (a long host name gives way before
    the reason a peer is down does).
    """

    header: str
    shrink: int = 0
    wide_only: bool = False
    right: bool = False
    floor: int = 6


def output_options(fn: F) -> F:
    """``-o table|wide|json`` and ``--json`` (alias of ``-o json``); passes ``output: Output``.

    (``output``, not ``out``: ``export`` has an ``--out`` directory.)
    """

    @click.option(
        "-o",
        "--output",
        "output_form",
        type=click.Choice(["table", "wide", "json"]),
        default="table",
        show_default=True,
        help="table: fits 100 columns, short ids; wide: every column, full ids; json: all.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Same as -o json.")
    @functools.wraps(fn)
    def wrapper(output_form: str, as_json: bool, **kw: Any) -> Any:
        return fn(output=Output("json" if as_json else output_form), **kw)

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("\n", " ")


def render_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    *,
    wide: bool = False,
    max_width: int = MAX_WIDTH,
) -> list[str]:
    """The table's lines: two spaces between columns, trailing blanks stripped.

    Unless ``wide``, ``wide_only`` columns are left out and ``shrink`` columns are cut
    (widest first, never below their header) until a line fits ``max_width``.
    """
    keep = [i for i, c in enumerate(columns) if wide or not c.wide_only]
    heads = [columns[i].header for i in keep]
    body = [[_cell(r[i]) for i in keep] for r in rows]
    widths = [max([len(h)] + [len(r[j]) for r in body]) for j, h in enumerate(heads)]
    if not wide:
        total = sum(widths) + 2 * (len(widths) - 1)
        for level in sorted({columns[i].shrink for i in keep} - {0}):
            shrinkable = [j for j, i in enumerate(keep) if columns[i].shrink == level]
            while total > max_width and shrinkable:
                j = max(shrinkable, key=lambda k: widths[k])
                floor = max(len(heads[j]), columns[keep[j]].floor)
                if widths[j] <= floor:
                    shrinkable.remove(j)
                    continue
                cut = min(total - max_width, widths[j] - floor, 1 + (widths[j] - floor) // 2)
                widths[j] -= cut
                total -= cut
    lines = []
    for row in [heads, *body]:
        cells = []
        for j, text in enumerate(row):
            width = widths[j]
            if len(text) > width:
                text = text[: width - 1] + CUT
            right = columns[keep[j]].right and row is not heads
            cells.append(text.rjust(width) if right else text.ljust(width))
        lines.append("  ".join(cells).rstrip())
    return lines


def print_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Any]], *, wide: bool = False
) -> None:
    """Print :func:`render_table`'s lines."""
    for line in render_table(columns, rows, wide=wide):
        click.echo(line)
