"""What we write, read by the REAL MEMSHADOW reference (opt-in: it is not available in CI).

Set ``MESHSYNCD_MEMSHADOW_REF`` to a git directory of github.com/SWORDIntel/MEMSHADOW (the
``fetch`` tool leaves one in ``/work/.mirror/SWORDIntel+MEMSHADOW/repo``). The reference
modules are copied out of it into a temporary directory, as ``make_memshadow_vectors.py``
does, and its own ``MemorySyncBatch.unpack`` reads batches from our ``pack_memshadow``: it
must see exactly the items we wrote, and agree with ``memshadow_refimpl.ref_unpack``, the
stand-in the CI tests use.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from make_memshadow_vectors import extract, run_driver
from memshadow_refimpl import ref_unpack

from protocol import Op, Priority
from protocol import memshadow as MS

REF = os.environ.get("MESHSYNCD_MEMSHADOW_REF")
pytestmark = pytest.mark.skipif(not REF, reason="MESHSYNCD_MEMSHADOW_REF is not set")


def _batches() -> dict[str, bytes]:
    def item(
        n: int, tier: int = 2, op: Op = Op.INSERT, iid: bytes | None = None
    ) -> MS.MemshadowItem:
        payload = b"" if op in (Op.DELETE, Op.REPLICATE) else json.dumps({"n": n}).encode()
        return MS.MemshadowItem(
            item_id=iid if iid is not None else b"%032x" % n,
            timestamp_ns=1_800_000_000_000_000_000 + n,
            tier=tier,
            op=op,
            priority=Priority(n % 5),
            payload=payload,
        )

    def batch(
        items: tuple[MS.MemshadowItem, ...],
        *,
        tier: int = 2,
        flags: int = 0x04,
        fallback: bool = False,
    ) -> MS.MemshadowBatch:
        return MS.MemshadowBatch(
            batch_id="ours",
            source_node="meshsyncd-node",
            target_node="",
            tier=MS.MsTier(tier),
            items=items,
            flags=flags,
            fallback=fallback,
        )

    ops = tuple(item(i, op=op) for i, op in enumerate(Op))
    out = {
        "plain-every-op": MS.pack_memshadow(batch(ops)),
        "gzip-255": MS.pack_memshadow(batch(tuple(item(i) for i in range(255)))),
        "forced-gzip-small": MS.pack_memshadow(batch(ops), compress=True),
        "fallback": MS.pack_memshadow(batch(ops, fallback=True)),
        "odd-ids": MS.pack_memshadow(
            batch(tuple(item(i, iid=x) for i, x in enumerate([b"a", "é".encode(), b"x" * 32])))
        ),
        "cross-tier": MS.pack_memshadow(
            batch(tuple(item(t, tier=t) for t in (1, 2, 3)), flags=0x20, tier=1)
        ),
        "empty": MS.pack_memshadow(batch(())),
    }
    return out


def test_the_real_reference_reads_what_we_write() -> None:
    assert REF is not None
    ours = _batches()
    extra = Path(os.environ.get("MESHSYNCD_MEMSHADOW_EXTRA", "/nonexistent"))
    for path in sorted(extra.glob("*.bin")) if extra.is_dir() else []:
        ours[f"extra-{path.name}"] = path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="memshadow-ref-") as tmp:
        extract(Path(REF), Path(tmp))
        seen = run_driver(Path(tmp), "unpack", json.dumps({k: v.hex() for k, v in ours.items()}))
    for name, data in ours.items():
        real = seen[name]
        assert "raises" not in real, (name, real)
        batch = MS.parse_memshadow(data)
        assert len(real["items"]) == len(batch.items), name
        for got, want in zip(real["items"], batch.items, strict=True):
            assert got["item_id"] == want.item_id_text
            assert (got["timestamp_ns"], got["tier"], got["op"], got["priority"]) == (
                want.timestamp_ns,
                want.tier,
                want.op,
                want.priority,
            )
            assert bytes.fromhex(got["payload_hex"]) == want.payload
        assert (real["batch_id"], real["tier"]) == (batch.batch_id, batch.tier)
        assert ref_unpack(data) == real, name
