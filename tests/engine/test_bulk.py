"""``bulk.insert_rows``: every count of rows, in order, through the four statement sizes."""

from __future__ import annotations

import sqlite3

import pytest

from meshsyncd.store.bulk import insert_rows


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 16, 63, 64, 65, 85, 125, 200])
def test_every_row_lands_once_in_order(count: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (n INTEGER, b BLOB, s TEXT)")
    rows = [(n, bytes([n % 256]) * 3, None if n % 2 else f"r{n}") for n in range(count)]
    insert_rows(conn, "INSERT INTO t (n, b, s)", 3, rows)
    assert conn.execute("SELECT n, b, s FROM t ORDER BY rowid").fetchall() == rows


def test_a_key_written_twice_keeps_the_later_row() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    rows = [(k % 7, f"v{k}") for k in range(70)]  # one 64-row chunk, then smaller ones
    insert_rows(conn, "INSERT OR REPLACE INTO t (k, v)", 2, rows)
    want = {k % 7: f"v{k}" for k in range(70)}
    assert dict(conn.execute("SELECT k, v FROM t").fetchall()) == want


def test_an_error_names_the_cause() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        insert_rows(conn, "INSERT INTO t (k)", 1, [(1,), (2,), (1,)])
