"""Store: named items are indexed, listed by namespace prefix with stable paging, and keep
their name through tombstones, MERGE-only rows, re-sent versions and purges."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshsyncd.store import Store
from meshsyncd.store.maintenance import DAY_NS
from meshsyncd.store.nametail import unpack_log
from protocol import NAMED, Item, Name, Op, Tier, name_block, name_id

T = Tier.EPISODIC


def nv(
    ns: tuple[str, ...],
    key: str,
    ts: int,
    op: Op = Op.INSERT,
    value: bytes = b"{}",
    origin: int = 1,
) -> Item:
    block = name_block(ns, key)
    return Item(
        item_id=name_id(block),
        timestamp_ns=ts,
        origin=origin,
        tier=T,
        op=op,
        flags=NAMED,
        payload=block + (b"" if op == Op.DELETE else value),
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "s.db", tail_limit=64, fold_entries=16)
    yield s  # type: ignore[misc]
    s.close()


def names(store: Store, prefix: tuple[str, ...] = (), **kw: object) -> list[tuple[str, ...]]:
    found, _ = store.list_names(T, prefix, limit=1000, **kw)  # type: ignore[arg-type]
    return [(*name.namespace, name.key) for _seq, _row, name in found]


def test_prefix_listing_is_in_name_order_and_skips_tombstones(store: Store) -> None:
    store.apply(
        T,
        [
            nv(("agents", "alden", "prefs"), "units", 10),
            nv(("agents", "alden", "prefs"), "tz", 11),
            nv(("agents", "alden"), "mood", 12),
            nv(("agents", "aldenX"), "other", 13),  # shares a text prefix, not a namespace
            nv(("agents",), "roster", 14),
            nv(("kb",), "fact", 15),
            nv((), "root", 16),
        ],
    )
    store.apply(T, [nv(("agents", "alden", "prefs"), "tz", 20, Op.DELETE)])
    assert names(store, ("agents", "alden")) == [
        ("agents", "alden", "mood"),
        ("agents", "alden", "prefs", "units"),
    ]
    assert len(names(store)) == 6
    assert ("agents", "alden", "prefs", "tz") in names(store, include_deleted=True)
    found, more = store.list_names(T, ("agents", "alden", "prefs"), limit=5)
    assert more is None
    assert found[0][2] == Name(("agents", "alden", "prefs"), "units")
    assert found[0][1].value() == b"{}"


def test_paging_is_stable_while_writes_continue(store: Store) -> None:
    """Every item present for the whole listing is listed exactly once, in name order."""
    keys = [f"k{i:03d}" for i in range(0, 200, 2)]
    store.apply(T, [nv(("p",), k, 100 + i) for i, k in enumerate(keys)])
    seen: list[str] = []
    after = None
    ts = itertools.count(1000)
    for page in itertools.count():
        found, after = store.list_names(T, ("p",), after=after, limit=7)
        seen.extend(name.key for _s, _r, name in found)
        # Between pages: new keys on both sides of the cursor, updates that move rows.
        store.apply(
            T,
            [
                nv(("p",), f"k{2 * page + 1:03d}", next(ts)),
                nv(("p",), keys[(page * 7) % len(keys)], next(ts), Op.UPDATE, b'{"v":2}'),
            ],
        )
        if after is None:
            break
    assert seen == sorted(set(seen))
    assert set(keys) <= set(seen)


def test_a_merge_only_row_keeps_its_name_and_resends_it(store: Store, tmp_path: Path) -> None:
    store.apply(T, [nv(("a",), "m", 10, Op.MERGE, b'{"x":1}')])
    _seq, row = store.rows_since(T, 0, 10)[0]
    assert row.name == Name(("a",), "m")
    versions = row.versions(T)
    assert [v.name for v in versions] == [Name(("a",), "m")]
    other = Store.open(tmp_path / "o.db")
    try:
        other.apply(T, versions)
        assert other.digest(T) == store.digest(T)
        assert [n.key for _s, _r, n in other.list_names(T, ("a",))[0]] == ["m"]
    finally:
        other.close()


def test_purged_tombstones_leave_the_index(store: Store) -> None:
    store.apply(T, [nv(("a",), "gone", 10), nv(("a",), "kept", 11)])
    store.apply(T, [nv(("a",), "gone", 12, Op.DELETE)])
    store.record_ack(7, T, store.tier_seq(T))
    assert store.purge_tombstones([7], grace_ns=0, now_ns=13 + DAY_NS) == 1
    # Both halves of the index: new names wait in names_log until folded (nametail.py).
    folded = [r[0] for r in store._conn.execute("SELECT key FROM names")]
    logged = store._conn.execute("SELECT tier, entries FROM names_log").fetchall()
    assert folded + [e[2] for t, blob in logged for e in unpack_log(t, blob)] == ["kept"]


VERSIONS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from([Op.INSERT, Op.UPDATE, Op.DELETE, Op.MERGE]),
        st.integers(1, 30),
        st.integers(1, 3),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda v: (v[2], v[3]),  # one version per key: equal keys are duplicates
)


@settings(max_examples=40, deadline=None)
@given(VERSIONS, st.randoms())
def test_named_versions_converge_in_any_order(
    tmp_path_factory: pytest.TempPathFactory, spec: list[tuple[str, Op, int, int]], rnd: object
) -> None:
    """Digest, values and names agree whatever the delivery order (MERGE-only rows too)."""
    versions = [
        nv(("ns",), key, ts, op, b'{"f%d":%d}' % (origin, ts), origin)
        for key, op, ts, origin in spec
    ]
    shuffled = list(versions)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    d = tmp_path_factory.mktemp("conv")
    one, two = Store.open(d / "1.db"), Store.open(d / "2.db")
    try:
        one.apply(T, versions)
        for item in shuffled:
            two.apply(T, [item])
        assert one.digest(T) == two.digest(T)
        a = {n: r.value() for _s, r, n in one.list_names(T, include_deleted=True)[0]}
        b = {n: r.value() for _s, r, n in two.list_names(T, include_deleted=True)[0]}
        assert a == b
    finally:
        one.close()
        two.close()


def _nameless(item: Item, ts: int, value: bytes, op: Op = Op.UPDATE) -> Item:
    """A version of ``item``'s id that carries no name (a write by id alone)."""
    return Item(
        item_id=item.item_id,
        timestamp_ns=ts,
        origin=2,
        tier=T,
        op=op,
        payload=b"" if op == Op.DELETE else value,
    )


