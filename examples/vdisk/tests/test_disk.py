"""The data path without a mount: backings and `Disk.handle` against a model disk.

The model is a bytearray and the protocol's rules written plainly; a hypothesis
machine sends the same requests (valid, refused and random bytes) to it and
to a `Disk` over each backing, and the responses must be byte for byte the same.
"""

from __future__ import annotations

import contextlib
import errno
import os

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from vbusfs_vdisk import Disk, FileBacking, MemoryBacking
from vbusfs_vdisk import protocol as p

from vbusfs.device import Ioq, IoqEmpty

SECTOR = p.SECTOR
SIZE = 64 * SECTOR  # small, so that offsets collide and the end is often reached
RESPONSE_ROOM = p.RESPONSE_SIZE + 16 * SECTOR  # the client's response slot


class ModelDisk:
    """What a disk must answer, written as plainly as the protocol reads."""

    def __init__(self, size: int, readonly: bool) -> None:
        self.bytes = bytearray(size)
        self.readonly = readonly

    def answer(self, request: bytes, room: int) -> bytes:
        try:
            req = p.parse_request(request)
        except p.ProtocolError as exc:
            return p.pack_response(exc.tag, exc.errno)
        end = req.offset + req.length
        if req.op == p.READ:
            if end > len(self.bytes) or p.RESPONSE_SIZE + req.length > room:
                return p.pack_response(req.tag, errno.EINVAL)
            return p.pack_response(req.tag, 0, bytes(self.bytes[req.offset : end]))
        if req.op == p.WRITE:
            if self.readonly:
                return p.pack_response(req.tag, errno.EROFS)
            if end > len(self.bytes):
                return p.pack_response(req.tag, errno.ENOSPC)
            self.bytes[req.offset : end] = req.payload
        return p.pack_response(req.tag, 0)


def serve(disk: Disk, request: bytes, room: int = RESPONSE_ROOM) -> bytes:
    response = memoryview(bytearray(room))
    n = disk.handle(memoryview(bytearray(request)), response)
    return bytes(response[:n])


