"""Control side of conditional writes and freezes (``conditions.py``).

``if_version`` (``TIMESTAMP_NS:ORIGIN``) and ``if_absent`` on ``put``/``delete``/``merge``;
``freeze`` (``namespace``, ``seconds``) and ``unfreeze`` (``namespace``). A freeze lives in
the daemon's memory: it ends at its time, with ``unfreeze``, or when the daemon stops.
"""

from __future__ import annotations

import time
from typing import Any

from ..conditions import parse_version
from .proto import ControlError

__all__ = ["op_freeze", "op_unfreeze", "write_condition"]

MAX_FREEZE_S = 7 * 86_400


def write_condition(
    p: dict[str, Any], fresh: bool, *, absent_ok: bool = True
) -> tuple[tuple[int, int] | None, bool]:
    """``(expected version, expect absent)`` of a write request.

    Raises:
        ControlError: ``bad_request``: a malformed version, both conditions, a condition
            on a write without a target (a new random id), ``if_absent`` on a delete.
    """
    raw, absent = p.get("if_version"), p.get("if_absent", False)
    if not isinstance(absent, bool):
        raise ControlError("bad_request", "if_absent must be true or false")
    if raw is None and not absent:
        return None, False
    if raw is not None and absent:
        raise ControlError("bad_request", "give either if_version or if_absent, not both")
    if absent and not absent_ok:
        raise ControlError("bad_request", "a delete cannot be conditional on absence")
    if fresh:
        raise ControlError("bad_request", "a conditional write needs a key or an item id")
    if raw is None:
        return None, True
    try:
        return parse_version(raw), False
    except ValueError as exc:
        raise ControlError("bad_request", f"if_version: {exc}") from None


def _namespace(p: dict[str, Any]) -> str:
    ns = p.get("namespace")
    if not isinstance(ns, str):
        raise ControlError("bad_request", "namespace must be text ('' freezes every write)")
    return ns


async def op_freeze(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    ns, seconds = _namespace(p), p.get("seconds")
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not 0 < seconds <= MAX_FREEZE_S
    ):
        raise ControlError("bad_request", f"seconds must be in (0, {MAX_FREEZE_S}]")
    until = time.time_ns() + int(seconds * 1e9)
    freezes = daemon.engine.engine.freezes
    freezes.freeze(ns, until)
    return {"namespace": ns.strip("/"), "until_ns": until, "frozen": freezes.active(time.time_ns())}


async def op_unfreeze(daemon: Any, p: dict[str, Any]) -> dict[str, Any]:
    ns = _namespace(p)
    freezes = daemon.engine.engine.freezes
    if not freezes.unfreeze(ns):
        raise ControlError("not_found", f"no freeze on namespace {ns.strip('/') or '(every)'!r}")
    return {"namespace": ns.strip("/"), "frozen": freezes.active(time.time_ns())}
