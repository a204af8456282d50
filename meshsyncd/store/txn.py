"""The transaction hooks every store mixin calls, declared once.

Why its own module: ``core.Store`` owns the connection's transactions (``_begin``,
``_commit`` with its fault hook and checkpoint poke, ``_rollback`` that reloads every
in-memory tail) and the bucket digests; the mixins that write (the fold, the history tail,
maintenance, the write path) only call them. Declaring them here, in a base every such mixin
shares, keeps one copy of the declarations, and C3 ordering puts this base after all the
mixins, so it can never shadow a real method, whatever the order of ``Store``'s bases.
"""

from __future__ import annotations

import sqlite3

__all__ = ["TxnHooks"]


class TxnHooks:
    """Declarations only: :class:`meshsyncd.store.core.Store` defines each of them."""

    _conn: sqlite3.Connection

    def _begin(self, synchronous: str) -> None:
        raise NotImplementedError  # core.Store

    def _commit(self) -> None:
        raise NotImplementedError  # core.Store

    def _rollback(self) -> None:
        raise NotImplementedError  # core.Store

    def _write_buckets(self, tier: int, deltas: dict[int, int]) -> None:
        raise NotImplementedError  # core.Store
