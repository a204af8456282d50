"""Shared pieces of the control-socket protocol: limits, error codes, value and id encoding.

Both ends use these: the trio server (``server.py``), the plain-socket client
(``client.py``) and the CLI. Nothing here does I/O or imports trio, so a program that only
wants the client pays for neither. The protocol itself is described in ``docs/control.md``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib
from collections.abc import Callable
from typing import Any

from protocol import MAX_PAYLOAD, Priority, Tier, name_block, name_id

__all__ = [
    "ERROR_CODES",
    "MAX_LINE",
    "MAX_PAYLOAD",
    "ControlError",
    "decode_value",
    "encode_value",
    "key_item_id",
    "node_id_text",
    "parse_item_id",
    "parse_node_id",
    "parse_priority",
    "parse_tier",
]

MAX_LINE = 2 << 20
"""Longest request line the server reads (2 MiB, newline excluded)."""

ERROR_CODES = frozenset(
    {
        "bad_request",
        "not_found",
        "not_mergeable",
        "too_large",
        "unknown_tier",
        "unavailable",
        "internal",
        "precondition_failed",  # conditional writes (conditions.py)
        "frozen",  # freezes (conditions.py)
    }
)

_TIER_ALIASES = {"l1": Tier.WORKING, "l2": Tier.EPISODIC, "l3": Tier.SEMANTIC}


class ControlError(Exception):
    """A request the server refuses; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_tier(value: Any) -> Tier:
    """A tier from its name (any case), ``L1``..``L3``, its code, or a :class:`Tier`.

    Raises:
        ControlError: ``unknown_tier`` for anything else.
    """
    if isinstance(value, Tier):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in {int(t) for t in Tier}:
        return Tier(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TIER_ALIASES:
            return _TIER_ALIASES[text]
        if text.isdigit() and int(text) in {int(t) for t in Tier}:
            return Tier(int(text))
        for tier in Tier:
            if tier.name.lower() == text:
                return tier
    names = ", ".join(t.name.lower() for t in Tier)
    raise ControlError("unknown_tier", f"unknown tier {value!r} (expected one of {names})")


def parse_priority(value: Any) -> Priority:
    """A priority from its name (any case), its code, or a :class:`Priority`.

    Raises:
        ControlError: ``bad_request`` for anything else.
    """
    if isinstance(value, Priority):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 4:
        return Priority(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and 0 <= int(text) <= 4:
            return Priority(int(text))
        for prio in Priority:
            if prio.name.lower() == text:
                return prio
    names = ", ".join(p.name.lower() for p in Priority)
    raise ControlError("bad_request", f"unknown priority {value!r} (expected one of {names})")


def key_item_id(name: str) -> bytes:
    """The item id a key alone stands for: the NAMED item ``((), name)`` in the root
    namespace (SPEC.md section 2.1), so every node and client derives the same id.

    Before protocol 3 this was SHA-256("key:" + name)[:16] and the name was not kept;
    items written that way keep their old ids and stay nameless.

    Raises:
        LocalProtocolError: an empty key, or one longer than 1,024 bytes.
    """
    return name_id(name_block((), name))


def parse_item_id(text: Any) -> bytes:
    """16 bytes from 32 hex digits.

    Raises:
        ControlError: ``bad_request`` if ``text`` is not exactly 32 hex digits.
    """
    if isinstance(text, str) and len(text) == 32:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raise ControlError("bad_request", f"bad item id {text!r}: expected 32 hex digits")


def encode_value(value: bytes) -> dict[str, str]:
    """``value_b64`` always, plus ``value`` when the bytes are valid UTF-8."""
    out = {"value_b64": base64.b64encode(value).decode("ascii")}
    with contextlib.suppress(UnicodeDecodeError):
        out["value"] = value.decode("utf-8")
    return out


def decode_value(params: dict[str, Any], *, required: bool = True) -> bytes | None:
    """The bytes of a request's ``value`` (UTF-8 text) or ``value_b64``.

    Raises:
        ControlError: ``bad_request`` (both or neither given, bad base64, wrong type),
            ``too_large`` (more than ``MAX_PAYLOAD`` bytes).
    """
    text, b64 = params.get("value"), params.get("value_b64")
    if text is not None and b64 is not None:
        raise ControlError("bad_request", "give either value or value_b64, not both")
    if text is None and b64 is None:
        if required:
            raise ControlError("bad_request", "missing value (or value_b64)")
        return None
    if text is not None:
        if not isinstance(text, str):
            raise ControlError("bad_request", "value must be a string (use value_b64 for bytes)")
        data = text.encode("utf-8", "surrogatepass")
    else:
        if not isinstance(b64, str):
            raise ControlError("bad_request", "value_b64 must be a base64 string")
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ControlError("bad_request", f"value_b64 is not valid base64: {exc}") from None
    if len(data) > MAX_PAYLOAD:
        raise ControlError(
            "too_large", f"value is {len(data)} bytes; the limit is {MAX_PAYLOAD} bytes (1 MiB)"
        )
    return data


def _identity_formatter() -> Callable[[bytes], str] | None:
    try:
        module = importlib.import_module("meshsyncd.identity")
    except ImportError:
        return None
    fn = getattr(module, "node_id_text", None)
    return fn if callable(fn) else None


def node_id_text(node_id: bytes) -> str:
    """A full node id as text: ``meshsyncd.identity.node_id_text`` when that exists, else
    lowercase base32 without padding (the same form)."""
    fn = _identity_formatter()
    if fn is not None:
        return str(fn(node_id))
    return base64.b32encode(node_id).decode("ascii").rstrip("=").lower()


def parse_node_id(text: Any) -> bytes:
    """A full 32-byte node id from its base32 text (any case, padding optional) or 64 hex.

    Raises:
        ControlError: ``bad_request`` for anything that is not a 32-byte id.
    """
    if isinstance(text, str):
        raw = text.strip()
        if len(raw) == 64:
            try:
                return bytes.fromhex(raw)
            except ValueError:
                pass
        padded = raw.upper().rstrip("=")
        padded += "=" * (-len(padded) % 8)
        try:
            data = base64.b32decode(padded)
        except (binascii.Error, ValueError):
            data = b""
        if len(data) == 32:
            return data
    raise ControlError("bad_request", f"bad node id {text!r}: expected base32 of 32 bytes")
