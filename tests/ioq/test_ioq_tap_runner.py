"""TapRunner: venet-tap's frames between a TAP and its rings on a C thread of its own.

A SOCK_SEQPACKET socket pair stands in for the TAP (one frame per read and write, as a
TAP's descriptor): the runner holds one end, the test plays the host on the other.
"""

from __future__ import annotations

import mmap
import select
import socket
import time
from collections.abc import Iterator

import pytest

from vbusfs.ioq import Ioq, TapRunner, lowlevel


def frame(n: int, size: int = 64) -> bytes:
    return bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xB5]) + bytes([n % 256]) * (size - 14)


class Rig:
    def __init__(self) -> None:
        self.tx_north = Ioq.create(128, 2048, direction="to_south")
        self.rx_north = Ioq.create(16, 2048, direction="to_north")
        self.tx = Ioq.attach(self.tx_north.fds, direction="to_south")
        self.rx = Ioq.attach(self.rx_north.fds, direction="to_north")
        self.host, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tap.setblocking(False)
        self.tap = tap
        self.runner = TapRunner(self.tx, self.rx)

    def configure(self, *, tap_fd: int | None = None, link_up: bool = True, **kw: int) -> None:
        args = {"min_length": 14, "max_length": 1514, "every": 10, "spin_us": 0, **kw}
        fd = self.tap.fileno() if tap_fd is None else tap_fd
        self.runner.configure(tap_fd=fd, link_up=link_up, **args)

    def close(self) -> None:
        self.runner.close()
        for q in (self.tx, self.rx, self.tx_north, self.rx_north):
            q.close()
        self.tap.close()
        self.host.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


def until(check, what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_frames_cross_both_ways_with_nobody_calling_in(rig: Rig) -> None:
    rig.configure()
    rig.tx_north.send_batch([frame(i) for i in range(100)])
    rig.host.settimeout(5)
    assert [rig.host.recv(4096) for _ in range(100)] == [frame(i) for i in range(100)]
    rig.host.send(frame(7, 1514))
    assert rig.rx_north.receive(timeout=5) == frame(7, 1514)
    rig.host.send(frame(8, 1515))  # longer than the link's frames: dropped
    rig.host.send(frame(9))
    assert rig.rx_north.receive(timeout=5) == frame(9)
    c = rig.runner.counts()
    assert (c.tx_frames, c.rx_frames, c.oversize, c.dropped, c.faulted) == (100, 2, 1, 0, 0)
    assert 10 <= c.tx_signals <= 12  # one per txmitigation frames, one as a batch ends
    assert c.slept >= 1


def test_a_full_receive_ring_leaves_the_frames_in_the_tap_until_buffers_come(rig: Rig) -> None:
    rig.configure()
    for i in range(20):  # the client posted 16 buffers
        rig.host.send(frame(i))
    got = [rig.rx_north.receive(timeout=5) for _ in range(20)]  # each read reposts one
    assert got == [frame(i) for i in range(20)]
    assert rig.runner.counts().rx_frames == 20


def test_link_down_leaves_the_transmit_ring_alone_and_drops_what_the_tap_sends(rig: Rig) -> None:
    rig.configure(link_up=False)
    rig.tx_north.send(frame(1))
    rig.host.send(frame(2))
    until(lambda: not select.select([rig.tap], [], [], 0)[0], "the TAP's frame was not read")
    time.sleep(0.05)
    assert lowlevel.count_of(rig.tx, "inuse") == 1  # untouched
    with pytest.raises(TimeoutError):
        rig.rx_north.receive(timeout=0.05)
    rig.configure()  # up: the waiting frame goes out
    rig.host.settimeout(5)
    assert rig.host.recv(4096) == frame(1)


def test_without_a_tap_transmitted_frames_are_dropped_a_signal_per_txmitigation(rig: Rig) -> None:
    rig.configure(tap_fd=-1, every=10)
    rig.tx_north.send_batch([frame(i) for i in range(100)])
    until(lambda: rig.runner.counts().tx_frames == 100, "not all taken")
    c = rig.runner.counts()
    assert (c.dropped, c.tx_signals) == (100, 10)


def burst_of_spaced_frames(rig: Rig) -> None:
    """Twenty frames 5 ms apart, each taken by the host before the next goes.

    The test thread sleeps between frames, so the runner has its core and reaches its
    wait (a poll or a sleep) long before the next frame comes."""
    rig.host.settimeout(5)
    for i in range(20):
        rig.tx_north.send(frame(i))
        assert rig.host.recv(4096) == frame(i)
        time.sleep(0.005)


def test_burstthresh_polls_before_it_sleeps(rig: Rig) -> None:
    rig.configure(spin_us=200_000)  # longer than the gap: every frame is caught polling
    burst_of_spaced_frames(rig)
    c = rig.runner.counts()
    assert c.polled >= 15, c  # a frame may still land while the runner is preempted
    assert c.slept <= 5, c


def test_without_burstthresh_the_runner_sleeps_between_frames(rig: Rig) -> None:
    rig.configure(spin_us=0)
    burst_of_spaced_frames(rig)
    c = rig.runner.counts()
    assert c.polled == 0, c
    assert c.slept >= 15, c


def test_a_broken_transmit_ring_turns_the_fault_fd_readable_and_is_left_alone(rig: Rig) -> None:
    rig.configure()
    with rig.runner.locked():
        rig.tx_north.send(frame(1))
        with mmap.mmap(rig.tx_north.fds.ring, 0) as ring:
            ring[56 + 8 : 56 + 16] = (1 << 40).to_bytes(8, "little")  # descriptor 0's ptr
    rig.tx_north.inject()
    assert select.select([rig.runner.fault_fd], [], [], 5)[0]
    assert rig.runner.counts().faulted == 1
    rig.host.send(frame(2))  # the other way goes on
    assert rig.rx_north.receive(timeout=5) == frame(2)


def test_the_tap_closed_under_the_lock_is_released_and_a_new_one_is_used(rig: Rig) -> None:
    rig.configure()
    time.sleep(0.02)  # asleep in poll(2) on the TAP
    host, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tap.setblocking(False)
    with rig.runner.locked():  # the thread is out of poll(2): nothing holds the old TAP
        old_host = rig.host
        rig.tap.close()
        rig.host, rig.tap = host, tap
        rig.configure()  # inside the lock: no deadlock
    # the old TAP's last reference went with its close: its far end sees it at once
    old_host.settimeout(5)
    assert old_host.recv(4096) == b""
    old_host.close()
    rig.tx_north.send(frame(3))  # and frames go to the new one
    rig.host.settimeout(5)
    assert rig.host.recv(4096) == frame(3)


def test_arguments_are_checked_and_closing_twice_is_harmless() -> None:
    r = Rig()
    try:
        with pytest.raises(ValueError):
            r.configure(every=0)
        with pytest.raises(ValueError):
            r.configure(min_length=100, max_length=50)
        with pytest.raises(ValueError):
            TapRunner(r.rx, r.tx)  # the rings the wrong way round
    finally:
        r.close()
        r.runner.close()
    with pytest.raises(ValueError):
        r.configure()
