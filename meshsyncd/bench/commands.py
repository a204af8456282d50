"""``meshsyncd bench ...``: benchmarks that print figures; targets live here, not in tests.

Each bench is imported when it is run, not when the group is: a bench's process then holds
only what that bench uses (``bench apply`` measures its own peak RSS, and importing every
bench, the simulator and ``trio.testing`` with it, cost ~40 MiB of it).
"""

from __future__ import annotations

from ..commands.cli import LazyGroup

bench = LazyGroup(
    "bench",
    help="Measure the codec, the store and the mesh; print figures (``--json`` for machines).",
    lazy={
        "apply": "meshsyncd.bench.apply:apply_cmd",
        "codec": "meshsyncd.bench.codec:codec",
        "flood": "meshsyncd.bench.flood:flood",
        "latency": "meshsyncd.bench.latency:latency",
        "mesh": "meshsyncd.bench.topology:mesh_cmd",
        "names": "meshsyncd.bench.names:names_cmd",
        "repair": "meshsyncd.bench.repair:repair_cmd",
        "replicate": "meshsyncd.bench.replicate:replicate",
        "sim": "meshsyncd.bench.sim:sim_cmd",
    },
)
