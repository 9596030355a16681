"""BlockServer: a block protocol's READs and WRITEs served in C between a backing and a
device's request and response rings.

The rings' north sides are the client, in this process; the server runs on their south
sides, in a thread when it must wait. The protocol is vdisk's layout (24-byte request
header, 16-byte response header), written out here so the test does not trust it.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vbusfs.ioq import BlockLayout, BlockServer, Ioq, IoqClosed, IoqEmpty, IoqError, IoqFault

REQ = struct.Struct("<QQIHH")  # tag, offset, length, op, flags
RESP = struct.Struct("<QII")  # tag, status, length
READ, WRITE, FLUSH = 1, 2, 3
LAYOUT = BlockLayout(
    request_size=REQ.size,
    response_size=RESP.size,
    op_read=READ,
    op_write=WRITE,
    tag_at=0,
    offset_at=8,
    length_at=16,
    op_at=20,
    flags_at=22,
    resp_tag_at=0,
    resp_status_at=8,
    resp_length_at=12,
)
SIZE = 1 << 20
SLOT = 16 + 8192


@dataclass
class Rig:
    requests: Ioq  # north, to_south
    responses: Ioq  # north, to_north
    req_south: Ioq
    resp_south: Ioq
    fd: int  # the backing: a memfd of SIZE bytes
    view: memoryview  # the backing, mapped here too

    def send(self, *messages: bytes) -> None:
        self.requests.send_batch_nowait(list(messages))

    def responses_now(self) -> list[tuple[int, int, bytes]]:
        try:
            got = self.responses.receive_batch_nowait(64)
        except IoqEmpty:
            return []
        return [(*RESP.unpack_from(m)[:2], m[RESP.size :]) for m in got]


@pytest.fixture
def rig() -> Iterator[Rig]:
    fd = os.memfd_create("blk-test", os.MFD_CLOEXEC)
    os.ftruncate(fd, SIZE)
    backing = mmap.mmap(fd, SIZE)
    view = memoryview(backing)
    requests = Ioq.create(16, SLOT, direction="to_south")
    responses = Ioq.create(16, SLOT, direction="to_north")
    r = Rig(
        requests,
        responses,
        Ioq.attach(requests.fds, direction="to_south"),
        Ioq.attach(responses.fds, direction="to_north"),
        fd,
        view,
    )
    try:
        yield r
    finally:
        for q in (r.requests, r.responses, r.req_south, r.resp_south):
            q.close()
        view.release()
        backing.close()
        os.close(fd)


def read(tag: int, offset: int, length: int, flags: int = 0) -> bytes:
    return REQ.pack(tag, offset, length, READ, flags)


def write(tag: int, offset: int, data: bytes) -> bytes:
    return REQ.pack(tag, offset, len(data), WRITE, 0) + data


def serve(rig: Rig, server: BlockServer) -> None:
    """Serve what is there: until a request C leaves, or 50 ms of nothing."""
    with contextlib.suppress(TimeoutError):
        server.serve(rig.req_south, rig.resp_south, timeout=0.05)


@pytest.mark.parametrize("mapped", [True, False])
def test_reads_and_writes_move_the_backing_bytes_in_order(rig: Rig, mapped: bool) -> None:
    rig.view[4096:8192] = bytes(range(256)) * 16
    server = BlockServer(rig.fd, SIZE, LAYOUT, map=mapped)
    rig.send(read(1, 4096, 4096), write(2, 0, b"\xab" * 512), read(3, 0, 1024))
    serve(rig, server)
    got = rig.responses_now()
    assert got == [
        (1, 0, bytes(range(256)) * 16),
        (2, 0, b""),
        (3, 0, b"\xab" * 512 + bytes(512)),
    ]
    assert rig.view[:512] == b"\xab" * 512  # the write reached the memfd itself
    counts = server.counts()
    assert (counts.reads, counts.writes, counts.read_bytes, counts.written_bytes) == (
        2,
        1,
        5120,
        512,
    )
    server.close()
    server.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        server.serve(rig.req_south, rig.resp_south, timeout=0)


@pytest.mark.parametrize(
    "bad",
    [
        REQ.pack(7, 0, 0, FLUSH, 0),  # another op
        read(7, 0, 512, flags=1),  # flags
        read(7, 100, 512),  # misaligned offset
        read(7, 0, 100),  # misaligned length
        read(7, SIZE - 512, 1024),  # past the end
        read(7, 2**64 - 512, 1024),  # an offset that overflows
        read(7, 0, 0),  # nothing to move
        read(7, 0, 16384),  # more than the response slot holds
        read(7, 0, 512) + b"x",  # a READ with a payload
        REQ.pack(7, 0, 1024, WRITE, 0) + bytes(512),  # a WRITE shorter than its length
        b"short",  # not even a header
    ],
)
def test_a_request_it_does_not_take_stays_first_for_python(rig: Rig, bad: bytes) -> None:
    server = BlockServer(rig.fd, SIZE, LAYOUT)
    rig.send(read(1, 0, 512), bad, read(3, 0, 512))
    server.serve(rig.req_south, rig.resp_south, timeout=1)  # returns: not a timeout
    assert [tag for tag, _, _ in rig.responses_now()] == [1]
    # the refused one is next, whole, and nothing is left acquired on either ring
    assert rig.req_south.receive_batch_nowait(1) == [bad]
    serve(rig, server)
    assert [tag for tag, _, _ in rig.responses_now()] == [3]


def test_a_read_only_backing_leaves_writes_to_python(rig: Rig) -> None:
    server = BlockServer(rig.fd, SIZE, LAYOUT, readonly=True)
    rig.send(write(1, 0, b"\x01" * 512))
    server.serve(rig.req_south, rig.resp_south, timeout=1)
    assert rig.responses_now() == []
    assert rig.view[:512] == bytes(512)


def test_a_file_past_its_end_reads_as_zeros(tmp_path: os.PathLike[str], rig: Rig) -> None:
    path = os.path.join(tmp_path, "disk")
    with open(path, "wb") as f:
        f.write(b"\x07" * 1024)
    fd = os.open(path, os.O_RDWR)
    try:
        server = BlockServer(fd, 8192, LAYOUT, map=False)
        rig.send(read(1, 512, 1024), write(2, 4096, b"\x09" * 512))
        serve(rig, server)
        assert rig.responses_now() == [(1, 0, b"\x07" * 512 + bytes(512)), (2, 0, b"")]
        assert os.pread(fd, 512, 4096) == b"\x09" * 512
    finally:
        os.close(fd)


def test_it_waits_with_the_gil_released_and_ends_when_the_peer_hangs_up(rig: Rig) -> None:
    server = BlockServer(rig.fd, SIZE, LAYOUT)
    stop_r, stop_w = socket.socketpair()
    rig.req_south.watch_peer(stop_r)
    rig.resp_south.watch_peer(stop_r)
    ended: list[BaseException] = []

    def loop() -> None:
        try:
            server.serve(rig.req_south, rig.resp_south, spin_us="adaptive")
        except BaseException as exc:
            ended.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for tag in range(1, 41):  # more than the rings hold: it waits for buffers too
            rig.requests.send(read(tag, tag * 512, 512), timeout=5)
            (message,) = [rig.responses.receive(timeout=5)]
            assert RESP.unpack_from(message) == (tag, 0, 512)
    finally:
        stop_w.close()  # the framework's stop: every wait ends
        thread.join(10)
        stop_r.close()
    assert not thread.is_alive()
    assert len(ended) == 1 and isinstance(ended[0], IoqClosed)
    assert server.counts().reads == 40


def test_an_idle_server_times_out(rig: Rig) -> None:
    server = BlockServer(rig.fd, SIZE, LAYOUT)
    with pytest.raises(TimeoutError):
        server.serve(rig.req_south, rig.resp_south, timeout=0.01)


def test_wrong_rings_and_layouts_are_refused(rig: Rig) -> None:
    server = BlockServer(rig.fd, SIZE, LAYOUT)
    with pytest.raises(IoqError) as info:
        server.serve(rig.requests, rig.responses, timeout=0)  # the north sides
    assert info.value.errno == errno.EPERM
    rig.send(read(1, 0, 512))
    rig.req_south.acquire_nowait(1)
    with pytest.raises(IoqError) as busy:  # a caller holding acquired buffers
        server.serve(rig.req_south, rig.resp_south, timeout=0)
    assert busy.value.errno == errno.EBUSY
    rig.req_south.unacquire()
    with pytest.raises(ValueError):
        BlockServer(rig.fd, SIZE, LAYOUT.__class__(**{**vars(LAYOUT), "sector": 100}))
    with pytest.raises(ValueError):
        BlockServer(rig.fd, SIZE, LAYOUT.__class__(**{**vars(LAYOUT), "tag_at": 20}))
    with pytest.raises(ValueError):
        BlockServer(rig.fd, 0, LAYOUT)
    with pytest.raises(ValueError, match="at least size bytes"):  # mapped past its end: SIGBUS
        BlockServer(rig.fd, 2 * SIZE, LAYOUT)
    BlockServer(rig.fd, 2 * SIZE, LAYOUT, map=False).close()  # read as zeros past the end
    with pytest.raises(OSError) as bad_fd:
        BlockServer(-1, SIZE, LAYOUT)
    assert bad_fd.value.errno == errno.EBADF


HEAD, DESC = 56, 32  # the ring's header and descriptor sizes (native/ioq.h)


@pytest.mark.parametrize("ring", ["requests", "responses"])
@pytest.mark.parametrize(
    "field, value",
    [(8, 16 * SLOT), (16, 16 * SLOT + 1)],  # a buffer past the data segment; too long
    ids=["ptr", "len"],
)
def test_a_forged_descriptor_faults_the_ring_and_nothing_is_served(
    rig: Rig, ring: str, field: int, value: int
) -> None:
    server = BlockServer(rig.fd, SIZE, LAYOUT)
    rig.send(read(1, 0, 512))
    north = getattr(rig, ring)
    with mmap.mmap(north.fds.ring, HEAD + DESC * 16) as raw:
        struct.pack_into("<Q", raw, HEAD + field, value)  # descriptor 0, as a hostile client
    with pytest.raises(IoqFault):
        server.serve(rig.req_south, rig.resp_south, timeout=1)
    assert rig.responses_now() == []
    assert server.counts().reads == 0


@pytest.mark.parametrize(("every", "signals"), [(4, 3), (0, 1)])
def test_completions_are_handed_back_every_n_of_a_batch(rig: Rig, every: int, signals: int) -> None:
    server = BlockServer(rig.fd, SIZE, LAYOUT)
    rig.send(*(read(tag, 512 * tag, 512) for tag in range(10)))
    with contextlib.suppress(TimeoutError):
        server.serve(rig.req_south, rig.resp_south, every=every, timeout=0.05)
    counts = server.counts()
    # one batch of ten: handed back four at a time (three signals), or all at once
    assert (counts.reads, counts.batches, counts.signals) == (10, 1, signals), counts
    assert [tag for tag, _, _ in rig.responses_now()] == list(range(10))
    server.close()
