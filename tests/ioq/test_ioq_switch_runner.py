"""SwitchRunner: the switch's forwarding on a C thread that sleeps on the ports' rings."""

from __future__ import annotations

import mmap
import os
import select
import time
from collections.abc import Iterator

import pytest

from vbusfs.ioq import Ioq, Switch, SwitchRunner, lowlevel

BROADCAST = b"\xff" * 6


def frame(src: int, dst: bytes = BROADCAST, payload: bytes = b"x" * 50) -> bytes:
    return dst + bytes([2, 0, 0, 0, 0, src]) + b"\x88\xb5" + payload


class Port:
    def __init__(self) -> None:
        self.tx_north = Ioq.create(16, 2048, direction="to_south")
        self.rx_north = Ioq.create(16, 2048, direction="to_north")
        self.tx = Ioq.attach(self.tx_north.fds, direction="to_south")
        self.rx = Ioq.attach(self.rx_north.fds, direction="to_north")

    def close(self) -> None:
        for q in (self.tx, self.rx, self.tx_north, self.rx_north):
            q.close()


@pytest.fixture
def rig() -> Iterator[tuple[SwitchRunner, list[Port]]]:
    runner = SwitchRunner(Switch(), spin_us=0)
    ports = [Port() for _ in range(3)]
    yield runner, ports
    for i in range(3):
        runner.set_port(i, None, None)
    runner.close()
    for p in ports:
        p.close()


def test_frames_are_switched_as_they_come_with_nobody_calling_forward(rig) -> None:
    runner, ports = rig
    for i, p in enumerate(ports):
        runner.set_port(i, p.tx, p.rx, every=10)
    ports[0].tx_north.send(frame(1))  # flooded: 1 and 2 get it, never 0
    assert ports[1].rx_north.receive(timeout=5) == frame(1)
    assert ports[2].rx_north.receive(timeout=5) == frame(1)
    ports[1].tx_north.send(frame(2, dst=bytes([2, 0, 0, 0, 0, 1])))  # learned: port 0 only
    assert ports[0].rx_north.receive(timeout=5) == frame(2, dst=bytes([2, 0, 0, 0, 0, 1]))
    with pytest.raises(TimeoutError):
        ports[2].rx_north.receive(timeout=0.2)
    c0, c1 = runner.counts(0), runner.counts(1)
    assert (c0.tx_frames, c0.rx_delivered, c1.tx_frames, c1.rx_delivered) == (1, 1, 1, 1)
    assert c0.slept >= 1 and c0.faulted == 0


def test_a_port_taken_away_gets_nothing_and_sends_nothing(rig) -> None:
    runner, ports = rig
    for i, p in enumerate(ports[:2]):
        runner.set_port(i, p.tx, p.rx)
    runner.set_port(1, None, None)
    ports[0].tx_north.send(frame(1))
    ports[1].tx_north.send(frame(2))
    time.sleep(0.2)
    assert runner.counts(0).tx_frames == 1
    assert runner.counts(1) == runner.counts(2)  # both zero: port 1 was taken away
    with pytest.raises(TimeoutError):
        ports[1].rx_north.receive(timeout=0.1)
    assert lowlevel.count_of(ports[1].tx, "inuse") == 1  # left in its ring, untouched


@pytest.fixture
def faults() -> Iterator[list[int]]:
    """Three eventfds, one per port, as a switch's owner hands them to the runner.

    Ask for it before ``rig``: fixtures are torn down in reverse, so the runner lets go of the fds
    before they are closed."""
    fds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(3)]
    yield fds
    for fd in fds:
        os.close(fd)


def readable(fds: list[int], timeout: float) -> list[int]:
    return select.select(fds, [], [], timeout)[0]


def test_a_broken_transmit_ring_is_dropped_alone_and_its_fault_fd_told(faults, rig) -> None:
    runner, ports = rig
    for i, p in enumerate(ports[:2]):
        runner.set_port(i, p.tx, p.rx, fault_fd=faults[i])
    # a hostile north: a frame whose descriptor then points outside the data segment
    with runner.locked():
        ports[0].tx_north.send(frame(1))
        with mmap.mmap(ports[0].tx_north.fds.ring, 0) as ring:
            ring[56 + 8 : 56 + 16] = (1 << 40).to_bytes(8, "little")  # descriptor 0's ptr
    ports[0].tx_north.inject()
    assert readable(faults[:1], 5) == faults[:1]  # no polling: the thread says so
    assert runner.counts(0).faulted == 1
    assert os.eventfd_read(faults[0]) == 1  # once
    ports[1].tx_north.send(frame(2))  # the others go on
    assert ports[0].rx_north.receive(timeout=5) == frame(2)
    assert readable(faults, 0.1) == []  # and only the broken port's fd was written
    # a new fd for a port faulted already hears of it at once (its counts are kept)
    runner.set_port(0, None, ports[0].rx, fault_fd=faults[2])
    assert readable(faults, 1) == [faults[2]]
    with pytest.raises(ValueError):
        runner.set_port(0, None, None, fault_fd=-2)


def test_a_broken_receive_ring_tells_its_own_ports_fault_fd(faults, rig) -> None:
    runner, ports = rig
    for i, p in enumerate(ports[:2]):
        runner.set_port(i, p.tx, p.rx, fault_fd=faults[i])
    # port 1's client posted a receive buffer pointing outside its data segment
    with runner.locked(), mmap.mmap(ports[1].rx_north.fds.ring, 0) as ring:
        ring[56 + 8 : 56 + 16] = (1 << 40).to_bytes(8, "little")
    ports[0].tx_north.send(frame(1))  # flooded to port 1
    assert readable(faults, 5) == [faults[1]]
    assert (runner.counts(0).faulted, runner.counts(1).faulted) == (0, 2)


def test_the_lock_keeps_the_thread_out_and_closing_twice_is_harmless() -> None:
    runner = SwitchRunner(Switch(), spin_us=100)
    p = Port()
    try:
        runner.set_port(0, p.tx, p.rx)
        with runner.locked():
            p.tx_north.send(frame(1))
            time.sleep(0.05)
            assert lowlevel.count_of(p.tx, "inuse") == 1  # not taken while locked
        runner.tune(0, 5)
        with pytest.raises(ValueError):
            runner.set_port(0, p.tx, p.rx, every=0)
        runner.set_port(0, None, None)
    finally:
        runner.close()
        runner.close()
        p.close()
    with pytest.raises(ValueError):
        runner.set_port(0, None, None)
