"""A Bloom filter over the item ids of one tier's ``ids`` table.

Why: most versions a node receives are of items it has never seen, and asking the ``ids``
b-tree about a random 128-bit id costs a leaf page that is rarely in SQLite's cache once
the store holds a million items. The filter answers "certainly not there" from memory for
all but a few percent of new ids; the store then skips the lookup. A "maybe" is always
checked against the table, so a false positive costs one lookup and never a wrong answer.

Theory of operation: ``BITS_PER_ID`` bits per id of capacity, three probes. The probe
positions come from a multiplicative hash of the whole id (every id byte affects the high
bits of the product), so ids that differ only in a few bytes still spread over the array;
ids crafted to collide only cost lookups. Deleting from ``ids`` leaves bits set (still
correct). The filter is persisted as one blob per tier, rewritten when the tail is folded
into ``ids``; when the ids added since the last rebuild exceed the capacity the store
rebuilds it from ``ids`` at twice the size, so rebuilds cost O(1) per id amortised.

The loops below are the reference; ``_filter.c`` (built where a compiler is, skipped by
``MESHSYNCD_PURE_PYTHON=1``) sets and tests the same bits per batch of ids, 15-20 times faster:
in Python a new item's test and add cost ~1.5 us, a tenth of its whole apply into a store of
a million.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

__all__ = ["BITS_PER_ID", "IdFilter"]

BITS_PER_ID = 8  # 3% false positives when full, far fewer right after a rebuild
MIN_CAPACITY = 1 << 17  # 128 KiB: small stores never rebuild
_MUL = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd 128-bit constant (golden ratio digits)
_MASK128 = (1 << 128) - 1


_SLICE = 4096  # ids per C call when adding from an iterator (a cursor over a whole table)


def _load_speedups() -> tuple[Callable[..., Any], Callable[..., Any]] | tuple[None, None]:
    """The C batch functions, unless disabled or not built."""
    if os.environ.get("MESHSYNCD_PURE_PYTHON"):
        return None, None
    try:
        from . import _filter
    except ImportError:
        return None, None
    return _filter.add_all, _filter.maybe


_c_add_all, _c_maybe = _load_speedups()


class IdFilter:
    """Bloom filter of 16-byte ids; ``count`` is the number of ids added (an upper bound)."""

    __slots__ = ("_mask", "_shift", "bits", "count")

    def __init__(self, bits: bytearray, count: int = 0) -> None:
        nbits = len(bits) * 8
        if nbits < 8 or nbits & (nbits - 1):
            raise ValueError("filter size must be a power of two bytes")
        self.bits = bits
        self.count = count
        self._mask = nbits - 1
        self._shift = nbits.bit_length() - 1  # bits per probe position

    @classmethod
    def for_capacity(cls, capacity: int) -> IdFilter:
        nbits = 8
        while nbits < max(capacity, MIN_CAPACITY) * BITS_PER_ID:
            nbits <<= 1
        return cls(bytearray(nbits // 8))

    @property
    def capacity(self) -> int:
        return len(self.bits) * 8 // BITS_PER_ID

    def add_all(self, ids: Iterable[bytes]) -> None:
        if _c_add_all is not None:
            if isinstance(ids, list):
                _c_add_all(self.bits, ids, self._shift)
                self.count += len(ids)
                return
            it = iter(ids)  # a cursor over a whole table: in slices, never all in memory
            while batch := list(islice(it, _SLICE)):
                _c_add_all(self.bits, batch, self._shift)
                self.count += len(batch)
            return
        bits, mask, shift = self.bits, self._mask, self._shift
        s1, s2, s3 = 125 - shift, 125 - 2 * shift, 125 - 3 * shift
        n = 0
        for iid in ids:  # unrolled: this loop runs once per id the store ever folds
            h = (int.from_bytes(iid, "little") * _MUL) & _MASK128
            pos = h >> s1 & mask
            bits[pos >> 3] |= 1 << (pos & 7)
            pos = h >> s2 & mask
            bits[pos >> 3] |= 1 << (pos & 7)
            pos = h >> s3 & mask
            bits[pos >> 3] |= 1 << (pos & 7)
            n += 1
        self.count += n

    def maybe(self, ids: list[bytes]) -> list[bytes]:
        """The ids of ``ids`` that may be stored (all three bits set), in order."""
        if _c_maybe is not None:
            found: list[bytes] = _c_maybe(self.bits, ids, self._shift)
            return found
        return [iid for iid in ids if iid in self]

    def __contains__(self, iid: bytes) -> bool:
        bits, mask, shift = self.bits, self._mask, self._shift
        h = (int.from_bytes(iid, "little") * _MUL) & _MASK128
        pos = (h >> 125 - shift) & mask
        if not bits[pos >> 3] >> (pos & 7) & 1:
            return False
        pos = (h >> 125 - 2 * shift) & mask
        if not bits[pos >> 3] >> (pos & 7) & 1:
            return False
        pos = (h >> 125 - 3 * shift) & mask
        return bool(bits[pos >> 3] >> (pos & 7) & 1)
