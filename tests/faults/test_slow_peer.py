"""A peer that reads at 10 KiB/s during a large transfer: the sender's memory stays bounded.

``a`` holds an EPISODIC tier of about 80 MiB of incompressible items. The slow peer ``s`` (a
configured identity driven by hand) asks for all of it, pipelining far more PULLs than the
two a real node keeps outstanding, then reads 1 KiB every 0.1 s. Meanwhile ``a`` keeps
syncing with ``b`` (which receives only WORKING and SEMANTIC from ``a``, so no bulk of its own
muddies the measure).

The bound: a session holds at most a few chunks of at most 256 KiB raw (``CHUNK_BYTES``):
the one being written, one in the bulk queue, one being prepared, plus 16 queued PULL
requests (tiny), TLS and socket buffers: a few MiB (about 5 MiB measured). 32 MiB over the
baseline leaves room for SQLite's page cache and allocator slack while staying well below
the ~80 MiB (and, as Python objects, several times that) that buffering the tier for the
slow reader would cost.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

import trio
from evilpeer import EvilPeer, read_until_closed
from faultnodes import Fleet, preload, wait_for

import protocol as P

ITEMS = 20_000
ITEM_BYTES = 4096  # base64 of random bytes: zstd cannot shrink it much
RATE = 10 * 1024  # bytes per second the slow peer reads
SAMPLE_FOR = 20.0
BOUND_KIB = 32 * 1024


def test_slow_reader_does_not_grow_the_senders_memory(fleet: Fleet) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    for n in (a, b):
        n.set_option("sync_interval", "1s")
    a.add_peer(b, None, "--tiers", "working,semantic")
    b.add_peer(a)
    slow = EvilPeer(fleet.node("s"), a)
    raw = ITEM_BYTES * 3 // 4
    preload(a, ITEMS, payload=lambda n: base64.b64encode(os.urandom(raw)))
    a.start()
    b.start()
    wait_for(lambda: a.connected_to(b), 20, "a and b to connect")
    baseline = max(a.rss_kib() for _ in range(3) if time.sleep(0.3) is None)
    samples: list[int] = []
    latencies: list[float] = []
    received = 0

    async def slow_reader() -> None:
        nonlocal received
        stream = await slow.connect()
        async with stream:
            conn = P.Connection()
            hello = slow.hello(conn)
            pulls = b"".join(
                conn.send(
                    P.Pull(
                        request_id=i + 1,
                        tier=P.Tier.EPISODIC,
                        after_seq=0,
                        max_items=P.MAX_BATCH_ITEMS,
                        max_bytes=P.MAX_BATCH_RAW,
                    )
                )
                for i in range(64)
            )
            await stream.send_all(hello + pulls)
            with trio.move_on_after(SAMPLE_FOR):
                while True:
                    data = await stream.receive_some(RATE // 10)
                    assert data, "a closed the slow peer's connection"
                    received += len(data)
                    await trio.sleep(0.1)

    async def sampler() -> None:
        end = trio.current_time() + SAMPLE_FOR
        while trio.current_time() < end:
            samples.append(a.rss_kib())
            await trio.sleep(0.5)

    async def urgent_writes() -> None:
        for i in range(3):
            await trio.sleep(SAMPLE_FOR / 4)
            latencies.append(await trio.to_thread.run_sync(_urgent_roundtrip, i))

    def _urgent_roundtrip(i: int) -> float:
        start = time.monotonic()
        with a.client() as cl:
            cl.put(f"urgent {i}", tier="working", key=f"u{i}", priority="urgent")
        with b.client() as cl:
            wait_for(lambda: _has(cl, f"u{i}"), 10, f"urgent write {i} to reach b", every=0.02)
        return time.monotonic() - start

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            nursery.start_soon(sampler)
            nursery.start_soon(urgent_writes)

    trio.run(main)
    growth = max(samples) - baseline
    print(
        f"baseline {baseline} KiB, peak {max(samples)} KiB, growth {growth} KiB, "
        f"slow peer read {received} bytes, urgent latencies {latencies}"
    )
    assert received < 2 * RATE * SAMPLE_FOR, "the slow peer was not slow"
    assert received > 0, "the slow peer got nothing"
    assert growth < BOUND_KIB, f"a grew by {growth} KiB serving a slow reader"
    assert len(latencies) == 3 and max(latencies) < 3.0, latencies
    assert a.alive


def _has(cl: object, key: str) -> bool:
    from meshsyncd.client import Client, ClientError

    assert isinstance(cl, Client)
    try:
        cl.get(tier="working", key=key)
        return True
    except ClientError:
        return False


def test_error_frame_reaches_a_peer_behind_bulk_data(fleet: Fleet) -> None:
    """A peer with bulk data in flight (the sender's writer is blocked in ``send_all``)
    sends a bad frame: it must still be told why, after the data already on its way."""
    a = fleet.node("a")
    peer = EvilPeer(fleet.node("s"), a)
    raw = ITEM_BYTES * 3 // 4
    preload(a, 2_000, payload=lambda n: base64.b64encode(os.urandom(raw)))
    a.start()

    async def attack() -> list[P.Frame]:
        stream = await peer.connect()
        stream.transport_stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with stream:
            conn = P.Connection()
            data = peer.hello(conn)
            for i in range(18):  # ~18 chunks of 256 KiB: more than the socket buffers hold
                pull = P.Pull(
                    request_id=i + 1,
                    tier=P.Tier.EPISODIC,
                    after_seq=0,
                    max_items=P.MAX_BATCH_ITEMS,
                    max_bytes=P.MAX_BATCH_RAW,
                )
                data += conn.send(pull)
            await stream.send_all(data)
            await trio.sleep(1.0)  # a's writer is now blocked on our full receive window
            await stream.send_all(struct.pack(">IB", 1, 0x7F))  # unknown frame type
            return await read_until_closed(stream, conn, 20)

    frames = trio.run(attack)
    wait_for(lambda: bool(a.log_events("protocol error", peer=peer.me.short)), 10, "a's log")
    errors = [f for f in frames if isinstance(f, P.Error)]
    assert errors and errors[0].code == P.ErrorCode.PROTOCOL, [type(f).__name__ for f in frames]
