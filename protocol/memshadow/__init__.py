"""MEMSHADOW v2 memory-sync batches: a strict, bounded codec (SPEC.md section 8).

MEMSHADOW (github.com/SWORDIntel/MEMSHADOW) is the system our item header is modelled on;
teams moving from it need to read its memory-sync batches and to write ones it can read. Its
own reader trusts its input (it inflates gzip without a bound, drops a bad item with a
warning and reads on); this codec holds those bytes to the contract of ours: every declared
length is checked against a limit before anything is allocated or inflated, every field
against its domain, and any fault is a ``ProtocolError`` naming the field and offset.

Pure like the rest of ``protocol``: bytes in, objects out. The rules that ``meshsyncd
import`` applies to ids and origins are here too (:func:`import_item_id`,
:func:`import_origin`), so that every implementation can compute the same ids.
"""

from __future__ import annotations

from ._decode import layout_memshadow, parse_memshadow, unpack_memshadow
from ._model import (
    COMPRESS_THRESHOLD,
    FALLBACK_HEADER_SIZE,
    FALLBACK_MAGIC,
    HEADER_SIZE,
    ITEM_SIZE,
    MAGIC,
    MAX_ITEM_PAYLOAD,
    MAX_ITEMS,
    MAX_ITEMS_RAW,
    MAX_METADATA,
    MAX_PAYLOAD_LEN,
    MEMORY_SYNC,
    VERSION,
    HeaderPriority,
    MemshadowBatch,
    MemshadowItem,
    MemshadowLayout,
    MsTier,
    SyncFlag,
    import_item_id,
    import_origin,
    is_memshadow,
    metadata_json,
    pack_memshadow,
)

__all__ = [
    "COMPRESS_THRESHOLD",
    "FALLBACK_HEADER_SIZE",
    "FALLBACK_MAGIC",
    "HEADER_SIZE",
    "ITEM_SIZE",
    "MAGIC",
    "MAX_ITEMS",
    "MAX_ITEMS_RAW",
    "MAX_ITEM_PAYLOAD",
    "MAX_METADATA",
    "MAX_PAYLOAD_LEN",
    "MEMORY_SYNC",
    "VERSION",
    "HeaderPriority",
    "MemshadowBatch",
    "MemshadowItem",
    "MemshadowLayout",
    "MsTier",
    "SyncFlag",
    "import_item_id",
    "import_origin",
    "is_memshadow",
    "layout_memshadow",
    "metadata_json",
    "pack_memshadow",
    "parse_memshadow",
    "unpack_memshadow",
]
