"""``meshsyncd demo``: a three-node mesh on loopback, written to, synced, shown, removed.

Interim form (until the daemon of issue 4 lands): the three nodes run in this one process,
each with its own SQLite store in a temporary directory, and talk the real wire protocol
over real loopback TCP sockets (no TLS yet). Every tier and every priority is written on a
different node; URGENT and HIGH writes are pushed at once, the rest ride the pull.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import trio

from protocol import Item, Op, Priority, Tier

from .engine import AsyncEngine, Engine
from .session import Session, SessionClosed
from .store import Store


@dataclass
class DemoNode:
    name: str
    engine: Engine
    node_id: bytes
    aengine: AsyncEngine = field(init=False)
    port: int = 0
    sessions: dict[str, Session] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One AsyncEngine (one serial worker) per node: every session shares the one writer.
        self.aengine = AsyncEngine(self.engine)


async def _serve(
    node: DemoNode, nodes: dict[bytes, DemoNode], listener: trio.SocketListener
) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            nursery.start_soon(_run_session, node, nodes, stream, None)


async def _run_session(
    node: DemoNode, nodes: dict[bytes, DemoNode], stream: trio.abc.Stream, peer: DemoNode | None
) -> None:
    session = Session(
        node.aengine,
        stream,
        node_id=node.node_id,
        peer_id=peer.node_id if peer else None,
        pull_interval=30.0,
        ping_interval=0.2,
    )
    async with stream, trio.open_nursery() as nursery:

        async def register() -> None:
            await session._hello_seen.wait()
            assert session.peer_hello is not None
            node.sessions[nodes[session.peer_hello.node_id].name] = session
            if (
                sum(len(n.sessions) for n in nodes.values())
                == 2 * (len(nodes) - 1) * len(nodes) // 2
            ):
                _ALL_OPEN.set()

        nursery.start_soon(register)
        with contextlib.suppress(SessionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            await session.run()
        nursery.cancel_scope.cancel()


_ALL_OPEN = trio.Event()


async def _write_everything(nodes: list[DemoNode]) -> list[tuple[str, Tier, Priority, Item]]:
    writes: list[tuple[str, Tier, Priority, Item]] = []
    for i, tier in enumerate(Tier):
        for prio in Priority:
            node = nodes[(i + prio) % len(nodes)]
            item_id = os.urandom(16)
            doc = {"tier": tier.name, "priority": prio.name, "by": node.name, "text": "demo memory"}
            item = await node.aengine.write(
                tier, item_id, Op.INSERT, json.dumps(doc).encode(), priority=prio
            )
            if prio >= Priority.HIGH:
                for session in node.sessions.values():
                    session.push_nowait(item)
            writes.append((node.name, tier, prio, item))
    # one conflict: two nodes write the same item; the later key must win everywhere
    shared = b"c" * 16
    await nodes[0].aengine.write(Tier.SEMANTIC, shared, Op.INSERT, b'{"fact": "from A"}')
    await nodes[1].aengine.write(Tier.SEMANTIC, shared, Op.INSERT, b'{"fact": "from B"}')
    await nodes[2].aengine.write(Tier.SEMANTIC, shared, Op.MERGE, b'{"extra": "merged by C"}')
    return writes


async def run_demo() -> bool:
    global _ALL_OPEN
    _ALL_OPEN = trio.Event()
    echo = click.echo
    with tempfile.TemporaryDirectory(prefix="meshsyncd-demo-") as tmp:
        names = ["A", "B", "C"]
        nodes = []
        for name in names:
            node_id = os.urandom(32)
            store = Store.open(Path(tmp) / f"{name}.db")
            nodes.append(DemoNode(name, Engine(store, node_id=node_id), node_id))
        by_id = {n.node_id: n for n in nodes}
        echo(f"demo: three nodes in {tmp}")
        try:
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                    node.port = listeners[0].socket.getsockname()[1]
                    nursery.start_soon(_serve, node, by_id, listeners[0])
                    echo(f"  node {node.name}  id {node.node_id.hex()[:16]}  127.0.0.1:{node.port}")
                for i, node in enumerate(nodes):
                    for peer in nodes[i + 1 :]:
                        stream = await trio.open_tcp_stream("127.0.0.1", peer.port)
                        nursery.start_soon(_run_session, node, by_id, stream, peer)
                with trio.fail_after(10):
                    await _ALL_OPEN.wait()
                started = time.perf_counter()
                writes = await _write_everything(nodes)
                echo(f"demo: wrote {len(writes) + 3} items (every tier x priority, one conflict)")
                with trio.fail_after(20):
                    for _ in range(2):  # second round carries what the first one learned
                        for node in nodes:
                            for session in node.sessions.values():
                                await session.wait_synced()
                elapsed = (time.perf_counter() - started) * 1000
                await trio.sleep(0.3)  # let a keepalive measure RTT for the table
                nursery.cancel_scope.cancel()
            # Sessions are stopped: the stores are read from this thread alone now.
            _show(nodes, elapsed)
            converged = all(len({n.engine.digest(t) for n in nodes}) == 1 for t in Tier)
        finally:
            for node in nodes:
                node.engine.store.close()
        echo(f"demo: {'converged' if converged else 'NOT converged'}; removed {tmp}")
        return converged


def _show(nodes: list[DemoNode], elapsed_ms: float) -> None:
    echo = click.echo
    echo("")
    echo(f"{'node':<5}{'peer':<6}{'rtt ms':>8}{'items in':>10}{'items out':>11}{'batches in':>12}")
    for node in nodes:
        for name, s in sorted(node.sessions.items()):
            rtt = f"{s.stats.rtt_ms:.2f}" if s.stats.rtt_ms is not None else "-"
            echo(
                f"{node.name:<5}{name:<6}{rtt:>8}{s.stats.items_in:>10}{s.stats.items_out:>11}"
                f"{s.stats.batches_in:>12}"
            )
    echo("")
    echo(f"{'tier':<10}" + "".join(f"{'digest ' + n.name:>20}" for n in nodes) + f"{'items':>8}")
    for tier in Tier:
        digests = "".join(f"{n.engine.digest(tier).hex()[:16]:>20}" for n in nodes)
        echo(f"{tier.name:<10}{digests}{nodes[0].engine.store.count(tier):>8}")
    item = nodes[2].engine.get(Tier.SEMANTIC, b"c" * 16)
    value = item.value.decode() if item is not None and item.value is not None else None
    echo(f"\nconflict winner on every node: {value}")
    echo(f"synced in {elapsed_ms:.0f} ms\n")


@click.command("demo")
def demo() -> None:
    """Start a three-node mesh on loopback, write to it, show peers and digests, clean up.

    \b
    Example:
      meshsyncd demo
    """
    ok = trio.run(run_demo)
    if not ok:
        raise SystemExit(1)
