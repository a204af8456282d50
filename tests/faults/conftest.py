"""Fixtures of the fault suite: a fleet of real daemons stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultnodes import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Nodes made through this fleet are stopped (SIGTERM, then SIGKILL) whatever happens."""
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()
