"""``meshsyncd bench ...``: benchmarks that print figures; targets live here, not in tests."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Measure the codec, the store and the mesh; print figures (``--json`` for machines)."""


from . import apply as _apply  # noqa: E402,F401
from . import codec as _codec  # noqa: E402,F401
from . import flood as _flood  # noqa: E402,F401
from . import latency as _latency  # noqa: E402,F401
from . import mesh as _mesh  # noqa: E402,F401
from . import names as _names  # noqa: E402,F401
from . import repair as _repair  # noqa: E402,F401
from . import replicate as _replicate  # noqa: E402,F401
from . import sim as _sim  # noqa: E402,F401
from . import topology as _topology  # noqa: E402,F401
