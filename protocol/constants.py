"""Enumerations and limits of the wire format (SPEC.md sections 1 and 2).

Limits live here, in one place, because every decoder checks a declared size against them
before allocating: a peer must never be able to make us reserve memory it merely claims.
"""

from __future__ import annotations

import enum

__all__ = [
    "BASED",
    "BATCH_HEADER_SIZE",
    "BATCH_MAGIC",
    "BATCH_VERSION",
    "BODY_ZSTD",
    "COMPRESS_THRESHOLD",
    "HELLO_MAGIC",
    "ITEM_HEADER_SIZE",
    "ITEM_VERSION",
    "MAX_BATCH_ITEMS",
    "MAX_BATCH_RAW",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "MAX_TEXT",
    "MIN_PROTOCOL_VERSION",
    "NAMED",
    "PAYLOAD_ZSTD",
    "PROTOCOL_VERSION",
    "RESOLVES",
    "ZSTD_LEVEL",
    "ByeCode",
    "Capability",
    "ErrorCode",
    "Op",
    "Priority",
    "Tier",
]

ITEM_VERSION = 2
ITEM_HEADER_SIZE = 48
MAX_PAYLOAD = 1 << 20
PAYLOAD_ZSTD = 0x0001
NAMED = 0x0002  # the payload starts with a name block (SPEC.md section 2.1)
# Bit 2 stays unassigned: the protocol-3 vectors use it as their unknown flag bit.
BASED = 0x0008  # a 16-byte base (timestamp_ns, origin) follows any name block (2.2)
RESOLVES = 0x0010  # with BASED: the write resolves the conflicts its base covers (2.2)

BATCH_MAGIC = b"MSBT"
BATCH_VERSION = 1
BATCH_HEADER_SIZE = 56
BODY_ZSTD = 0x0001
MAX_BATCH_RAW = 16 << 20
MAX_BATCH_ITEMS = 65_536
COMPRESS_THRESHOLD = 1024
ZSTD_LEVEL = 3

HELLO_MAGIC = b"MSYN"
# 2: BARRIER, BARRIER_DONE, RANGES, RANGE_IDS; 3: NAMED items; 4: BASED; 5: HOP_PUSH;
# 6: LINKS (SPEC.md section 6)
PROTOCOL_VERSION = 6
MIN_PROTOCOL_VERSION = 6  # older peers send no LINKS: our trees would miss them; refused
MAX_FRAME = 17 << 20
MAX_TEXT = 1024


class Tier(enum.IntEnum):
    """Memory tier; each has its own sync vectors and retention."""

    WORKING = 0
    EPISODIC = 1
    SEMANTIC = 2


class Op(enum.IntEnum):
    """What an item version does to the stored value."""

    INSERT = 1
    UPDATE = 2
    DELETE = 3
    MERGE = 4
    REPLICATE = 5


class Priority(enum.IntEnum):
    """Delivery urgency: URGENT/HIGH are pushed at once, LOW/BACKGROUND ride the pull."""

    BACKGROUND = 0
    LOW = 1
    NORMAL = 2
    HIGH = 3
    URGENT = 4


class Capability(enum.IntFlag):
    """HELLO capability bits; unknown bits are ignored and preserved."""

    ZSTD = 1 << 0
    MERGE = 1 << 1
    PUSH = 1 << 2
    DIGEST = 1 << 3
    BARRIER = 1 << 4  # protocol 2: BARRIER and BARRIER_DONE
    REPAIR = 1 << 5  # protocol 2: RANGES and RANGE_IDS
    MEMBERSHIP = 1 << 6  # protocol 2: MEMBERS and PRUNE


class ErrorCode(enum.IntEnum):
    """Codes carried by an ERROR frame."""

    PROTOCOL = 1
    FORBIDDEN = 2
    CLOCK_SKEW = 3
    LIMIT = 4
    INTERNAL = 5
    UNKNOWN_PEER = 6


class ByeCode(enum.IntEnum):
    """Codes carried by a BYE frame."""

    NORMAL = 0
    SHUTDOWN = 1
    DUPLICATE = 2
    REMOVED = 3
