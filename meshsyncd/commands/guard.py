"""``--if-version``/``--if-absent`` on put/delete/merge, and ``freeze``/``unfreeze``.

See ``meshsyncd/conditions.py`` for what they guarantee, and why the mesh has no exclusive
distributed lock (an AP system cannot keep one across a partition) and what to use instead.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..client import Client
from ..conditions import parse_version
from .clientcli import Fail, OneLineCommand, Output, emit_json, node_options
from .output import EXIT_USAGE

__all__ = ["conditional", "freeze", "unfreeze"]

F = TypeVar("F", bound=Callable[..., Any])
_FOR = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def conditional(fn: F, *, absent: bool = True) -> F:
    """Add ``--if-version TS:ORIGIN`` (and ``--if-absent``) and pass them on as ``cond``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, if_version: str | None, if_absent: bool = False, **kw: Any) -> None:
        if if_version is not None:
            try:
                parse_version(if_version)
            except ValueError as exc:
                raise Fail(f"--if-version: {exc}", EXIT_USAGE) from None
            if if_absent:
                raise Fail("give either --if-version or --if-absent, not both", EXIT_USAGE)
        cond: dict[str, Any] = {"if_version": if_version}
        if absent:
            cond["if_absent"] = if_absent
        fn(*args, cond=cond, **kw)

    wrapped: Any = click.option(
        "--if-version",
        help="Only if the item's current version here is TS:ORIGIN (the version get shows).",
    )(wrapper)
    if absent:
        wrapped = click.option(
            "--if-absent", is_flag=True, help="Only if the item has no value here."
        )(wrapped)
    return wrapped  # type: ignore[no-any-return]


def parse_for(text: str) -> int:
    """Seconds from ``90s``, ``30m``, ``2h`` or ``1d``.

    Raises:
        Fail: anything else (status 2).
    """
    match = _FOR.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise Fail(f"bad --for {text!r}: use e.g. 90s, 30m, 2h or 1d", EXIT_USAGE)
    return int(match.group(1)) * _UNIT[match.group(2)]


@click.command(cls=OneLineCommand)
@click.option("--namespace", required=True, help="Namespace prefix ('' for every write).")
@click.option("--for", "duration", required=True, help="How long: 90s, 30m, 2h, 1d.")
@node_options
def freeze(client: Client, out: Output, namespace: str, duration: str) -> None:
    """Refuse local writes under a namespace on this node for a while.

    Writes that arrive from peers still apply: a freeze is not a distributed lock (no AP
    system can keep one across a partition). Freeze every participant, then `sync --now`,
    for a debate that must not change its memory locally.

    \b
    Examples:
      meshsyncd freeze --namespace agents/alden --for 30m
    """
    done = client.freeze(namespace, parse_for(duration))
    if out.json:
        emit_json(done)
    else:
        click.echo(f"local writes under {done['namespace'] or '(every namespace)'} frozen")


@click.command(cls=OneLineCommand)
@click.option("--namespace", required=True, help="The namespace given to freeze.")
@node_options
def unfreeze(client: Client, out: Output, namespace: str) -> None:
    """End a freeze before its time.

    \b
    Examples:
      meshsyncd unfreeze --namespace agents/alden
    """
    done = client.unfreeze(namespace)
    if out.json:
        emit_json(done)
    else:
        click.echo(f"local writes under {done['namespace'] or '(every namespace)'} allowed again")