def test_a_named_version_over_a_nameless_row_is_indexed(store: Store) -> None:
    """The reverse mismatch: the id was written by id first, then by its name."""
    named = nv(("m",), "late", 20, value=b"named")
    store.apply(T, [_nameless(named, 10, b"by-id", Op.INSERT)])
    assert names(store, ("m",)) == []
    store.apply(T, [named])
    found, _ = store.list_names(T, ("m",))
    assert [(n.key, r.value()) for _s, r, n in found] == [("late", b"named")]


def test_a_nameless_version_winning_over_a_named_row_stays_listed(store: Store) -> None:
    """A peer's nameless version of a named item's id wins by the conflict order: the item
    is still listed under its name (its id is the name's), with the winning value."""
    named = nv(("m",), "k", 10, value=b"named")
    store.apply(T, [named])
    store.apply(T, [_nameless(named, 20, b"by-id")])
    found, _ = store.list_names(T, ("m",))
    assert [(n.key, r.value()) for _s, r, n in found] == [("k", b"by-id")]


def test_a_page_shows_the_value_get_shows_for_every_payload_form(tmp_path: Path) -> None:
    """``list``'s page builder (``control/listing.py``) slices values out of wire payloads
    without parsing the name: plain, based (local writes), compressed, merged, binary,
    non-ASCII names; each must equal what ``get`` reads."""
    from enginekit import Node

    from meshsyncd.control.listing import list_page

    node = Node(tmp_path / "n.db", origin=5)
    e = node.engine
    try:
        cases = [
            (("p", "\u00e9t\u00e9"), "k\u00fc", b"plain text", False),
            (("p",), "zipped", b'{"a": "' + b"z" * 500 + b'"}', True),
            (("p",), "binary", b"\xff\xfe\x00", False),
        ]
        for ns, key, value, compress in cases:
            block = name_block(ns, key)
            e.write(T, name_id(block), Op.INSERT, value, name=block, compress=compress)
        block = name_block(("p",), "merged")
        e.write(T, name_id(block), Op.INSERT, b'{"a": 1}', name=block)
        e.write(T, name_id(block), Op.MERGE, b'{"b": 2}', name=block)
        items, more = list_page(node.store, T, ("p",), None, 100)
        assert more is None and len(items) == 4
        for item in items:
            got = e.get(T, bytes.fromhex(item["item_id"]))
            assert got is not None and got.value is not None
            text = item.get("value")
            raw = text.encode() if text is not None else base64.b64decode(item["value_b64"])
            assert raw == got.value and item["size"] == len(got.value)
            assert ("value_b64" in item) == (item["key"] == "binary")
    finally:
        node.close()
