"""Conditional local writes and local write freezes: what the mesh offers instead of locks.

Theory of operation: a conditional write (``--if-version TS:ORIGIN``, ``--if-absent``)
compares the item's current version on this node with the expected one and writes only if
they are equal, in the same call on the node's single writer thread (``Engine.write``), so
two clients of one node racing on one item cannot both succeed: compare-and-set, on one
node. A freeze refuses local writes under a namespace prefix until it ends; versions that
arrive from peers still apply (the mesh stays convergent).

Why no exclusive distributed lock: meshsyncd is an AP system. Every node accepts writes
while partitioned from the others, and last-write-wins reconciles them afterwards; a lock
that must be exclusive across the mesh would have to refuse writes on at least one side of
every partition (or be granted on both sides and not be exclusive). Use instead:

* a conditional write on one node when the writers share a node (agents on one host);
* one owner per item or namespace (route a namespace's writes to one node, or share it
  with ``write_share`` so only one peer may write it) when they do not;
* ``freeze`` on every participant plus ``sync --now`` and a snapshot for a debate, and
  ``meshsyncd conflicts`` to review the rare concurrent writes that slip through.
"""

from __future__ import annotations

import re
import threading

from protocol import SEPARATOR

__all__ = [
    "Freezes",
    "FrozenError",
    "PreconditionFailed",
    "check_condition",
    "format_version",
    "parse_version",
]

Key = tuple[int, int]
_VERSION = re.compile(r"^(\d{1,20}):([0-9a-fA-F]{1,16})$")


class PreconditionFailed(Exception):
    """A conditional write found another current version; the message names it."""

    code = "precondition_failed"  # on the control socket


class FrozenError(Exception):
    """A local write under a frozen namespace; the message names the freeze."""

    code = "frozen"


def format_version(key: Key) -> str:
    """``TS:ORIGIN`` as ``get`` and ``put`` show a version (origin in 16 hex digits)."""
    return f"{key[0]}:{key[1]:016x}"


def parse_version(text: str) -> Key:
    """A version from ``TIMESTAMP_NS:ORIGIN`` (origin in hex, as ``get`` shows it).

    Raises:
        ValueError: anything else; the message names the text and the form expected.
    """
    match = _VERSION.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) >= 1 << 64:
        raise ValueError(
            f"malformed version {text!r}: use TIMESTAMP_NS:ORIGIN as get shows them,"
            " e.g. 1790000000123456789:0123456789abcdef"
        )
    return (int(match.group(1)), int(match.group(2), 16))


def check_condition(
    current: Key, live: bool, *, expect: Key | None, absent: bool, what: str
) -> None:
    """Raise unless the item's current version is the expected one.

    ``current`` is the item's current version here ((0, 0): none), ``live`` whether it has
    a visible value. ``absent`` expects no live value (never written, or deleted).

    Raises:
        PreconditionFailed: the message names the item and its current version.
    """
    now = "absent" if not live else f"at version {format_version(current)}"
    if absent and live:
        raise PreconditionFailed(f"{what} is not absent: it is {now}")
    if expect is not None and current != expect:
        if current == (0, 0):
            now = "absent (never written here)"
        elif not live:
            now = f"deleted (version {format_version(current)})"
        raise PreconditionFailed(f"{what} is {now}, not at version {format_version(expect)}")


class Freezes:
    """Namespace prefixes whose local writes are refused until a wall-clock time (thread-safe)."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def any(self) -> bool:
        """Whether any freeze may be in force (cheap: checked on every local write)."""
        return bool(self._until)

    def freeze(self, namespace: str, until_ns: int) -> None:
        with self._lock:
            self._until[namespace.strip(SEPARATOR)] = until_ns

    def unfreeze(self, namespace: str) -> bool:
        """End a freeze; False if there was none under exactly that namespace."""
        with self._lock:
            return self._until.pop(namespace.strip(SEPARATOR), None) is not None

    def active(self, now_ns: int) -> dict[str, int]:
        with self._lock:
            for ns in [ns for ns, until in self._until.items() if until <= now_ns]:
                del self._until[ns]
            return dict(self._until)

    def check(self, namespace: tuple[str, ...] | None, now_ns: int) -> None:
        """Raise if a local write to ``namespace`` is frozen (nameless items: only by ``""``).

        Raises:
            FrozenError: names the frozen prefix and when it ends.
        """
        if not self._until:
            return
        text = SEPARATOR.join(namespace) if namespace is not None else None
        for prefix, until in self.active(now_ns).items():
            if prefix == "" or (
                text is not None and (text == prefix or text.startswith(prefix + SEPARATOR))
            ):
                left = max(0, (until - now_ns) // 1_000_000_000)
                shown = prefix or "(every namespace)"
                raise FrozenError(
                    f"local writes under {shown} are frozen for {left} s more"
                    " (meshsyncd unfreeze to end it)"
                )
