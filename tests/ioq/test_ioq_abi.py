"""The shared-memory layout of behaviour §7.2, pinned byte by byte from outside C."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from vbusfs.ioq import ABI_VERSION, Ioq, IoqError, lowlevel

HEAD = 56
DESC = 32


def raw(fd: int) -> mmap.mmap:
    return mmap.mmap(fd, os.fstat(fd).st_size)


@pytest.fixture
def pair() -> Iterator[tuple[Ioq, Ioq]]:
    north = Ioq.create(count=5, slot_size=128)
    south = Ioq.attach(north.fds, direction="to_south")
    yield north, south
    south.close()
    north.close()


def test_ring_segment_is_exactly_head_plus_descriptors() -> None:
    for count in (1, 5, 64, 1000):
        with Ioq.create(count=count, slot_size=8) as q:
            assert os.fstat(q.fds.ring).st_size == HEAD + DESC * count
            assert os.fstat(q.fds.data).st_size == 8 * count


def test_ring_head_fields_sit_at_spec_offsets(pair: tuple[Ioq, Ioq]) -> None:
    north, _ = pair
    m = raw(north.fds.ring)
    magic, ver = struct.unpack_from("<II", m, 0)
    assert (magic, ver) == (0x47FA2FE4, 4)
    sig_magic, sig_ver = struct.unpack_from("<II", m, 8)
    assert (sig_magic, sig_ver) == (0x58FA39DF, 1)
    assert struct.unpack_from("<I", m, 48)[0] == 5
    # padding stays zero: it is part of the ABI too
    assert m[22:24] == b"\0\0" and m[52:56] == b"\0\0\0\0"
    m.close()


def test_ring_index_fields_move_at_spec_offsets(pair: tuple[Ioq, Ioq]) -> None:
    north, south = pair
    m = raw(north.fds.ring)
    for _ in range(5):
        north.send_nowait(b"x")
    # valid idx @24: head, tail, full; inuse idx @36
    assert struct.unpack_from("<IIB", m, 24) == (0, 0, 1)
    assert struct.unpack_from("<IIB", m, 36) == (0, 0, 1)
    south.receive_batch_nowait(2)
    assert struct.unpack_from("<IIB", m, 36) == (2, 0, 0)
    north.send_nowait(b"y")  # reclaims the two, pushes one
    assert struct.unpack_from("<IIB", m, 24) == (2, 1, 0)
    assert struct.unpack_from("<IIB", m, 36) == (2, 1, 0)
    assert m[33:36] == b"\0\0\0" and m[45:48] == b"\0\0\0"
    m.close()


def test_descriptor_fields_sit_at_spec_offsets(pair: tuple[Ioq, Ioq]) -> None:
    north, south = pair
    m = raw(north.fds.ring)
    lowlevel.push(north, "both", cookie=0x1122334455667788, ptr=256, length=100)
    d = HEAD + 0 * DESC
    assert struct.unpack_from("<QQQBB", m, d) == (0x1122334455667788, 256, 100, 1, 1)
    assert m[d + 26 : d + 32] == b"\0" * 6
    lowlevel.pop(south, "inuse")
    assert m[d + 25] == 0  # sown cleared by south
    lowlevel.pop(north, "valid")
    assert m[d + 24] == 0  # valid cleared by north
    lowlevel.push(north, "valid", cookie=7, ptr=0, length=1)
    d1 = HEAD + 1 * DESC
    assert struct.unpack_from("<QQQBB", m, d1) == (7, 0, 1, 1, 0)
    m.close()


def test_shm_signal_fields_sit_at_spec_offsets(pair: tuple[Ioq, Ioq]) -> None:
    north, south = pair
    m = raw(north.fds.ring)
    # irq[north] @16..18, irq[south] @19..21: enabled, pending, dirty
    assert m[16:22] == b"\0" * 6
    north.send_nowait(b"x")  # injects south: dirty, not pending (south not enabled)
    assert m[19:22] == b"\0\0\1"
    south.receive_nowait()  # injects north
    assert m[16:19] == b"\0\0\1"
    with pytest.raises(TimeoutError):
        south.wait_receivable(timeout=0)  # arms, finds nothing, disarms and drains
    assert m[19:22] == b"\0\0\0"
    m.close()


def test_ring_memfds_are_sealed_against_shrinking(pair: tuple[Ioq, Ioq]) -> None:
    north, _ = pair
    for fd in (north.fds.ring, north.fds.data):
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK
        assert seals & fcntl.F_SEAL_SEAL
        with pytest.raises(OSError):
            os.ftruncate(fd, 0)


def forged_ring(
    count: int,
    *,
    magic: int = 0x47FA2FE4,
    ver: int = 4,
    sig: int = 0x58FA39DF,
    head_count: int | None = None,
    seal: bool = True,
    size: int | None = None,
) -> int:
    fd = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
    body = bytearray(max(size or 0, HEAD + DESC * count))
    struct.pack_into("<IIII", body, 0, magic, ver, sig, 1)
    struct.pack_into("<I", body, 48, count if head_count is None else head_count)
    os.write(fd, bytes(body[:size]))
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    return fd


@pytest.mark.parametrize(
    "bad",
    [
        {"magic": 0x47FA2FE5},
        {"ver": 3},
        {"sig": 0},
        {"head_count": 5},
        {"seal": False},
        {"size": HEAD + DESC * 4 + 8},
        {"size": 40},
    ],
    ids=["magic", "version", "signal-magic", "count", "unsealed", "length", "short"],
)
def test_attach_rejects_a_bad_ring_with_einval(bad: dict[str, object]) -> None:
    with Ioq.create(count=4, slot_size=16) as good:
        ring = forged_ring(4, **bad)  # type: ignore[arg-type]
        try:
            with pytest.raises(IoqError) as info:
                Ioq.attach(good.fds._replace(ring=ring), direction="to_south")
            assert info.value.errno == errno.EINVAL
        finally:
            os.close(ring)


def test_attach_accepts_a_forged_but_well_formed_ring() -> None:
    # the rejection test above can fail: the same forgery, unbroken, attaches
    with Ioq.create(count=4, slot_size=16) as good:
        ring = forged_ring(4)
        try:
            Ioq.attach(good.fds._replace(ring=ring), direction="to_south").close()
        finally:
            os.close(ring)


def test_attach_rejects_something_that_is_not_an_eventfd() -> None:
    with Ioq.create(count=4, slot_size=16) as good:
        r, w = os.pipe()
        try:
            with pytest.raises(IoqError) as info:
                Ioq.attach(good.fds._replace(to_south=r), direction="to_south")
            assert info.value.errno == errno.EINVAL
        finally:
            os.close(r)
            os.close(w)


def test_import_refuses_a_module_with_another_abi_number() -> None:
    code = """
import sys, types
import vbusfs._ioq_cffi as real

class Lib:
    def __getattr__(self, name):
        return getattr(real.lib, name)
    def ioq_abi_version(self):
        return 999

sys.modules["vbusfs._ioq_cffi"] = types.SimpleNamespace(ffi=real.ffi, lib=Lib())
try:
    import vbusfs.ioq
except ImportError as e:
    print("refused:", e)
else:
    print("accepted")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused:" in out.stdout, out.stdout + out.stderr
    assert "999" in out.stdout and str(ABI_VERSION) in out.stdout
