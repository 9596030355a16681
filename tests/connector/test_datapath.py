"""The connector's DataPath and Closer in this process, under trio, with real rings (no
mount): attach refusals that change nothing, the close order, the bound on the join."""

from __future__ import annotations

import errno
import socket
import threading

import pytest
import trio

from vbusfs.connector._datapath import Closer, DataPath
from vbusfs.device import (
    DeviceConnection,
    DeviceNames,
    Ioq,
    IoqClosed,
    Queues,
    VbusError,
    request_response_queues,
)

SPECS = request_response_queues(64, 64, max_count=16)
NAMES = DeviceNames("t", "D", "B/0")


class Recorder(DeviceConnection):
    """Records what happened, in order; `stuck` seconds of ignoring the stop."""

    def __init__(self, stuck: float = 0.0) -> None:
        self.events: list[str] = []
        self.stuck = stuck
        self.queues: Queues | None = None

    def serve(self, queues: Queues) -> None:
        self.queues = queues
        self.events.append("serve")
        try:
            queues[0].wait_receivable()
        except IoqClosed:
            self.events.append("stopped")
            if self.stuck:
                threading.Event().wait(self.stuck)
            raise
        finally:
            self.events.append("serve returned")

    def close(self) -> None:
        assert self.queues is not None
        rings_open = not any(ring.closed for ring in self.queues.values())
        self.events.append(f"close (rings open: {rings_open})")


def north_rings() -> dict[int, Ioq]:
    return {
        0: Ioq.create(4, 64, direction="to_south"),
        1: Ioq.create(4, 64, direction="to_north"),
    }


def test_the_close_order_and_a_refused_attach_that_changes_nothing(monkeypatch):
    north = north_rings()
    device = Recorder()
    hangup, client_end = socket.socketpair()

    async def main() -> None:
        path = DataPath(device, SPECS, NAMES, hangup, lambda *_: None)
        closer = Closer(bound=2.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(closer.run)
            path.attach(0, north[0].fds, "to_south")
            # the second queue, with no thread to be had: refused, nothing kept
            monkeypatch.setattr(threading.Thread, "start", _no_thread)
            with pytest.raises(VbusError) as info:
                path.attach(1, north[1].fds, "to_north")
            assert info.value.errno == errno.EAGAIN and "cannot start the loop" in str(info.value)
            assert sorted(path.rings) == [0] and path.thread is None
            monkeypatch.undo()
            path.attach(1, north[1].fds, "to_north")
            assert path.running
            with trio.fail_after(5):
                while "serve" not in device.events:
                    await trio.sleep(0.01)
            closer.close(path)
            with trio.fail_after(5):
                await path.ended.wait()
            await trio.sleep(0)
            nursery.cancel_scope.cancel()
        assert path.closed and all(ring.closed for ring in path.rings.values())

    try:
        trio.run(main)
        assert device.events == ["serve", "stopped", "serve returned", "close (rings open: True)"]
        # the client's hang-up closed last: its end reads the end of the stream
        assert client_end.recv(1) == b""
    finally:
        client_end.close()
        for ring in north.values():
            ring.close()


def _no_thread(self: threading.Thread) -> None:
    raise RuntimeError("can't start new thread")


def test_a_loop_ignoring_the_stop_is_abandoned_at_the_bound_then_closed(caplog):
    north = north_rings()
    device = Recorder(stuck=1.0)
    hangup, client_end = socket.socketpair()

    async def main() -> None:
        path = DataPath(device, SPECS, NAMES, hangup, lambda *_: None)
        closer = Closer(bound=0.2)
        async with trio.open_nursery() as nursery:
            await nursery.start(closer.run)
            path.attach(0, north[0].fds, None)
            path.attach(1, north[1].fds, None)
            with trio.fail_after(5):
                while "serve" not in device.events:
                    await trio.sleep(0.01)
            started = trio.current_time()
            closer.close(path)
            with trio.fail_after(5):
                while "its loop did not stop" not in caplog.text:
                    await trio.sleep(0.01)
            assert trio.current_time() - started < 0.9
            # let go: the client's hang-up is closed, the rings are not
            assert hangup.fileno() == -1 and not any(r.closed for r in path.rings.values())
            assert not path.closed
            with trio.fail_after(5):
                await path.ended.wait()
            await trio.sleep(0)
            assert path.closed
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
        assert device.events[-1] == "close (rings open: True)"
        # the bound it was given, not the default 2 s
        assert "t device D interface B/0: its loop did not stop within 0.2 s" in caplog.text
    finally:
        client_end.close()
        for ring in north.values():
            ring.close()


def test_an_undeclared_or_repeated_queue_is_refused():
    north = north_rings()

    async def main() -> None:
        path = DataPath(Recorder(), SPECS, NAMES, None, lambda *_: None)
        with pytest.raises(VbusError, match="t has no queue 5") as info:
            path.attach(5, north[0].fds, None)
        assert info.value.errno == errno.EINVAL
        path.attach(0, north[0].fds, None)
        with pytest.raises(VbusError, match="is already attached") as info:
            path.attach(0, north[0].fds, None)
        assert info.value.errno == errno.EBUSY
        with pytest.raises(VbusError, match="direction must be a string"):
            path.attach(1, north[1].fds, 7)
        assert sorted(path.rings) == [0]
        path.close_now()
        assert path.closed and path.rings[0].closed

    try:
        trio.run(main)
    finally:
        for ring in north.values():
            ring.close()
