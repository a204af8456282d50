"""``bench repair`` at a small size: the figures it prints come from a real exchange."""

from __future__ import annotations

from meshsyncd.bench.repair import run_repair_bench


def test_one_differing_item_is_repaired_in_three_round_trips() -> None:
    result = run_repair_bench(20_000)
    assert result["converged"] and result["items_fetched"] == 1
    assert result["round_trips"] <= 3 and result["bytes"] <= 32 * 1024
    assert result["ok"]
