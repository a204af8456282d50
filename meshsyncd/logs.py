"""Structured logging: JSON lines for journald and files, readable lines on a terminal.

Every event that concerns a peer carries ``peer`` (the first 12 characters of its node id,
the short form of ``meshsyncd.ids``) and, for connections, ``address``; operators grep and
journald indexes on those keys.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging"]


def configure_logging(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Route structlog to ``stream`` (stderr by default) as JSON or console lines.

    ``fmt="auto"`` picks JSON unless the stream is a terminal, which is what journald
    (no terminal) and an operator running ``meshsyncd run`` by hand each want.

    Raises:
        ValueError: an unknown format or level name.
    """
    out = stream if stream is not None else sys.stderr
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console, not {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
