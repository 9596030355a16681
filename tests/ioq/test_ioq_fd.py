"""South-side transfers between a ring and a file descriptor, one read or write per message.

The fd is a SOCK_SEQPACKET socket pair (it keeps message boundaries, as a TAP
does) or a pipe; the ring's peer is a north handle in the same process.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from vbusfs.ioq import FdBatch, Ioq, IoqClosed, IoqEmpty, IoqError, IoqFault, IoqFull
from vbusfs.testing import netns_available

HEAD, DESC = 56, 32
COUNT, SLOT = 8, 2048


def frame(i: int, size: int = 60) -> bytes:
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected SOCK_SEQPACKET sockets: `device` (non-blocking) and `host`."""
    device, host = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    device.setblocking(False)
    host.setblocking(False)
    yield device, host
    device.close()
    host.close()


@pytest.fixture
def tx() -> Iterator[tuple[Ioq, Ioq]]:
    """A to-south ring (client -> device): north sends, south writes to an fd."""
    north = Ioq.create(COUNT, SLOT, direction="to_south")
    south = Ioq.attach(north.fds, direction="to_south")
    yield north, south
    south.close()
    north.close()


@pytest.fixture
def rx() -> Iterator[tuple[Ioq, Ioq]]:
    """A to-north ring (device -> client): south reads from an fd into posted buffers."""
    north = Ioq.create(COUNT, SLOT, direction="to_north")
    south = Ioq.attach(north.fds, direction="to_north")
    yield north, south
    south.close()
    north.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


# ---- ring -> fd ---------------------------------------------------------------


