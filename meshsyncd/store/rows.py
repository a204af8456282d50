"""The state of one stored item and the conflict order that updates it (DESIGN.md).

Theory of operation: a row is a small join-semilattice. It holds

* the *base*: the highest-keyed whole-value write (INSERT, UPDATE or DELETE) seen so far,
  with its wire payload and flags, or no base at all when only MERGEs have arrived; and
* the *fields*: for each top-level JSON key set by a MERGE, the highest-keyed MERGE value
  for it, kept only while its key is greater than the base key.

Folding a version into a row takes the maximum by key on each component, so the result does
not depend on the order or the number of deliveries. The visible value is the base payload
when there are no fields; otherwise the base payload parsed as a JSON object (an empty
object when the base is a tombstone, absent, or not a JSON object) updated with the fields
and serialised canonically (sorted keys, compact separators), so every node derives the same
bytes. A row re-sends itself as its base version plus one MERGE item per distinct field key
(:func:`row_versions`): a receiver that folds those in reaches the identical row.

Names (SPEC.md section 2.1): a NAMED version's payload starts with the item's name block,
and so does the stored base payload, with ``NAMED`` in the row's flags (a tombstone of a
named item keeps its name). A row with MERGE fields only has no base to carry the name, so
the first NAMED MERGE gives it the *name-only base*: op ``NO_BASE``, key (0, 0), the name
block as payload and ``NAMED`` as flags. Every node folds the same versions into the same
base, so digests still agree, and the MERGE versions a row re-sends carry its name again.

Keys are ``(timestamp_ns, origin)`` as unsigned integers. SQLite integers are signed, so the
store keeps both biased by ``2**63`` (:func:`to_db` / :func:`from_db`), which preserves order.

Row digests: ``row_hash = base_hash + fields_hash (mod 2**256)``, both BLAKE2b-256 and both
covering the item id. The base hash is stored with the row; the fields hash is recomputed
from the stored fields text when needed. A tier digest is the sum of its row hashes mod
2**256 (see ``core.py``), so it is order-independent and updated in O(changed rows).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from protocol import BASED, NAMED, PAYLOAD_ZSTD, Item, Name, Op, Priority, Tier, inflate
from protocol.bases import value_start
from protocol.names import read_name, skip_name

__all__ = [
    "BASE_HEAD",
    "BIAS",
    "MOD",
    "NO_BASE",
    "SEQ_BITS",
    "SEQ_MASK",
    "Row",
    "base_digest",
    "base_hash",
    "fields_hash",
    "from_db",
    "name_only_base",
    "plain_value",
    "to_db",
]

BIAS = 1 << 63
MOD = 1 << 256
# A row's rowid is ``tier << SEQ_BITS | seq``: its tier's sequence number (schema.py).
SEQ_BITS = 56
SEQ_MASK = (1 << SEQ_BITS) - 1
NO_BASE = 0  # op value stored for a row that has only MERGE fields
# The base hash covers this header, then the payload.
BASE_HEAD = struct.Struct(">16sQQBHI")
_CANON: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}

Key = tuple[int, int]
FieldVersion = tuple[int, int, Any]  # (timestamp_ns, origin, JSON value)
# A whole-value version of the row as it stood when another one met it:
# (timestamp_ns, origin, op, flags, wire payload or None when still only in the database)
Held = tuple[int, int, int, int, bytes | None]
# (incoming version, the stored version it met, whether the incoming one won)
Contest = tuple[Item, Held, bool]


def to_db(value: int) -> int:
    """A u64 as an order-preserving signed 64-bit SQLite integer."""
    return value - BIAS


def from_db(value: int) -> int:
    """Inverse of :func:`to_db`."""
    return value + BIAS


def base_digest(item_id: bytes, ts: int, origin: int, op: int, flags: int, payload: bytes) -> bytes:
    """Hash of a row's base version (wire payload, so compressed forms hash as sent)."""
    head = BASE_HEAD.pack(item_id, ts, origin, op, flags, len(payload))
    return hashlib.blake2b(head + payload, digest_size=32).digest()


