"""Hypothesis strategies for valid wire input: items, batches and every frame family (SPEC.md
sections 2-4.5), and ``mutated``, which breaks a valid encoding.

Why its own module: ``test_schema_agreement.py`` compares the two codecs (``protocol`` and
``protocol.schema``) on these inputs; what a valid input of each frame family looks like
grows with every new frame, how the two sides are compared does not. Kept apart, each file
stays readable, and a new frame family adds its strategy here and its normaliser there.
"""

from __future__ import annotations

import json

import zstandard
from hypothesis import strategies as st

import protocol
from protocol.constants import PAYLOAD_ZSTD

U64 = st.integers(0, (1 << 64) - 1)
U32 = st.integers(0, (1 << 32) - 1)
U16 = st.integers(0, (1 << 16) - 1)
TIERS = st.sampled_from(list(protocol.Tier))
_ZSTD = zstandard.ZstdCompressor(write_content_size=True, write_checksum=False)

JSON_OBJECTS = st.dictionaries(
    st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.booleans()), max_size=4
)


# Labels: any text but the separator (surrogates cannot be encoded), keys: any text.
LABELS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), min_size=1, max_size=6
)
KEYS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def items(draw: st.DrawFn, tier: protocol.Tier | None = None) -> protocol.Item:
    op = draw(st.sampled_from(list(protocol.Op)))
    if op == protocol.Op.DELETE:
        value = b""
    elif op == protocol.Op.MERGE:
        value = json.dumps(draw(JSON_OBJECTS)).encode()
    else:
        value = draw(st.binary(max_size=300))
    flags = 0
    if value and draw(st.booleans()):
        value, flags = _ZSTD.compress(value), PAYLOAD_ZSTD
    item_id = draw(st.binary(min_size=16, max_size=16))
    if draw(st.booleans()):  # a NAMED item (SPEC.md section 2.1)
        block = protocol.name_block(tuple(draw(st.lists(LABELS, max_size=3))), draw(KEYS))
        value, flags, item_id = block + value, flags | protocol.NAMED, protocol.name_id(block)
    if op != protocol.Op.REPLICATE and draw(st.booleans()):  # BASED (SPEC.md section 2.2)
        base = (draw(U64), draw(U64))
        flags, value = protocol.with_base(flags, value, base, resolves=draw(st.booleans()))
    return protocol.Item(
        item_id=item_id,
        timestamp_ns=draw(U64),
        origin=draw(U64),
        tier=draw(TIERS) if tier is None else tier,
        op=op,
        priority=draw(st.sampled_from(list(protocol.Priority))),
        flags=flags,
        payload=value,
    )


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    tier = draw(TIERS)
    batch = protocol.Batch(
        batch_id=draw(st.binary(min_size=16, max_size=16)),
        source=draw(U64),
        target=draw(U64),
        tier=tier,
        items=tuple(draw(st.lists(items(tier), max_size=8))),
    )
    return protocol.pack_batch(batch, compress=draw(st.sampled_from([None, True, False])))


@st.composite
def frames(draw: st.DrawFn) -> protocol.Frame:
    kind = draw(st.sampled_from(sorted(protocol.FRAME_TYPES)))
    cls = protocol.FRAME_TYPES[kind]
    b16, b32 = st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)
    if cls is protocol.Hello:
        return protocol.Hello(
            version=draw(st.integers(1, 0xFFFF)),
            node_id=draw(b32),
            incarnation=draw(b16),
            capabilities=draw(U32),
            timestamp_ns=draw(U64),
        )
    if cls is protocol.Pull:
        return protocol.Pull(
            request_id=draw(U32),
            tier=draw(TIERS),
            after_seq=draw(U64),
            max_items=draw(st.integers(1, protocol.MAX_BATCH_ITEMS)),
            max_bytes=draw(st.integers(1, protocol.MAX_BATCH_RAW)),
        )
    if cls is protocol.BatchFrame:
        low, high = sorted((draw(U64), draw(U64)))
        return protocol.BatchFrame(
            request_id=draw(U32), from_seq=low, to_seq=high, more=draw(st.booleans()),
            batch=draw(batches()),
        )  # fmt: skip
    if cls is protocol.Ack:
        return protocol.Ack(request_id=draw(U32), tier=draw(TIERS), seq=draw(U64))
    if cls is protocol.Push:
        return protocol.Push(batch=draw(batches()))
    if cls is protocol.HopPush:
        return protocol.HopPush(hops=draw(st.integers(0, protocol.MAX_HOPS)), batch=draw(batches()))
    if cls is protocol.Replicate:
        return protocol.Replicate(request_id=draw(U32), tier=draw(TIERS), item_id=draw(b16))
    if cls is protocol.Ping:
        return protocol.Ping(nonce=draw(U64), timestamp_ns=draw(U64))
    if cls is protocol.Pong:
        return protocol.Pong(nonce=draw(U64), echo_ns=draw(U64), timestamp_ns=draw(U64))
    if cls is protocol.Error or cls is protocol.Bye:
        code, text = draw(U16), draw(st.text(max_size=40))
        if cls is protocol.Error:
            return protocol.Error(code=code, text=text)
        return protocol.Bye(code=code, text=text)
    if cls is protocol.Digest:
        return protocol.Digest(tier=draw(TIERS), seq=draw(U64), digest=draw(b32))
    if cls in (protocol.Members, protocol.Prune):
        return draw(member_frames(cls))
    if cls is protocol.Links:
        return draw(link_frames())
    return draw(mesh_frames(cls))