class RingPath:
    """The disk's requests through real rings with its C block server first and
    `Disk.handle` for what the server leaves, as the device's loop does."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.requests = Ioq.create(4, 4096, direction="to_south")
        self.responses = Ioq.create(4, RESPONSE_ROOM, direction="to_north")
        self.req_south = Ioq.attach(self.requests.fds, direction="to_south")
        self.resp_south = Ioq.attach(self.responses.fds, direction="to_north")
        self.server = disk.block_server()
        self.by_python = 0

    def serve(self, request: bytes) -> bytes:
        self.requests.send_nowait(request)
        with contextlib.suppress(TimeoutError):
            self.server.serve(self.req_south, self.resp_south, timeout=0)
        with contextlib.suppress(IoqEmpty):
            return self.responses.receive_nowait()
        self.by_python += 1
        (message,) = self.req_south.acquire_nowait(1)
        (buffer,) = self.resp_south.acquire_nowait(1)
        n = self.disk.handle(message, buffer)
        self.resp_south.commit(1, [n])
        self.req_south.commit(1)
        return self.responses.receive_nowait()

    def close(self) -> None:
        self.server.close()
        for ring in (self.req_south, self.resp_south, self.requests, self.responses):
            ring.close()


# sector numbers, often near the end (where the range checks are)
_LAST = SIZE // SECTOR
offsets = st.one_of(st.integers(_LAST - 4, _LAST + 1), st.integers(0, _LAST + 2)).map(
    lambda n: n * SECTOR
)
lengths = st.integers(0, 18).map(lambda n: n * SECTOR)  # past the response room too


class DiskAgreesWithTheModel(RuleBasedStateMachine):
    """Both backings, read-only or not, answer every request as the model does."""

    def __init__(self) -> None:
        super().__init__()
        self.disk: Disk | None = None
        self.rings: RingPath | None = None
        self.tag = 0

    @initialize(
        kind=st.sampled_from(["memory", "file"]),
        readonly=st.booleans(),
        step=st.integers(0, 255),
        rings=st.booleans(),
    )
    def make(self, kind, readonly, step, rings):
        seed = bytes(i * step % 251 for i in range(SIZE))  # a disk that does not start blank
        self.model = ModelDisk(SIZE, readonly)
        self.model.bytes[:] = seed
        if kind == "memory":
            backing = MemoryBacking(SIZE)
            backing.write_from(memoryview(seed), 0)
        else:
            path = f"/dev/shm/vdisk-test-{os.getpid()}-{id(self)}"
            with open(path, "wb") as f:
                f.write(seed + b"tail past size")  # a file longer than the disk
            backing = FileBacking(path, SIZE, readonly=readonly)
            os.unlink(path)  # the open fd keeps it
        self.backing = backing
        self.disk = Disk(backing, readonly=readonly)
        # through rings: the C block server answers what it takes, as the device does
        self.rings = RingPath(self.disk) if rings else None

    def next_tag(self) -> int:
        self.tag += 1
        return self.tag

    def check(self, request: bytes, room: int = RESPONSE_ROOM) -> None:
        assert self.disk is not None
        expected = self.model.answer(request, room)
        if self.rings is not None and room == RESPONSE_ROOM:
            assert self.rings.serve(request) == expected
        else:
            assert serve(self.disk, request, room) == expected

    @rule(offset=offsets, length=lengths)
    def read(self, offset, length):
        self.check(p.read_request(self.next_tag(), offset, length))

    @rule(offset=offsets, sectors=st.integers(0, 3), byte=st.binary(min_size=1, max_size=1))
    def write(self, offset, sectors, byte):
        self.check(p.write_request(self.next_tag(), offset, byte * (sectors * SECTOR)))

    @rule()
    def flush(self):
        self.check(p.flush_request(self.next_tag()))

    @rule(offset=st.integers(0, SIZE), length=st.integers(0, 2 * SECTOR))
    def read_anywhere(self, offset, length):
        self.check(p.read_request(self.next_tag(), offset, length))

    @rule(
        op=st.integers(0, 6),
        offset=st.integers(0, SIZE),
        length=st.integers(0, 1100),
        payload=st.integers(0, 1100),
    )
    def any_header(self, op, offset, length, payload):
        self.check(p.pack_request(op, self.next_tag(), offset, length, bytes(payload)))

    @rule(message=st.binary(max_size=40))
    def any_bytes(self, message):
        self.check(message)

    @rule(offset=offsets, length=lengths, room=st.integers(p.RESPONSE_SIZE, RESPONSE_ROOM))
    def read_into_a_small_buffer(self, offset, length, room):
        self.check(p.read_request(self.next_tag(), offset, length), room)

    @precondition(lambda self: self.disk is not None)
    @invariant()
    def the_bytes_agree(self):
        whole = memoryview(bytearray(SIZE))
        self.backing.read_into(whole, 0)
        assert whole == self.model.bytes

    def teardown(self):
        if self.disk is not None:
            if self.rings is not None:
                self.rings.close()
            self.backing.close()


TestDiskAgreesWithTheModel = DiskAgreesWithTheModel.TestCase
TestDiskAgreesWithTheModel.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)


def test_counters_count_what_was_served():
    disk = Disk(MemoryBacking(8 * SECTOR))
    serve(disk, p.write_request(1, 0, bytes(1024)))
    serve(disk, p.read_request(2, 512, 512))
    serve(disk, p.flush_request(3))
    serve(disk, p.read_request(4, 8 * SECTOR, 512))  # past the end
    assert disk.stats() == {
        "reads": 1,
        "writes": 1,
        "flushes": 1,
        "errors": 1,
        "read_bytes": 512,
        "written_bytes": 1024,
    }
    assert disk.capacity() == p.Capacity(8 * SECTOR, SECTOR, False)


def test_a_file_backing_reads_zeros_past_the_files_end(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\x01" * 4 * SECTOR)
    backing = FileBacking(str(path), 4 * SECTOR, readonly=False)
    try:
        os.truncate(path, SECTOR + 100)  # shrunk under the open disk
        out = bytearray(2 * SECTOR)
        backing.read_into(memoryview(out), SECTOR)
        assert out == b"\x01" * 100 + bytes(2 * SECTOR - 100)
    finally:
        backing.close()


def test_a_file_backing_writes_in_place_and_flushes(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(4 * SECTOR))
    backing = FileBacking(str(path), 4 * SECTOR, readonly=False)
    disk = Disk(backing)
    try:
        assert serve(disk, p.write_request(1, SECTOR, b"\x07" * SECTOR)) == p.pack_response(1)
        assert serve(disk, p.flush_request(2)) == p.pack_response(2)
        assert path.read_bytes()[SECTOR : 2 * SECTOR] == b"\x07" * SECTOR
    finally:
        backing.close()


def test_a_read_only_file_opens_and_refuses_writes(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\x05" * 2 * SECTOR)
    path.chmod(0o444)
    backing = FileBacking(str(path), 2 * SECTOR, readonly=True)
    disk = Disk(backing, readonly=True)
    try:
        assert serve(disk, p.write_request(1, 0, bytes(SECTOR))) == p.pack_response(1, errno.EROFS)
        assert serve(disk, p.read_request(2, 0, SECTOR)) == p.pack_response(2, 0, b"\x05" * SECTOR)
    finally:
        backing.close()


def test_a_file_backing_refuses_what_it_cannot_be(tmp_path):
    short = tmp_path / "short.img"
    short.write_bytes(bytes(SECTOR))
    with pytest.raises(OSError) as refused:
        FileBacking(str(short), 2 * SECTOR, readonly=False)
    assert refused.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as refused:
        FileBacking(str(tmp_path), SECTOR, readonly=True)
    assert refused.value.errno in (errno.EINVAL, errno.EISDIR)
    with pytest.raises(FileNotFoundError):
        FileBacking(str(tmp_path / "missing"), SECTOR, readonly=False)


def test_an_io_failure_is_answered_with_its_errno(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(2 * SECTOR))
    backing = FileBacking(str(path), 2 * SECTOR, readonly=False)
    disk = Disk(backing)
    try:
        # the kernel refuses what the backing asks: a write through a read-only
        # descriptor (EBADF), a read of a directory (EISDIR)
        read_only = os.open(path, os.O_RDONLY)
        os.dup2(read_only, backing._fd)
        os.close(read_only)
        assert serve(disk, p.write_request(1, 0, bytes(SECTOR))) == p.pack_response(1, errno.EBADF)
        directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        os.dup2(directory, backing._fd)
        os.close(directory)
        assert serve(disk, p.read_request(2, 0, SECTOR)) == p.pack_response(2, errno.EISDIR)
        assert serve(disk, p.flush_request(3)) == p.pack_response(3)
        assert disk.stats()["errors"] == 2
    finally:
        backing.close()


def test_a_memory_backing_keeps_its_prefix_when_resized():
    small = MemoryBacking(2 * SECTOR)
    small.write_from(memoryview(b"\x09" * 2 * SECTOR), 0)
    bigger = small.resized(3 * SECTOR)
    out = bytearray(3 * SECTOR)
    bigger.read_into(memoryview(out), 0)
    assert out == b"\x09" * 2 * SECTOR + bytes(SECTOR)
    smaller = bigger.resized(SECTOR)
    out = bytearray(SECTOR)
    smaller.read_into(memoryview(out), 0)
    assert out == b"\x09" * SECTOR
    smaller.close()
    smaller.close()  # idempotent
    with pytest.raises(ValueError):
        MemoryBacking(0)


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_the_block_server_serves_reads_and_writes_and_leaves_the_rest(kind, tmp_path):
    if kind == "memory":
        backing = MemoryBacking(SIZE)
    else:
        path = tmp_path / "disk"
        path.write_bytes(bytes(SIZE))
        backing = FileBacking(str(path), SIZE, readonly=False)
    disk = Disk(backing)
    rings = RingPath(disk)
    try:
        assert rings.serve(p.write_request(1, SECTOR, b"\x11" * SECTOR)) == p.pack_response(1, 0)
        assert rings.serve(p.read_request(2, SECTOR, SECTOR)) == p.pack_response(
            2, 0, b"\x11" * SECTOR
        )
        assert rings.by_python == 0  # both in C
        assert rings.serve(p.flush_request(3)) == p.pack_response(3, 0)
        assert rings.serve(p.read_request(4, SIZE, SECTOR)) == p.pack_response(4, errno.EINVAL)
        assert rings.by_python == 2
        stats = disk.stats()  # C's counts and Python's together
        assert (stats["reads"], stats["writes"], stats["flushes"], stats["errors"]) == (1, 1, 1, 1)
        assert (stats["read_bytes"], stats["written_bytes"]) == (SECTOR, SECTOR)
    finally:
        rings.close()
        backing.close()
