"""RequestResponseConnection and QueueSpec with real rings in this process (no mount):
order, sub-batch commits, a full response ring, errors, the stop, a forged request."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from vbusfs.device import (
    BlockLayout,
    BlockServer,
    DeviceNames,
    InvalidValue,
    Ioq,
    IoqClosed,
    IoqFault,
    Queues,
    QueueSpec,
    RequestResponseConnection,
    VbusError,
    request_response_queues,
)
from vbusfs.ioq import lowlevel

SPECS = request_response_queues(256, 256, max_count=64)


class Harness:
    """North rings made here, their south sides served by `connection` in a thread."""

    def __init__(
        self,
        connection: RequestResponseConnection,
        *,
        count: int = 16,
        response_count: int | None = None,
        slot_size: int = 256,
    ) -> None:
        self.requests = Ioq.create(count, slot_size, direction="to_south")
        self.responses = Ioq.create(response_count or count, slot_size, direction="to_north")
        self._watched, stopper = socket.socketpair()
        south = {}
        for spec, ring in zip(SPECS, (self.requests, self.responses), strict=True):
            south[spec.index] = Ioq.attach(ring.fds, direction=spec.direction)
            south[spec.index].watch_peer(self._watched)
        self.south = south
        self.queues = Queues(
            south, {s.index: s for s in SPECS}, DeviceNames("t", "d", "B/0"), stop_socket=stopper
        )
        self.outcome: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(connection,), daemon=True)
        self.thread.start()

    def _run(self, connection: RequestResponseConnection) -> None:
        try:
            connection.serve(self.queues)
        except BaseException as exc:
            self.outcome = exc

    def ended(self, timeout: float = 5.0) -> BaseException | None:
        """Wait for the loop to end by itself; what it raised."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the loop did not end"
        return self.outcome

    def close(self) -> None:
        self.queues.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()
        for ring in (*self.south.values(), self.requests, self.responses):
            ring.close()
        self._watched.close()


@pytest.fixture
def make() -> Iterator:
    made: list[Harness] = []

    def harness(connection: RequestResponseConnection, **kwargs: int) -> Harness:
        made.append(Harness(connection, **kwargs))
        return made[-1]

    yield harness
    for h in made:
        h.close()


class Upper(RequestResponseConnection):
    batch = 16
    commit_every = 4

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.gate: dict[int, threading.Event] = {}

    def handle(self, request: memoryview, response: memoryview) -> int:
        data = bytes(request)
        if data == b"bug":
            raise RuntimeError("a bug")
        if data == b"einval":
            raise InvalidValue("refused")
        if data == b"long":
            return len(response) + 1
        gate = self.gate.get(len(self.seen))
        self.seen.append(data)
        if gate is not None:
            gate.wait(10)
        out = data.upper()
        response[: len(out)] = out
        return len(out)


def test_queue_specs_refuse_what_they_do_not_declare():
    spec = QueueSpec(0, "to_south", "requests", 2, 8, 16, 64)
    spec.check(direction=None, count=8, slot_size=16)
    spec.check(direction="to_south", count=2, slot_size=64)
    for direction, count, size, said in [
        ("to_north", 4, 32, "carries data to_south"),
        (None, 1, 32, "takes 2 to 8 descriptors, not 1"),
        (None, 9, 32, "takes 2 to 8 descriptors, not 9"),
        (None, 4, 15, "takes buffers of 16 to 64 bytes, not 15"),
        (None, 4, 65, "takes buffers of 16 to 64 bytes, not 65"),
    ]:
        with pytest.raises(InvalidValue, match=said) as info:
            spec.check(direction=direction, count=count, slot_size=size)
        assert "queue 0 (requests)" in str(info.value) and info.value.errno == errno.EINVAL
    for bad in [
        dict(index=-1, direction="to_south"),
        dict(index=True, direction="to_south"),
        dict(index=0, direction="north"),
        dict(index=0, direction="to_south", min_count=0),
        dict(index=0, direction="to_south", min_count=9, max_count=8),
        dict(index=0, direction="to_south", min_slot_size=2, max_slot_size=1),
    ]:
        with pytest.raises(ValueError):
            QueueSpec(**bad)  # type: ignore[arg-type]


