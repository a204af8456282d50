"""Self-check: the stored bucket digests recomputed from the rows they summarise.

Theory of operation (DESIGN.md "The mesh", Repair): every apply moves a row's hash into its
bucket digest in the same transaction, so the digests are exact as long as only meshsyncd
writes the file. A row deleted or edited with ``sqlite3`` while the daemon was stopped, a
restored file, or a bug breaks that, and then the digests claim data the node does not
hold: the peers' digest comparison (SPEC.md 4.2) cannot see the difference. So the store
checks itself: :func:`verify_bucket` sums the row hashes of one bucket (first id byte) and,
if the sum is not the stored digest, rewrites the digest to match the rows. From then on the
tier digest differs from the peers' and reconciliation finds and fetches what is missing.

Why per bucket, in one call: a bucket is the unit the store keeps a digest for, and the
sum and the stored value can only be compared when no write lands between the two reads.
One call on the store's serial worker gives that; between its chunks of rows it asks
``yield_to()`` whether an urgent call waits and, if so, gives up (``None``) so the caller
retries the bucket later: an urgent write waits for one chunk (~1 ms), never a bucket.

What it cannot see: a row edited in a way that keeps its stored ``bhash`` and ``fields``
(e.g. only its payload bytes): the row hash is read, not recomputed from the payload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol import Tier

from .ranges import read_range
from .rows import MOD

if TYPE_CHECKING:
    from .core import Store

__all__ = ["BucketCheck", "verify_bucket"]


@dataclass(frozen=True, slots=True)
class BucketCheck:
    """One bucket checked: its rows, and the stored digest before and after the check."""

    tier: Tier
    bucket: int
    rows: int
    stored: int
    actual: int

    @property
    def fixed(self) -> bool:
        return self.stored != self.actual


def verify_bucket(
    store: Store, tier: Tier, bucket: int, yield_to: Callable[[], bool] | None = None
) -> BucketCheck | None:
    """Check one bucket's stored digest against its rows; rewrite it if they differ.

    Returns ``None`` when it gave way to urgent work (nothing changed; check it again).

    Raises:
        sqlite3.Error: the disk failed; the stored digest did not change.
    """
    t = int(tier)
    lo, hi = bytes([bucket]) + bytes(15), bytes([bucket]) + b"\xff" * 15
    total = rows = 0
    after: bytes | None = None
    while True:
        chunk, after = read_range(store, tier, lo, hi, after)
        rows += len(chunk)
        total += sum(h for _, h in chunk)
        if after is None:
            break
        if yield_to is not None and yield_to():
            return None
    actual = total % MOD
    stored = store._buckets[t][bucket]
    if actual != stored:
        store._begin(store.local_synchronous)
        try:
            store._write_buckets(t, {bucket: actual - stored})
            store._commit()
        except BaseException:
            store._rollback()
            raise
    return BucketCheck(Tier(tier), bucket, rows, stored, actual)
