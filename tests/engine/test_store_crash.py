"""A batch and its cursor commit together or not at all, even across a kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import trio

from meshsyncd.store import AsyncStore, Store
from protocol import Item, Op, Tier

T = Tier.EPISODIC
PEER = 0xA1


def batch(n: int, start: int = 0, order: Literal["big", "little"] = "big") -> list[Item]:
    return [
        Item(
            item_id=(start + i).to_bytes(16, order),
            timestamp_ns=1000 + start + i,
            origin=PEER,
            tier=T,
            op=Op.INSERT,
            payload=b"p" * 200,
        )
        for i in range(n)
    ]


class Boom(Exception):
    pass


def test_exception_before_commit_leaves_no_trace(tmp_path: Path) -> None:
    def fault(point: str) -> None:
        raise Boom(point)

    with Store.open(tmp_path / "s.db") as store:
        store.apply(T, batch(10), peer=PEER, to_seq=10)
        digest, seq = store.digest(T), store.tier_seq(T)
        store.fault = fault
        with pytest.raises(Boom):
            store.apply(T, batch(10, 10), peer=PEER, to_seq=20)
        assert (store.digest(T), store.tier_seq(T), store.count(T)) == (digest, seq, 10)
        assert store.cursor(PEER, T) == 10
        store.fault = None
        store.apply(T, batch(10, 10), peer=PEER, to_seq=20)
        assert store.count(T) == 20 and store.cursor(PEER, T) == 20


CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {test_dir!r})
    from test_store_crash import batch, PEER, T
    from meshsyncd.store import Store

    def die(point):
        os._exit(9)  # like kill -9: no rollback, no close, no atexit

    store = Store.open({path!r}, fault=die if {crash!r} else None)
    store.apply(T, batch(5000), peer=PEER, to_seq=5000)
    store.close()
    """
)


@pytest.mark.parametrize("crash", [True, False])
def test_killed_mid_apply_then_reopened(tmp_path: Path, crash: bool) -> None:
    path = tmp_path / "k.db"
    with Store.open(path) as store:
        store.apply(T, batch(3, 90_000), peer=PEER, to_seq=3)
        before = store.digest(T)
    code = CHILD.format(test_dir=str(Path(__file__).parent), path=str(path), crash=crash)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert proc.returncode == (9 if crash else 0)
    with Store.open(path) as store:
        if crash:
            assert store.count(T) == 3
            assert store.cursor(PEER, T) == 3
            assert store.digest(T) == before
        else:
            assert store.count(T) == 5003
            assert store.cursor(PEER, T) == 5000
            assert store.tier_seq(T) == 5003


async def test_async_facade_runs_off_the_trio_thread(tmp_path: Path) -> None:
    astore = await AsyncStore.open(str(tmp_path / "a.db"))
    try:
        async with trio.open_nursery() as nursery:
            for k in range(4):
                nursery.start_soon(astore.apply, T, batch(50, k * 50))
        assert await astore.run(astore.store.count, T) == 200
        seq, row = await astore.get_row(T, (7).to_bytes(16, "big")) or (0, None)
        assert seq > 0 and row is not None and row.value() == b"p" * 200
        assert len(await astore.rows_since(T, 0, 500)) == 200
        assert await astore.digest(T) != bytes(32)
    finally:
        await astore.aclose()


FOLD_CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {test_dir!r})
    from test_store_crash import batch, PEER, T
    from meshsyncd.store import Store

    store = Store.open({path!r}, tail_limit=2000, fold_entries=300)
    store.apply(T, batch(2500, 10_000, "little"), peer=PEER, to_seq=2500)  # no inline fold
    store.tail_limit = 500  # about seven steps due
    steps = 0
    def die(point):
        global steps
        steps += 1
        if steps == {kill_at}:
            os._exit(9)
    store.fault = die
    while store.maintenance_step():
        pass
    os._exit(0)
    """
)


@pytest.mark.parametrize("kill_at", [1, 3])
def test_killed_mid_fold_step_then_reopened(tmp_path: Path, kill_at: int) -> None:
    path = tmp_path / "f.db"
    code = FOLD_CHILD.format(test_dir=str(Path(__file__).parent), path=str(path), kill_at=kill_at)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert proc.returncode == 9
    with Store.open(path, tail_limit=1000, fold_entries=300) as store:
        assert store.count(T) == 2500 and store.cursor(PEER, T) == 2500
        spread = batch(2500, 10_000, "little")  # ids in every bucket
        assert 0 < len(store._tail[int(T)]) <= 2500
        for item in spread:
            found = store.get_row(T, item.item_id)
            assert found is not None and found[1].value() == b"p" * 200
        assert store.apply(T, spread).applied == 0  # all duplicates
        assert store.count(T) == 2500
        while store.maintenance_step():
            pass
        assert store.apply(T, spread).applied == 0


def test_checkpointer_keeps_the_wal_small_and_closes_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    with Store.open(path) as store:
        for k in range(40):
            store.apply(T, batch(500, k * 500), peer=PEER, to_seq=(k + 1) * 500)
        assert store._checkpointer is not None
        cp = store._checkpointer
    assert not cp._thread.is_alive() and cp.runs > 0 and cp.errors == 0
    # 20,000 rows (~5 MB) went through a WAL that was checkpointed beside the writer.
    assert not (tmp_path / "w.db-wal").exists() or (tmp_path / "w.db-wal").stat().st_size < 8 << 20
    with Store.open(path, checkpointer=False) as store:
        assert store.count(T) == 20_000 and store._checkpointer is None
