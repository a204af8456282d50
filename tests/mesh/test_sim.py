"""The deterministic simulation (``meshsyncd bench sim``): real sessions, relay, membership
and stores, in model time. Figures are model time and counts, so they are exact per seed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from meshsyncd.bench.sim import CONVERGE_TIMEOUT, run_sim


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """A hundred nodes' session logs would only slow the run down."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.configure(**saved)


def _model(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "wall_s"}


def test_hundred_nodes_join_by_one_introducer_survive_partition_and_churn() -> None:
    f = run_sim(100, seed=3, writes=2, partition_items=10, churn=True)
    # every node learnt every other from the introducer, then ran without it
    assert f["join"]["introduced_all_s"] < 300
    # max_peers bounds live sessions, accepted ones included
    assert f["join"]["max_sessions"] <= 8
    assert f["after_introducer_left"]["max_sessions"] <= 8
    for phase in ("urgent_first_write", "urgent"):
        assert f[phase]["reached"] == 1.0
    # once an origin's tree is built: at most 2N frames (pushes, pulls, prunes, grafts),
    # no duplicates, and hops from the wire's hop counts within one of the session graph's
    # BFS distances (the tree moved to shorter parents, not the fastest first arrivals)
    tree = f["urgent"]
    assert tree["messages_per_write"] <= 2 * 100
    assert tree["duplicates_per_node"] <= 0.1
    assert tree["hops_p99"] <= tree["bfs_eccentricity"] + 1
    assert tree["hops_p99"] <= 6
    assert tree["messages_per_write"] < f["gossip_model"]["urgent"]["messages_per_write"]
    # an origin's first write follows the link-state tree too (it used to flood: about
    # N x degree pushes): within 2N, reaching everyone, shortest paths
    first = f["urgent_first_write"]
    assert first["messages_per_write"] <= 2 * 100
    assert first["prunes_grafts_per_write"] <= 20
    assert first["hops_p99"] <= first["bfs_eccentricity"] + 1
    # the link state's own traffic is counted apart, not hidden in the write's
    links = f["link_state"]
    assert links["startup"]["records"] > 0 and links["one_crash"]["frames"] > 0
    # the cut held (nothing crossed it), and after the heal everything converged
    heal = f["partition_heal"]
    assert heal["cross_sessions_before_heal"] == 0
    assert heal["items_everywhere_before_heal"] == 0
    assert heal["converged_s"] < CONVERGE_TIMEOUT
    assert heal["sync_intervals"] <= 3
    # crashed nodes came back (same stores) and every digest agrees
    assert f["churn"]["converged"]


def test_a_run_is_reproducible_from_its_seed() -> None:
    a = run_sim(16, seed=5, writes=1, partition_items=2)
    b = run_sim(16, seed=5, writes=1, partition_items=2)
    assert _model(a) == _model(b)
    assert _model(run_sim(16, seed=6, writes=1, partition_items=2)) != _model(a)