def test_a_class_declaring_bad_queues_fails_where_it_is_defined():
    from vbusfs.device import DeviceClass

    with pytest.raises(ValueError, match="queue 0 is declared twice"):

        class Twice(DeviceClass):
            queues = (QueueSpec(0, "to_south"), QueueSpec(0, "to_north"))

    with pytest.raises(ValueError, match="must be a tuple of QueueSpec"):

        class AList(DeviceClass):
            queues = [QueueSpec(0, "to_south")]  # type: ignore[assignment]

    with pytest.raises(ValueError, match="not a QueueSpec"):

        class NotSpecs(DeviceClass):
            queues = ((0, "to_south"),)  # type: ignore[assignment]


def test_request_response_queues_fit_the_longest_response():
    requests, responses = request_response_queues(100, 5000, max_count=32)
    assert (requests.index, requests.direction, requests.max_slot_size) == (0, "to_south", 100)
    assert (responses.index, responses.direction) == (1, "to_north")
    assert (responses.min_slot_size, responses.max_slot_size) == (5000, 5000)
    assert responses.max_count == 32
    _, small = request_response_queues(100, 1 << 20, min_response=16)
    assert (small.min_slot_size, small.max_slot_size) == (16, 1 << 20)
    for bad in [dict(min_response=0), dict(min_response=5001)]:
        with pytest.raises(ValueError):
            request_response_queues(100, 5000, **bad)


def test_responses_come_back_in_request_order(make):
    h = make(Upper(), count=64)
    sent = [f"r{i}".encode() for i in range(500)]
    got: list[bytes] = []
    for start in range(0, len(sent), 50):
        h.requests.send_batch(sent[start : start + 50], 5)
        while len(got) < start + 50:
            got += h.responses.receive_batch(64, 5)
    assert got == [s.upper() for s in sent]


def test_responses_are_handed_back_before_the_batch_is_done(make):
    device = Upper()
    device.gate[6] = threading.Event()  # the 7th request blocks until released
    h = make(device)
    h.requests.send_batch([b"a%d" % i for i in range(10)], 5)
    # commit_every = 4: the first sub-batch is the client's while the batch is under way
    first = [h.responses.receive(5) for _ in range(4)]
    assert first == [b"A%d" % i for i in range(4)]
    time.sleep(0.1)
    assert not h.responses.receivable() and len(device.seen) == 7
    device.gate[6].set()
    rest = [h.responses.receive(5) for _ in range(6)]
    assert rest == [b"A%d" % i for i in range(4, 10)]


def test_a_full_response_ring_waits_and_drops_nothing(make):
    h = make(Upper(), count=64, response_count=4)
    h.requests.send_batch([b"x%d" % i for i in range(64)], 5)
    time.sleep(0.2)  # the device has filled the four posted buffers and waits
    got = []
    while len(got) < 64:
        got.append(h.responses.receive(5))
        time.sleep(0.001)
    assert got == [b"X%d" % i for i in range(64)]
    assert h.thread.is_alive() and h.outcome is None


def test_a_vbus_error_fails_the_loop_unless_error_response_answers(make):
    h = make(Upper())
    h.requests.send(b"einval")
    assert isinstance(h.ended(), InvalidValue)

    class Answering(Upper):
        def error_response(self, request, response, exc: VbusError) -> int:
            response[:2] = exc.errno.to_bytes(2, "little")
            return 2

    h = make(Answering())
    h.requests.send_batch([b"einval", b"ok"], 5)
    assert [h.responses.receive(5), h.responses.receive(5)] == [
        errno.EINVAL.to_bytes(2, "little"),
        b"OK",
    ]


@pytest.mark.parametrize(("request_", "error"), [(b"bug", RuntimeError), (b"long", ValueError)])
def test_a_bug_in_handle_ends_the_loop_with_it(make, request_, error):
    h = make(Upper())
    h.requests.send(request_)
    assert isinstance(h.ended(), error)


