"""The client's request/response drivers (sync and trio) against a device loop in this
process over real rings: the window, order, complete_into, reposting, the hang-up."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
import trio

from vbusfs.client import AsyncRequestResponseClient, RequestResponseClient
from vbusfs.device import (
    DeviceNames,
    Ioq,
    IoqClosed,
    Queues,
    RequestResponseConnection,
    request_response_queues,
)

SPECS = {s.index: s for s in request_response_queues(4096, 4096)}


class Echo(RequestResponseConnection):
    def __init__(self) -> None:
        self.handled = 0
        self.hold = threading.Event()
        self.hold.set()

    def handle(self, request: memoryview, response: memoryview) -> int:
        self.hold.wait(10)
        response[: len(request)] = request
        self.handled += 1
        return len(request)


class FakeInterface:
    """What the drivers need of an open interface: `attach_queue` (here: attach the
    south side, start the loop once both exist), `hangup`, `close`."""

    def __init__(self, device: RequestResponseConnection) -> None:
        self.device = device
        self.hangup, self._daemon_end = socket.socketpair()
        self._watched, self._stopper = socket.socketpair()
        self.south: dict[int, Ioq] = {}
        self.thread: threading.Thread | None = None
        self.queues: Queues | None = None
        self.closed = False

    def attach_queue(self, index: int, ioq) -> None:
        ioq.watch_peer(self.hangup)
        ring = Ioq.attach(ioq.fds, direction=SPECS[index].direction)
        ring.watch_peer(self._watched)
        self.south[index] = ring
        if len(self.south) == 2:
            self.queues = Queues(
                self.south, SPECS, DeviceNames("echo", "E", "B/0"), stop_socket=self._stopper
            )
            self.thread = threading.Thread(target=self._serve, daemon=True)
            self.thread.start()

    async def aattach_queue(self, index: int, ioq) -> None:
        self.attach_queue(index, ioq)

    def _serve(self) -> None:
        assert self.queues is not None
        with contextlib.suppress(IoqClosed):
            self.device.serve(self.queues)

    def hang_up(self) -> None:
        """What the daemon does when it lets go of the interface."""
        self._daemon_end.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.queues is not None:
            self.queues.stop()
        if self.thread is not None:
            self.thread.join(5)
        for ring in self.south.values():
            ring.close()
        for sock in (self._watched, self._stopper, self._daemon_end, self.hangup):
            sock.close()

    async def aclose(self) -> None:
        self.close()


class AsyncFake(FakeInterface):
    async def attach_queue(self, index: int, ioq) -> None:  # type: ignore[override]
        FakeInterface.attach_queue(self, index, ioq)


@pytest.fixture
def interface() -> Iterator[FakeInterface]:
    fake = FakeInterface(Echo())
    yield fake
    fake.close()


def test_the_window_bounds_what_is_in_flight_and_order_holds(interface):
    rr = RequestResponseClient(interface, count=8, slot_size=4096, window=3)
    try:
        for i in range(20):
            rr.submit(b"m%d" % i, timeout=5)
            assert rr.in_flight <= 3
        assert rr.pending == 20
        got = [rr.complete(5) for _ in range(10)] + rr.complete_batch(64, 5)
        while rr.pending:
            got += rr.complete_batch(64, 5)
        assert got == [b"m%d" % i for i in range(20)]
        with pytest.raises(ValueError, match="no request is pending"):
            rr.complete(0.1)
    finally:
        rr.close()
    assert interface.closed and rr.requests.closed and rr.responses.closed


@pytest.mark.parametrize("spin_us", [0, 20, "adaptive"])
def test_response_buffers_are_reposted_as_they_are_read(interface, spin_us):
    # far more requests than response buffers: each buffer is used many times
    interface.device.spin_us = spin_us
    rr = RequestResponseClient(interface, count=4, slot_size=64, spin_us=spin_us)
    try:
        buffer = bytearray(64)
        for i in range(200):
            rr.submit(b"%d" % i, timeout=5)
            n = rr.complete_into(buffer, timeout=5)
            assert bytes(buffer[:n]) == b"%d" % i
        assert rr.request(b"last", 5) == b"last"
        rr.submit(b"x", 5)
        with pytest.raises(ValueError, match="nothing else pending"):
            rr.request(b"y", 5)
        assert rr.complete(5) == b"x"
    finally:
        rr.close()


def test_a_window_larger_than_the_rings_is_refused(interface):
    with pytest.raises(ValueError, match=r"window must be 1\.\.count"):
        RequestResponseClient(interface, count=4, window=5)
    with pytest.raises(ValueError, match="spin_us"):
        RequestResponseClient(interface, count=4, spin_us="fast")


def test_the_hang_up_ends_a_wait_for_a_response(interface):
    device = interface.device
    device.hold.clear()  # the device never answers
    rr = RequestResponseClient(interface, count=4, slot_size=64)
    try:
        rr.submit(b"never", 5)
        with pytest.raises(TimeoutError):
            rr.complete(0.2)
        threading.Timer(0.2, interface.hang_up).start()
        with pytest.raises(IoqClosed):
            rr.complete(10)
    finally:
        device.hold.set()
        rr.close()


def test_the_trio_driver_keeps_order_and_window():
    async def main() -> None:
        fake = AsyncFake(Echo())
        rr = await AsyncRequestResponseClient.open(fake, count=8, slot_size=128, window=4)  # type: ignore[arg-type]
        try:
            for i in range(30):
                await rr.submit(b"t%d" % i)
                assert rr.in_flight <= 4
            got = []
            while rr.pending:
                got += await rr.complete_batch(8)
            assert got == [b"t%d" % i for i in range(30)]
            assert await rr.request(b"one") == b"one"
            buffer = bytearray(128)
            await rr.submit(b"into")
            n = await rr.complete_into(buffer)
            assert bytes(buffer[:n]) == b"into"
        finally:
            await rr.aclose()
        assert fake.closed

    trio.run(main)


def test_the_trio_driver_submits_a_batch_within_its_window_and_in_order():
    async def main() -> None:
        fake = AsyncFake(Echo())
        rr = await AsyncRequestResponseClient.open(fake, count=8, slot_size=128, window=6)  # type: ignore[arg-type]
        try:
            sent: list[int] = []  # requests each call into C took (a full ring takes fewer)
            send_batch = rr.requests.send_batch_nowait

            def counted(batch):
                took = send_batch(batch)
                sent.append(took)
                return took

            rr.requests.send_batch_nowait = counted  # type: ignore[method-assign]
            await rr.submit_batch([b"a%d" % i for i in range(4)])
            assert rr.in_flight == 4 and sent == [4]  # one call: the window had room
            # the four answers are back before more is sent (not left to the scheduler)
            with trio.fail_after(5):
                while fake.device.handled < 4:
                    await trio.sleep(0.005)
            await trio.sleep(0.1)  # handled, then committed
            # more than the window: two fill it; then the oldest answer is read and the others
            # already back (three, or five if the two were answered meanwhile) are set aside
            # at once, so the next call carries four or six requests (a driver reading one
            # answer per send would carry one)
            await rr.submit_batch([b"b%d" % i for i in range(20)])
            assert rr.in_flight <= 6
            assert sum(sent) == 24 and sent[1] == 2 and sent[2] >= 4, sent
            got = []
            while rr.pending:
                got += await rr.complete_batch(8)
            assert got == [b"a%d" % i for i in range(4)] + [b"b%d" % i for i in range(20)]
        finally:
            await rr.aclose()

    trio.run(main)
