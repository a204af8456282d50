"""sd_notify from a real ``meshsyncd run`` to a real NOTIFY_SOCKET, and the Notifier alone."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from servicekit import Node, NotifySocket, wait_for

from meshsyncd.client import Client
from meshsyncd.node.notify import Notifier


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_watchdog_reload_stop_in_order(tmp_path: Path, abstract: bool) -> None:
    sock = NotifySocket(abstract=abstract)
    node = Node(tmp_path, "a")
    node.env |= sock.env(watchdog_usec=400_000)
    try:
        node.start()
        sock.wait("READY")
        ready_at = len(sock.messages)
        sock.wait("WATCHDOG", count=3, timeout=5)  # every 0.2 s: half of 400 ms
        assert any("WATCHDOG" in m for m in sock.messages[ready_at:])
        assert "STATUS" in sock.messages[0] and "peers connected" in sock.messages[0]["STATUS"]
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        sock.wait("READY", count=2)
        reloading = next(m for m in sock.messages if m.get("RELOADING") == "1")
        usec = int(reloading["MONOTONIC_USEC"])
        assert 0 < usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert node.stop(signal.SIGTERM) == 0
        sock.drain()
        assert sock.events() == ["READY", "RELOADING", "READY", "STOPPING"]
        pings_before_stop = [m for m in sock.messages if "WATCHDOG" in m]
        assert len(pings_before_stop) >= 3
    finally:
        if node.proc is not None:
            node.stop(signal.SIGKILL)
        sock.close()


def test_broken_config_reload_keeps_serving(tmp_path: Path, notify: NotifySocket) -> None:
    node = Node(tmp_path, "a")
    node.env |= notify.env()
    try:
        node.start()
        notify.wait("READY")
        good = node.config.read_text()
        node.config.write_text(good + "\nlisten = [[[ broken\n")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        notify.wait("READY", count=2)
        assert notify.events() == ["READY", "RELOADING", "READY"]
        assert "STATUS" in notify.messages[-1]  # READY after the refusal carries a status
        wait_for(
            lambda: any(e.get("event", "").startswith("reload refused") for e in node.logs()),
            10,
            "the refusal in the log",
        )
        with Client(node.socket, timeout=10) as c:
            assert c.status()["node_id"] == node.node_id
            c.put("still here", tier="semantic", key="k")
            assert c.get(tier="semantic", key="k")["value"] == "still here"
        node.config.write_text(good)
        assert node.stop() == 0
        notify.drain()
        assert notify.events()[-1] == "STOPPING"
    finally:
        if node.proc is not None:
            node.stop(signal.SIGKILL)


def test_status_line_counts_items(tmp_path: Path, notify: NotifySocket) -> None:
    node = Node(tmp_path, "a")
    node.env |= notify.env()
    try:
        node.start()
        with Client(node.socket, timeout=10) as c:
            for n in range(3):
                c.put(f"v{n}", tier="working", key=f"k{n}")
        wait_for(
            lambda: any("3 items stored" in m.get("STATUS", "") for m in notify.drain(0.2)),
            15,
            "a STATUS line with the item count",
        )
    finally:
        if node.proc is not None:
            assert node.stop() == 0


# -- the Notifier on its own -------------------------------------------------------------


def test_unset_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog_interval is None
    assert notifier.statistics()["failures"] == 0


def test_messages_and_status_on_one_line(notify: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify.env_value})
    assert notifier.ready("two\nlines")
    assert notifier.status("ok")
    assert notifier.stopping()
    notify.drain()
    assert notify.messages == [
        {"READY": "1", "STATUS": "two lines"},
        {"STATUS": "ok"},
        {"STOPPING": "1"},
    ]
    assert notifier.statistics()["sent"] == 3


def test_send_failure_is_counted_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.watchdog_ping() is False
    assert notifier.ready() is False
    stats = notifier.statistics()
    assert stats["failures"] == 2 and "FileNotFoundError" in stats["last_error"]


def test_full_receiver_queue_does_not_block(notify: NotifySocket) -> None:
    notify.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    notifier = Notifier({"NOTIFY_SOCKET": notify.env_value})
    started = time.monotonic()
    results = [notifier.status("x" * 500) for _ in range(2000)]
    assert time.monotonic() - started < 2
    assert not all(results) and notifier.failures > 0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "400000"}, 0.2),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval == expected


async def test_watchdog_loop_pings_at_half_the_timeout(
    notify: NotifySocket, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify.env_value, "WATCHDOG_USEC": "2000000"})
    with trio.move_on_after(3.5):
        await notifier.watchdog_loop()
    notify.drain()
    assert notify.messages == [{"WATCHDOG": "1"}] * 4  # at 0, 1, 2 and 3 s


async def test_status_loop_sends_changes_only(
    notify: NotifySocket, autojump_clock: trio.testing.MockClock
) -> None:
    texts = iter(["a", "a", "b"])
    notifier = Notifier({"NOTIFY_SOCKET": notify.env_value})

    async def describe() -> str:
        return next(texts, "b")

    with trio.move_on_after(10):
        await notifier.status_loop(describe, every=1.0)
    notify.drain()
    assert notify.messages == [{"STATUS": "a"}, {"STATUS": "b"}]


async def test_loops_return_without_a_socket() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000"})
    await notifier.watchdog_loop()
    await notifier.status_loop(lambda: "x")