@st.composite
def link_frames(draw: st.DrawFn) -> protocol.Frame:
    """LINKS (SPEC.md 4.5): records sorted by node id, peers sorted and never the node."""
    ids = draw(st.lists(st.binary(min_size=32, max_size=32), max_size=4, unique=True))
    records = []
    for node_id in sorted(ids):
        own = protocol.short_id(node_id)
        peers = sorted(set(draw(st.lists(U64, max_size=5))) - {own})
        records.append(protocol.LinkRecord(node_id, draw(U64), tuple(peers)))
    return protocol.Links(records=tuple(records))


HOSTS = st.text(alphabet="abcxyz0189.-_:", max_size=protocol.memberframes.HOST_FIELD)


@st.composite
def member_frames(draw: st.DrawFn, cls: type[protocol.Frame]) -> protocol.Frame:
    """The membership frames (SPEC.md 4.3): records sorted by node id, origins sorted."""
    if cls is protocol.Prune:
        origins = tuple(sorted(set(draw(st.lists(U64, max_size=6)))))
        return protocol.Prune(graft=draw(st.booleans()), origins=origins)
    kind = draw(st.sampled_from(protocol.MemberKind))
    ids = (
        []
        if kind == protocol.MemberKind.ASK
        else draw(st.lists(st.binary(min_size=32, max_size=32), max_size=4, unique=True))
    )
    members = tuple(
        protocol.Member(
            node_id,
            draw(st.sampled_from(protocol.MemberState)),
            draw(st.integers(0, 7)),
            draw(st.integers(0, 7)),
            draw(U64),
            draw(HOSTS),
            draw(U16),
        )
        for node_id in sorted(ids)
    )
    return protocol.Members(kind=kind, members=members)


@st.composite
def mesh_frames(draw: st.DrawFn, cls: type[protocol.Frame]) -> protocol.Frame:
    """The protocol-2 frames: barrier and range reconciliation (sorted, disjoint ranges)."""
    b16 = st.binary(min_size=16, max_size=16)
    if cls is protocol.Barrier:
        budget = draw(st.integers(1, protocol.MAX_BARRIER_BUDGET_MS))
        return protocol.Barrier(
            barrier_id=draw(b16), budget_ms=budget, hops=draw(st.integers(0, 255))
        )
    if cls is protocol.BarrierDone:
        nodes = draw(
            st.lists(
                st.tuples(st.binary(min_size=32, max_size=32), st.sampled_from(protocol.NodeState)),
                max_size=4,
            )
        )
        status = draw(st.sampled_from(protocol.BarrierStatus))
        return protocol.BarrierDone(barrier_id=draw(b16), status=status, nodes=tuple(nodes))
    cuts = sorted(set(draw(st.lists(st.integers(0, (1 << 128) - 1), max_size=8))))
    bounds = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    head = {"request_id": draw(U32), "tier": draw(TIERS), "reply": draw(st.booleans())}
    if cls is protocol.Ranges:
        ranges = tuple(
            protocol.RangeDigest(
                lo.to_bytes(16, "big"), hi.to_bytes(16, "big"), draw(U32), draw(b16)
            )
            for lo, hi in bounds
        )
        return protocol.Ranges(**head, ranges=ranges)
    assert cls is protocol.RangeIds
    lists = []
    for lo, hi in bounds:
        ids = sorted(set(draw(st.lists(st.integers(lo, hi), max_size=3))))
        entries = tuple(
            (i.to_bytes(16, "big"), draw(st.binary(min_size=8, max_size=8))) for i in ids
        )
        lists.append(protocol.RangeList(lo.to_bytes(16, "big"), hi.to_bytes(16, "big"), entries))
    return protocol.RangeIds(**head, ranges=tuple(lists))


@st.composite
def mutated(draw: st.DrawFn, valid: bytes, hot: int) -> bytes:
    """Break ``valid``: flip bytes (mostly in the first ``hot`` bytes), cut it or extend it."""
    data = bytearray(valid)
    how = draw(st.sampled_from(["flip", "flip", "cut", "extend", "random"]))
    if how == "random":
        return draw(st.binary(max_size=2 * len(valid) + 8))
    if how == "cut":
        return bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    if how == "extend":
        return bytes(data) + draw(st.binary(min_size=1, max_size=8))
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        limit = min(hot, len(data)) if draw(st.booleans()) else len(data)
        data[draw(st.integers(0, limit - 1))] = draw(st.integers(0, 255))
    return bytes(data)