def base_hash(item_id: bytes, ts: int, origin: int, op: int, flags: int, payload: bytes) -> int:
    """:func:`base_digest` as an integer (the form the digests add up)."""
    return int.from_bytes(base_digest(item_id, ts, origin, op, flags, payload), "big")


def fields_hash(item_id: bytes, fields_text: str | None) -> int:
    """Hash of a row's MERGE fields; 0 when there are none."""
    if not fields_text:
        return 0
    h = hashlib.blake2b(item_id, digest_size=32, person=b"meshsyncd-fields")
    h.update(fields_text.encode())
    return int.from_bytes(h.digest(), "big")


def encode_fields(fields: dict[str, FieldVersion]) -> str | None:
    """Canonical text of the fields map (``None`` when empty)."""
    if not fields:
        return None
    return json.dumps({k: [ts, o, v] for k, (ts, o, v) in fields.items()}, **_CANON)


def decode_fields(text: str | None) -> dict[str, FieldVersion]:
    if not text:
        return {}
    raw: dict[str, list[Any]] = json.loads(text)
    return {k: (v[0], v[1], v[2]) for k, v in raw.items()}


@dataclass(slots=True)
class Row:
    """One item's state; ``payload is None`` means "unchanged, still in the database".

    ``base_changed`` tells the store whether the whole row must be rewritten or only its
    fields, which saves reading payloads back for rows that only gained MERGE fields.
    """

    item_id: bytes
    ts: int = 0
    origin: int = 0
    op: int = NO_BASE
    priority: int = Priority.NORMAL
    flags: int = 0
    payload: bytes | None = b""
    fields: dict[str, FieldVersion] = field(default_factory=dict)
    base_changed: bool = False
    fields_changed: bool = False

    @property
    def key(self) -> Key:
        return (self.ts, self.origin)

    def fold(self, item: Item, contests: list[Contest]) -> bool:
        """Fold one version into the row; return whether the row changed.

        Appends a :data:`Contest` to ``contests`` whenever a whole-value version meets the
        stored whole-value version of a different origin (one of them loses): the
        candidates of the conflict log, which ``conflicts.py`` judges by their bases.
        Equal keys are duplicates. ``item`` must not be a REPLICATE request.

        Raises:
            ProtocolError: a MERGE payload that does not decode (cannot happen for items that
                went through the decoder or the ``Item`` constructor).
        """
        key = (item.timestamp_ns, item.origin)
        if item.op == Op.MERGE:
            return self._fold_merge(item, key, contests)
        if self.op != NO_BASE:
            if key == self.key:
                return False
            if key < self.key:
                if item.origin != self.origin:
                    contests.append((item, self.held(), False))
                return False
            if item.origin != self.origin:
                contests.append((item, self.held(), True))
        self.ts, self.origin, self.op = key[0], key[1], int(item.op)
        self.priority, self.flags, self.payload = int(item.priority), item.flags, item.payload
        self.base_changed = True
        if self.fields:
            kept = {}
            for name, fv in self.fields.items():
                if (fv[0], fv[1]) > key:
                    kept[name] = fv
            if len(kept) != len(self.fields):
                self.fields = kept
                self.fields_changed = True
        return True

    def held(self) -> Held:
        """The stored whole-value version as a contest records it."""
        return (self.ts, self.origin, self.op, self.flags, self.payload)

    @property
    def current(self) -> Key:
        """The item's current version here: the greatest key of its base and its fields.

        What a local write names as its base (SPEC.md section 2.2), and what a conditional
        write compares with.
        """
        key = self.key if self.op != NO_BASE else (0, 0)
        for ts, origin, _value in self.fields.values():
            if (ts, origin) > key:
                key = (ts, origin)
        return key

    def _fold_merge(self, item: Item, key: Key, contests: list[Contest]) -> bool:
        # MERGE fields combine per field: a MERGE that loses a field is not a conflict.
        if self.op != NO_BASE and key <= self.key:
            return False
        if self.op == NO_BASE and item.flags & NAMED and not self.flags & NAMED:
            payload = item.payload
            self.flags, self.payload = NAMED, payload[: skip_name(payload)]
            self.base_changed = True
        obj: dict[str, Any] = json.loads(item.value())
        changed = False
        for name, value in obj.items():
            cur = self.fields.get(name)
            if cur is not None and key <= (cur[0], cur[1]):
                continue
            self.fields[name] = (key[0], key[1], value)
            changed = True
        if changed:
            self.fields_changed = True
        return changed

    @property
    def deleted(self) -> bool:
        """True for a tombstone (or an empty row): nothing visible."""
        return not self.fields and self.op in (NO_BASE, Op.DELETE)

    def value(self) -> bytes | None:
        """The visible value, ``None`` when deleted. Needs the payload loaded."""
        if not self.fields:
            if self.op in (Op.INSERT, Op.UPDATE):
                assert self.payload is not None
                return _inflated(self.payload, self.flags)
            return None
        obj: dict[str, Any] = {}
        if self.op in (Op.INSERT, Op.UPDATE):
            assert self.payload is not None
            obj = _as_object(_inflated(self.payload, self.flags))
        for name, (_ts, _origin, val) in self.fields.items():
            obj[name] = val
        return json.dumps(obj, **_CANON).encode()

    @property
    def name(self) -> Name | None:
        """The item's name, ``None`` when nameless. Needs the payload loaded."""
        if not self.flags & NAMED or not self.payload:
            return None
        return read_name(self.payload)[0]

    def versions(self, tier: Tier) -> list[Item]:
        """The versions that reproduce this row on a receiver: base, then MERGEs by key."""
        out: list[Item] = []
        block, mflags = b"", 0
        if self.flags & NAMED and self.payload:
            block, mflags = self.payload[: skip_name(self.payload)], NAMED
        if self.op != NO_BASE:
            assert self.payload is not None
            out.append(
                Item(
                    item_id=self.item_id,
                    timestamp_ns=self.ts,
                    origin=self.origin,
                    tier=tier,
                    op=self.op,
                    priority=self.priority,
                    flags=self.flags,
                    payload=self.payload,
                )
            )
        groups: dict[Key, dict[str, Any]] = {}
        for name, (ts, origin, val) in self.fields.items():
            groups.setdefault((ts, origin), {})[name] = val
        for (ts, origin), obj in sorted(groups.items()):
            out.append(
                Item(
                    item_id=self.item_id,
                    timestamp_ns=ts,
                    origin=origin,
                    tier=tier,
                    op=Op.MERGE,
                    priority=self.priority,
                    flags=mflags,
                    payload=block + json.dumps(obj, **_CANON).encode(),
                )
            )
        return out

    def max_ts(self) -> int:
        """Newest timestamp contributing to the row (drives retention)."""
        return max([self.ts] + [fv[0] for fv in self.fields.values()])


def plain_value(payload: bytes, flags: int) -> bytes:
    """The value of a stored wire payload: no name block, no base, inflated."""
    return _inflated(payload, flags)


def _inflated(payload: bytes, flags: int) -> bytes:
    if flags & (NAMED | BASED):
        payload = payload[value_start(flags, payload) :]
    if flags & PAYLOAD_ZSTD:
        return inflate(payload, 1 << 20, "item.payload", None)
    return payload


def _as_object(data: bytes) -> dict[str, Any]:
    """A base value as a JSON object for MERGE; anything else merges as an empty object."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def name_only_base(flags: int, payload: bytes) -> tuple[int, bytes]:
    """(flags, payload) of the base a row keeps when only MERGE fields remain of it."""
    if flags & NAMED:
        return NAMED, payload[: skip_name(payload)]
    return 0, b""
