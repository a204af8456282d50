"""The C item scanner and the pure-Python decoder must agree on every input.

The scanner only accepts the plain happy path and hands everything else to Python, so any
disagreement (different objects, a different error, a different offset) is a bug in C.
"""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol as P
from protocol import item as item_mod

pytestmark = pytest.mark.skipif(item_mod._scan is None, reason="C accelerator not built")


def _both(data: bytes, count: int, tier: int | None) -> tuple[object, object]:
    def run(fast: bool) -> object:
        saved = item_mod._scan
        item_mod._scan = saved if fast else None
        try:
            return ("ok", item_mod.unpack_items(data, count, tier=tier))
        except P.ProtocolError as exc:
            return ("error", type(exc).__name__, exc.field, exc.offset, exc.reason)
        finally:
            item_mod._scan = saved

    return run(True), run(False)


_item = st.builds(
    lambda iid, ts, tier, op, body, zstd: P.Item(
        item_id=iid,
        timestamp_ns=ts,
        origin=ts ^ 0xFFFF,
        tier=tier,
        op=op,
        payload=b""
        if op == P.Op.DELETE
        else (json.dumps({"k": body.hex()}).encode() if op == P.Op.MERGE else body),
    ),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 2**64 - 1),
    st.sampled_from(P.Tier),
    st.sampled_from(P.Op),
    st.binary(max_size=64),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_item, max_size=12),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3),
    st.integers(0, 14),
    st.sampled_from([None, 0, 1, 2]),
)
def test_scanner_agrees_with_python(
    items: list[P.Item], flips: list[tuple[int, int]], count: int, tier: int | None
) -> None:
    data = bytearray(P.pack_items(items))
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    fast, slow = _both(bytes(data), count, tier)
    assert fast == slow


def test_scanner_used_and_identical_on_vectors() -> None:
    items = [
        P.Item(item_id=bytes([i]) * 16, timestamp_ns=i, origin=1, tier=1, op=op, payload=b"")
        for i, op in enumerate([P.Op.INSERT, P.Op.DELETE, P.Op.REPLICATE, P.Op.UPDATE])
    ]
    data = P.pack_items(items)
    fast, slow = _both(data, len(items), 1)
    assert fast == slow == ("ok", items)
    out: list[P.Item] = []
    assert item_mod._scan is not None
    named: list[tuple[int, int, int]] = []
    end = item_mod._scan(
        data, 0, 0, 4, P.Item, item_mod._TIERS, item_mod._OPS, item_mod._PRIOS, out, -1, named
    )
    assert end == (len(data), 4) and out == items and named == []
    assert all(type(i) is P.Item for i in out)


_LABEL = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(_LABEL.map(lambda t: t.replace("/", "_")), max_size=3),
            _LABEL,
            st.sampled_from([P.Op.INSERT, P.Op.UPDATE, P.Op.DELETE, P.Op.REPLICATE]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=3),
    st.integers(0, 5),
)
def test_scanner_agrees_on_named_items_with_broken_names(
    names: list[tuple[list[str], str, P.Op]], flips: list[tuple[int, int]], which: int
) -> None:
    """NAMED items: C checks the block's form, Python the id; both give the same result,
    also when bytes inside a name block change under a CRC that still matches."""
    items = []
    for n, (labels, key, op) in enumerate(names):
        block = P.name_block(tuple(labels), key)
        items.append(
            P.Item(
                item_id=P.name_id(block),
                timestamp_ns=n,
                origin=1,
                tier=0,
                op=op,
                flags=P.NAMED,
                payload=block + (b"" if op == P.Op.DELETE else b"v%d" % n),
            )
        )
    target = items[which % len(items)]
    payload = bytearray(target.payload)
    for pos, value in flips:
        payload[pos % len(payload)] = value
    head = bytearray(P.pack_item(target)[:44])
    head[40:44] = len(payload).to_bytes(4, "big")
    crc = zlib.crc32(bytes(payload), zlib.crc32(bytes(head)))
    broken = bytes(head) + crc.to_bytes(4, "big") + bytes(payload)
    data = b"".join(broken if i is target else P.pack_item(i) for i in items)
    fast, slow = _both(data, len(items), 0)
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from([P.Op.INSERT, P.Op.UPDATE, P.Op.DELETE, P.Op.MERGE]),
            st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 5),
    st.integers(-18, 2),
)
def test_scanner_agrees_on_based_items(
    specs: list[tuple[bool, P.Op, tuple[int, int], bool]], which: int, cut: int
) -> None:
    """BASED items (SPEC.md section 2.2), named or not, RESOLVES too; one of them has its
    payload cut or grown under a matching CRC (a truncated base, a DELETE with a value)."""
    items = []
    for n, (named, op, base, resolves) in enumerate(specs):
        block = P.name_block(("ns",), f"k{n}") if named else b""
        value = b"" if op == P.Op.DELETE else (b'{"f":1}' if op == P.Op.MERGE else b"v%d" % n)
        flags, payload = P.with_base(
            P.NAMED if named else 0, block + value, base, resolves=resolves
        )
        items.append(
            P.Item(
                item_id=P.name_id(block) if named else bytes([n]) * 16,
                timestamp_ns=n,
                origin=2,
                tier=1,
                op=op,
                flags=flags,
                payload=payload,
            )
        )
    fast, slow = _both(P.pack_items(items), len(items), 1)
    assert fast == slow == ("ok", items)
    target = items[which % len(items)]
    payload = target.payload[: max(0, len(target.payload) + cut)] if cut < 0 else target.payload
    payload += b"x" * max(0, cut)
    head = bytearray(P.pack_item(target)[:44])
    head[40:44] = len(payload).to_bytes(4, "big")
    crc = zlib.crc32(payload, zlib.crc32(bytes(head)))
    broken = bytes(head) + crc.to_bytes(4, "big") + payload
    data = b"".join(broken if i is target else P.pack_item(i) for i in items)
    fast, slow = _both(data, len(items), 1)
    assert fast == slow


def test_scanner_takes_based_items_itself() -> None:
    """The common BASED versions stay on the C path (no fallback per item)."""
    block = P.name_block(("a",), "k")
    items = []
    for n, (named, op) in enumerate(
        [(False, P.Op.INSERT), (True, P.Op.UPDATE), (True, P.Op.DELETE)]
    ):
        flags, payload = P.with_base(
            P.NAMED if named else 0, (block if named else b"") + (b"" if op == 3 else b"v"), (n, 9)
        )
        iid = P.name_id(block) if named else bytes([n]) * 16
        items.append(
            P.Item(
                item_id=iid, timestamp_ns=n, origin=1, tier=1, op=op, flags=flags, payload=payload
            )
        )
    data = P.pack_items(items)
    out: list[P.Item] = []
    named: list[tuple[int, int, int]] = []
    assert item_mod._scan is not None
    end = item_mod._scan(
        data, 0, 0, 3, P.Item, item_mod._TIERS, item_mod._OPS, item_mod._PRIOS, out, -1, named
    )
    assert end == (len(data), 3) and out == items
    assert [i.base for i in out] == [(0, 9), (1, 9), (2, 9)]
