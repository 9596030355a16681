"""FdPump: frames between a descriptor and a venet's two rings, the loop in C.

The descriptor is one end of a SOCK_SEQPACKET pair (one frame per read and write, as a
TAP); the device is the rings' south side in this process.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vbusfs.ioq import FdPump, Ioq, IoqClosed, IoqEmpty, PumpEnd

SLOT = 2048


@dataclass
class Rig:
    rx: Ioq  # north, to_north: device -> host
    tx: Ioq  # north, to_south: host -> device
    rx_south: Ioq
    tx_south: Ioq
    host: socket.socket  # the pump's descriptor
    far: socket.socket  # the other end: what the host network sees
    stop_r: socket.socket
    stop_w: socket.socket


@pytest.fixture
def rig() -> Iterator[Rig]:
    rx = Ioq.create(16, SLOT, direction="to_north")
    tx = Ioq.create(16, SLOT, direction="to_south")
    host, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    host.setblocking(False)
    stop_r, stop_w = socket.socketpair()
    r = Rig(
        rx,
        tx,
        Ioq.attach(rx.fds, direction="to_north"),
        Ioq.attach(tx.fds, direction="to_south"),
        host,
        far,
        stop_r,
        stop_w,
    )
    yield r
    for q in (r.rx, r.tx, r.rx_south, r.tx_south):
        q.close()
    for s in (host, far, stop_r, stop_w):
        s.close()


def run_in_thread(
    pump: FdPump, rig: Rig, **kwargs: object
) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def body() -> None:
        try:
            out.append(pump.run(rig.stop_r.fileno(), **kwargs))  # type: ignore[arg-type]
        except Exception as exc:  # reported to the test
            out.append(exc)

    t = threading.Thread(target=body)
    t.start()
    return t, out


def test_frames_cross_both_ways_until_stopped(rig: Rig) -> None:
    pump = FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=1514)
    t, out = run_in_thread(pump, rig)
    frames = [bytes([i]) * (60 + i) for i in range(40)]
    for f in frames:
        rig.far.send(f)
    got: list[bytes] = []
    while len(got) < len(frames):
        rig.tx_south.wait_receivable(5)
        got += rig.tx_south.receive_batch_nowait(64)
    assert got == frames
    back = [bytes([0xAA, i]) * 40 for i in range(30)]
    sent = 0
    while sent < len(back):
        rig.rx_south.wait_sendable(5)
        sent += rig.rx_south.send_batch_nowait(back[sent:])
    rig.far.settimeout(5)
    assert [rig.far.recv(4096) for _ in back] == back
    rig.stop_w.send(b"x")
    t.join(5)
    assert out == [PumpEnd.STOPPED]
    c = pump.counts()
    assert (c.to_device, c.to_host, c.host_dropped, c.bad_size) == (40, 30, 0, 0)


def test_a_frame_longer_than_max_length_is_dropped_and_counted(rig: Rig) -> None:
    pump = FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=100)
    t, out = run_in_thread(pump, rig)
    rig.far.send(b"a" * 101)
    rig.far.send(b"b" * 100)
    rig.tx_south.wait_receivable(5)
    assert rig.tx_south.receive_batch_nowait(64) == [b"b" * 100]
    rig.stop_w.send(b"x")
    t.join(5)
    assert out == [PumpEnd.STOPPED] and pump.counts().bad_size == 1


def test_flushed_buffers_are_reposted_not_written(rig: Rig) -> None:
    pump = FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=1514)
    t, out = run_in_thread(pump, rig)
    rig.rx_south.send_batch_nowait([b""] * 16)  # FLUSHRX: every buffer back empty
    rig.rx_south.wait_sendable(5)  # reposted
    rig.rx_south.send_nowait(b"frame!" * 3)
    rig.far.settimeout(5)
    assert rig.far.recv(4096) == b"frame!" * 3
    rig.stop_w.send(b"x")
    t.join(5)
    assert out == [PumpEnd.STOPPED]
    assert pump.counts().flushed == 16 and pump.counts().to_host == 1


def test_an_event_fd_returns_and_a_hangup_ends_with_closed(rig: Rig) -> None:
    pump = FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=1514)
    ev_r, ev_w = socket.socketpair()
    hup_near, hup_far = socket.socketpair()
    try:
        ev_w.send(b"e")
        assert (
            pump.run(rig.stop_r.fileno(), event_fd=ev_r.fileno(), hangup=hup_near) is PumpEnd.EVENT
        )
        ev_r.recv(1)
        t, out = run_in_thread(pump, rig, event_fd=ev_r.fileno(), hangup=hup_near)
        hup_far.close()
        t.join(5)
        assert len(out) == 1 and isinstance(out[0], IoqClosed)
    finally:
        for s in (ev_r, ev_w, hup_near, hup_far):
            s.close()


def test_a_full_transmit_ring_waits_and_loses_nothing(rig: Rig) -> None:
    pump = FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=1514, spin_us=10)
    t, out = run_in_thread(pump, rig)
    frames = [i.to_bytes(2, "big") * 30 for i in range(100)]  # 16 slots: the ring fills
    for f in frames:
        rig.far.send(f)
    got: list[bytes] = []
    while len(got) < len(frames):
        rig.tx_south.wait_receivable(5)
        with contextlib.suppress(IoqEmpty):
            got += rig.tx_south.receive_batch_nowait(5)
    assert got == frames
    rig.stop_w.send(b"x")
    t.join(5)
    assert out == [PumpEnd.STOPPED]


def test_wrong_rings_and_arguments_are_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="rx"):
        FdPump(rig.tx, rig.tx, rig.host.fileno(), max_length=1514)
    with pytest.raises(ValueError, match="tx"):
        FdPump(rig.rx, rig.tx_south, rig.host.fileno(), max_length=1514)
    with pytest.raises(ValueError, match="spin_us"):
        FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=1514, spin_us=-1)
    with pytest.raises(ValueError, match="max_length"):
        FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=0)
    with pytest.raises(ValueError, match="fd"):
        FdPump(rig.rx, rig.tx, -1, max_length=1514)
    pump = FdPump(rig.rx, rig.tx, rig.host.fileno(), max_length=1514)
    with pytest.raises(ValueError, match="fd"):
        pump.run(-3)