def test_the_stop_ends_the_loop_with_ioq_closed(make):
    h = make(Upper())
    assert h.thread.is_alive()
    h.queues.stop()
    assert isinstance(h.ended(), IoqClosed)
    assert h.queues.stopping and h.queues.wait_stopped(0)


def test_a_forged_request_longer_than_a_slot_is_the_clients_fault(make):
    h = make(Upper())
    # a descriptor covering three slots: within the segment, but no honest send makes it
    lowlevel.push(h.requests, "both", 0, 0, 3 * 256)
    h.requests.inject()
    outcome = h.ended()
    assert isinstance(outcome, IoqFault)


class Idle(RequestResponseConnection):
    def serve(self, queues: Queues) -> None:
        queues.wait_stopped()


def test_a_queue_poller_waits_on_several_queues_until_the_stop(make):
    h = make(Idle())
    poller = h.queues.poller()
    try:
        # every response buffer is posted: the device could send at once
        assert poller.wait(1) == {1}
        with pytest.raises(TimeoutError):
            poller.wait(0.05, indexes=[0])
        h.requests.send(b"x")
        assert poller.wait(1, indexes=[0]) == {0}
        assert poller.wait(1) == {0, 1}
        h.south[0].receive_nowait()
        threading.Timer(0.1, h.queues.stop).start()
        with pytest.raises(IoqClosed):
            poller.wait(5, indexes=[0])
        with pytest.raises(IoqClosed):
            h.queues.check_stopping()
    finally:
        poller.close()


class FastDisk(RequestResponseConnection):
    """READs served by a BlockServer over a memfd; `handle` answers the rest (an op 9 echo,
    and every refusal the server leaves), counting what reaches Python."""

    batch = 8
    commit_every = 2

    def __init__(self) -> None:
        self.fd = os.memfd_create("fastdisk", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, 1 << 16)
        os.pwrite(self.fd, b"\x5a" * 512, 1024)
        self.python: list[int] = []  # tags handle saw
        self.server: BlockServer | None = None

    def block_server(self) -> BlockServer:
        self.server = BlockServer(self.fd, 1 << 16, BLK_LAYOUT)
        return self.server

    def handle(self, request: memoryview, response: memoryview) -> int:
        tag, _, _, op, _ = BLK_REQ.unpack_from(request)
        self.python.append(tag)
        BLK_RESP.pack_into(response, 0, tag, 0 if op == 9 else errno.EINVAL, 0)
        return BLK_RESP.size


BLK_REQ = struct.Struct("<QQIHH")
BLK_RESP = struct.Struct("<QII")
BLK_LAYOUT = BlockLayout(24, 16, 1, 2, 0, 8, 16, 20, 22, 0, 8, 12)


def test_a_block_server_takes_the_common_requests_and_handle_the_rest_in_order(make):
    disk = FastDisk()
    h = make(disk, count=16, slot_size=1024)
    requests = []
    for tag in range(1, 31):
        if tag % 7 == 0:
            requests.append(BLK_REQ.pack(tag, 0, 0, 9, 0))  # an op only Python knows
        elif tag % 11 == 0:
            requests.append(BLK_REQ.pack(tag, 1 << 20, 512, 1, 0))  # past the end
        else:
            requests.append(BLK_REQ.pack(tag, 1024, 512, 1, 0))
    answers = []
    for request in requests:
        h.requests.send(request, timeout=5)
        answers.append(h.responses.receive(timeout=5))
    for tag, answer in enumerate(answers, 1):
        got_tag, status, length = BLK_RESP.unpack_from(answer)
        assert got_tag == tag
        if tag % 7 == 0:
            assert (status, length) == (0, 0)
        elif tag % 11 == 0:
            assert status == errno.EINVAL
        else:
            assert (status, answer[16:]) == (0, b"\x5a" * 512)
    assert disk.python == [7, 11, 14, 21, 22, 28]
    h.close()
    assert disk.server is not None and disk.server.counts().reads == 24
    with pytest.raises(ValueError, match="closed"):  # the loop closed it as it ended
        disk.server.serve(h.south[0], h.south[1], timeout=0)
    os.close(disk.fd)