def test_receive_to_fd_writes_every_message_once_in_order(
    tx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = tx
    device, host = pair
    sent: list[bytes] = []
    got: list[bytes] = []
    for i in range(5 * COUNT):
        message = frame(i, 14 + (i * 97) % 1500)
        north.send_nowait(message)
        sent.append(message)
        if len(sent) % 3 == 0 or i == 5 * COUNT - 1:
            result = south.receive_to_fd_nowait(device.fileno())
            assert result.dropped == 0 and result.bad_size == 0
            got.extend(drain(host))
    assert got == sent
    with pytest.raises(IoqEmpty):
        south.receive_to_fd_nowait(device.fileno())


def test_receive_to_fd_stops_at_max_messages(
    tx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = tx
    device, host = pair
    north.send_batch_nowait([frame(i) for i in range(6)])
    assert south.receive_to_fd_nowait(device.fileno(), 4) == FdBatch(4, 0, 0)
    assert drain(host) == [frame(i) for i in range(4)]
    assert south.receive_to_fd_nowait(device.fileno(), 4) == FdBatch(2, 0, 0)
    assert drain(host) == [frame(4), frame(5)]


def test_receive_to_fd_frees_the_buffers_for_north(
    tx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = tx
    device, host = pair
    assert north.send_batch_nowait([frame(i) for i in range(COUNT)]) == COUNT
    with pytest.raises(IoqFull):
        north.send_nowait(frame(99))
    assert south.receive_to_fd_nowait(device.fileno()).messages == COUNT
    assert north.send_batch_nowait([frame(i) for i in range(COUNT)]) == COUNT
    assert len(drain(host)) == COUNT


def test_receive_to_fd_counts_messages_outside_the_length_range(
    tx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = tx
    device, host = pair
    sizes = [13, 14, 0, 1514, 1515, 2048, 60]
    north.send_batch_nowait([frame(i, n) for i, n in enumerate(sizes)])
    result = south.receive_to_fd_nowait(device.fileno(), min_length=14, max_length=1514)
    assert result == FdBatch(len(sizes), 0, 4)
    assert drain(host) == [frame(1, 14), frame(3, 1514), frame(6, 60)]


def test_receive_to_fd_counts_failed_writes_as_dropped_and_consumes_them(
    tx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = tx
    device, host = pair
    # fill the host's receive queue until the device side would block
    device.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with pytest.raises(BlockingIOError):
        while True:
            device.send(b"x" * 1000)
    filler = len(drain(host))
    for _ in range(filler):  # refill: the queue is full again
        device.send(b"x" * 1000)
    north.send_batch_nowait([frame(i, 1000) for i in range(COUNT)])
    assert south.receive_to_fd_nowait(device.fileno()) == FdBatch(COUNT, COUNT, 0)
    with pytest.raises(IoqEmpty):
        south.receive_to_fd_nowait(device.fileno())
    assert drain(host) == [b"x" * 1000] * filler  # none of the ring's frames went out


def test_receive_to_fd_counts_a_bad_fd_as_dropped(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    r, w = os.pipe()
    try:
        north.send_batch_nowait([frame(i) for i in range(3)])
        # writing to a pipe's read end fails (EBADF): every frame is dropped
        assert south.receive_to_fd_nowait(r) == FdBatch(3, 3, 0)
    finally:
        os.close(r)
        os.close(w)


def test_receive_to_fd_writes_into_a_pipe(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    r, w = os.pipe()
    try:
        north.send_batch_nowait([b"one", b"two", b"three"])
        assert south.receive_to_fd_nowait(w) == FdBatch(3, 0, 0)
        assert os.read(r, 100) == b"onetwothree"
    finally:
        os.close(r)
        os.close(w)


# ---- fd -> ring ---------------------------------------------------------------


def test_send_from_fd_delivers_every_frame_once_in_order(
    rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = rx
    device, host = pair
    sent: list[bytes] = []
    got: list[bytes] = []
    for i in range(5 * COUNT):
        message = frame(i, 14 + (i * 131) % 1501)
        host.send(message)
        sent.append(message)
        if len(sent) % 5 == 0 or i == 5 * COUNT - 1:
            while True:
                result = south.send_from_fd_nowait(device.fileno())
                assert result.dropped == 0 and result.bad_size == 0
                if result.messages == 0:
                    break
                got.extend(north.receive_batch_nowait(COUNT))
    assert got == sent


def test_send_from_fd_sends_nothing_when_the_fd_has_nothing(
    rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = rx
    device, _ = pair
    assert south.send_from_fd_nowait(device.fileno()) == FdBatch(0, 0, 0)
    with pytest.raises(IoqEmpty):
        north.receive_nowait()


def test_send_from_fd_leaves_frames_in_the_fd_when_the_ring_is_full(
    rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = rx
    device, host = pair
    frames = [frame(i) for i in range(COUNT + 3)]
    for f in frames:
        host.send(f)
    assert south.send_from_fd_nowait(device.fileno()).messages == COUNT
    with pytest.raises(IoqFull):
        south.send_from_fd_nowait(device.fileno())
    assert north.receive_batch_nowait(COUNT) == frames[:COUNT]
    assert south.send_from_fd_nowait(device.fileno()).messages == 3
    assert north.receive_batch_nowait(COUNT) == frames[COUNT:]


def test_send_from_fd_stops_at_max_messages(
    rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = rx
    device, host = pair
    for i in range(5):
        host.send(frame(i))
    assert south.send_from_fd_nowait(device.fileno(), 2).messages == 2
    assert north.receive_batch_nowait(COUNT) == [frame(0), frame(1)]
    assert south.send_from_fd_nowait(device.fileno(), 64).messages == 3


def test_send_from_fd_discards_a_frame_longer_than_max_length(
    rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = rx
    device, host = pair
    for size in (60, 1515, 1514, 2000, 14):
        host.send(frame(size, size))
    result = south.send_from_fd_nowait(device.fileno(), max_length=1514)
    assert result == FdBatch(3, 0, 2)
    assert north.receive_batch_nowait(COUNT) == [frame(60, 60), frame(1514, 1514), frame(14, 14)]


def test_send_from_fd_never_writes_past_a_short_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    device, host = pair
    slot = 64
    with (
        Ioq.create(4, slot, direction="to_north") as north,
        Ioq.attach(north.fds, direction="to_north") as south,
    ):
        host.send(b"X" * (slot + 1))
        host.send(b"Y" * 3 * slot)
        host.send(b"Z" * slot)
        assert south.send_from_fd_nowait(device.fileno()) == FdBatch(1, 0, 2)
        data = bytes(north.data)
        assert data[slot:] == bytes(3 * slot)  # nothing beyond the one buffer used
        assert north.receive_nowait() == b"Z" * slot


def test_send_from_fd_ends_with_ioq_closed_at_end_of_file(
    rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    north, south = rx
    device, host = pair
    host.send(frame(1))
    host.shutdown(socket.SHUT_WR)
    assert south.send_from_fd_nowait(device.fileno()).messages == 1  # then end of file
    with pytest.raises(IoqClosed):
        south.send_from_fd_nowait(device.fileno())
    assert north.receive_nowait() == frame(1)


def test_send_from_fd_reports_a_read_error(rx: tuple[Ioq, Ioq]) -> None:
    _, south = rx
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            south.send_from_fd_nowait(w)  # a pipe's write end cannot be read
        assert info.value.errno == errno.EBADF
    finally:
        os.close(r)
        os.close(w)


# ---- hostile rings and wrong use ----------------------------------------------


def forge(north: Ioq, fmt: str, offset: int, *values: int) -> None:
    ring = mmap.mmap(north.fds.ring, HEAD + DESC * north.count)
    try:
        struct.pack_into(fmt, ring, offset, *values)
    finally:
        ring.close()


FORGERIES: dict[str, tuple[Any, ...]] = {
    "ptr-past-end": ("<Q", HEAD + 8, COUNT * SLOT),
    "len-past-end": ("<Q", HEAD + 16, COUNT * SLOT + 1),
    "ptr-plus-len-past-end": ("<QQ", HEAD + 8, COUNT * SLOT - 4, 5),
    "ptr-plus-len-wraps": ("<QQ", HEAD + 8, 2**64 - 8, 16),
    "sown-not-a-bit": ("<B", HEAD + 25, 7),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_receive_to_fd_faults_on_a_forged_descriptor_and_writes_nothing(
    tx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket], forgery: str
) -> None:
    north, south = tx
    device, host = pair
    north.send_nowait(frame(0))
    forge(north, *FORGERIES[forgery])
    with pytest.raises(IoqFault):
        south.receive_to_fd_nowait(device.fileno())
    assert drain(host) == []
    with pytest.raises(IoqFault):  # the handle stays dead
        south.receive_to_fd_nowait(device.fileno())


@pytest.mark.parametrize("forgery", FORGERIES)
def test_send_from_fd_faults_on_a_forged_buffer_and_reads_nothing(
    rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket], forgery: str
) -> None:
    north, south = rx
    device, host = pair
    host.send(frame(0))
    forge(north, *FORGERIES[forgery])
    with pytest.raises(IoqFault):
        south.send_from_fd_nowait(device.fileno())
    assert device.recv(65536) == frame(0)  # the frame was left in the fd


def test_fd_transfers_refuse_the_wrong_side_or_direction(
    tx: tuple[Ioq, Ioq], rx: tuple[Ioq, Ioq], pair: tuple[socket.socket, socket.socket]
) -> None:
    device, _ = pair
    fd = device.fileno()
    for call in (
        lambda: tx[1].send_from_fd_nowait(fd),
        lambda: rx[1].receive_to_fd_nowait(fd),
        lambda: tx[0].receive_to_fd_nowait(fd),
        lambda: rx[0].send_from_fd_nowait(fd),
    ):
        with pytest.raises(IoqError) as info:
            call()
        assert info.value.errno == errno.EPERM


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fd": -1},
        {"max_messages": 0},
        {"min_length": 10, "max_length": 9},
        {"min_length": -1},
        {"max_length": 2**32},
    ],
)
def test_receive_to_fd_checks_its_arguments(tx: tuple[Ioq, Ioq], kwargs: dict[str, int]) -> None:
    _, south = tx
    args: dict[str, int] = {"fd": 1, **kwargs}
    with pytest.raises(ValueError):
        south.receive_to_fd_nowait(**args)


@pytest.mark.parametrize("kwargs", [{"fd": -1}, {"max_messages": 0}, {"max_length": -1}])
def test_send_from_fd_checks_its_arguments(rx: tuple[Ioq, Ioq], kwargs: dict[str, int]) -> None:
    _, south = rx
    args: dict[str, int] = {"fd": 0, **kwargs}
    with pytest.raises(ValueError):
        south.send_from_fd_nowait(**args)


# ---- a real TAP ---------------------------------------------------------------

TAP_SCRIPT = r"""
import socket, subprocess, time
from vbusfs.classes._tap import TapInterface
from vbusfs.ioq import FdBatch, Ioq, IoqEmpty

ETHERTYPE = 0x88B5  # local experimental: nothing else in the namespace sends it
tap = TapInterface.open(bytes.fromhex("020000000001"), "fdtest%d")
subprocess.run(["ip", "link", "set", "dev", tap.name, "up"], check=True)
host = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
host.bind((tap.name, ETHERTYPE))
host.settimeout(5)

def frame(i, dst=b"\xff" * 6):
    return dst + bytes.fromhex("020000000002") + ETHERTYPE.to_bytes(2, "big") + bytes([i]) * 50

# client -> host: written into the TAP, seen by a packet socket on the interface
north = Ioq.create(8, 2048, direction="to_south")
south = Ioq.attach(north.fds, direction="to_south")
north.send_batch_nowait([frame(i) for i in range(5)])
assert south.receive_to_fd_nowait(tap.fd, min_length=14, max_length=1514) == FdBatch(5, 0, 0)
assert [host.recv(2048) for _ in range(5)] == [frame(i) for i in range(5)]

# host -> client: sent on the interface, read from the TAP into posted buffers
north_rx = Ioq.create(8, 2048, direction="to_north")
south_rx = Ioq.attach(north_rx.fds, direction="to_north")
sent = [frame(i, bytes.fromhex("020000000001")) for i in range(5)]
for f in sent:
    host.send(f)
got = []
deadline = time.monotonic() + 5
while len(got) < 5 and time.monotonic() < deadline:
    south_rx.send_from_fd_nowait(tap.fd, max_length=1514)
    try:
        got += north_rx.receive_batch_nowait(8)
    except IoqEmpty:
        time.sleep(0.01)
# the kernel may send its own frames (IPv6 neighbour discovery) on a new link
assert [f for f in got if f[12:14] == ETHERTYPE.to_bytes(2, "big")] == sent, got
print("tap-ok")
"""


@pytest.mark.root
@pytest.mark.skipif(
    not netns_available() or not os.path.exists("/dev/net/tun"),
    reason="needs root, unshare and /dev/net/tun",
)
def test_fd_transfers_move_frames_through_a_real_tap_in_a_private_netns() -> None:
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", TAP_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "tap-ok" in done.stdout, done.stderr
