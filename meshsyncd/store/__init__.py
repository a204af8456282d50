"""Durable node state: SQLite (WAL) store, one writer, plus its async facade.

See ``core.py`` for the theory of operation, ``schema.py`` for the layout and migrations and
``rows.py`` for the conflict order applied to one item.
"""

from __future__ import annotations

from .aio import AsyncStore
from .conflicts import Conflict
from .core import DEFAULT_RETENTION_NS, ApplyResult, Store, StoredItem
from .maintenance import DAY_NS
from .rows import Row
from .schema import SCHEMA_VERSION, SchemaError

__all__ = [
    "DAY_NS",
    "DEFAULT_RETENTION_NS",
    "SCHEMA_VERSION",
    "ApplyResult",
    "AsyncStore",
    "Conflict",
    "Row",
    "SchemaError",
    "Store",
    "StoredItem",
]
