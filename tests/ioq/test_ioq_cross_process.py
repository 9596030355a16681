"""Rings between real processes: passed fds, blocking waits, trio, and peers that die."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import pytest
import trio

from vbusfs.ioq import AsyncIoq, Ioq, IoqClosed, IoqFds, lowlevel


def numbered(i: int, size: int) -> bytes:
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


def check_numbered(msgs: list[bytes], first: int) -> int:
    for k, m in enumerate(msgs):
        assert m == numbered(first + k, len(m)), f"message {first + k} wrong"
    return first + len(msgs)


def send_fds(sock: socket.socket, q: Ioq) -> None:
    socket.send_fds(sock, [b"ioq"], list(q.fds))


def recv_fds(sock: socket.socket) -> IoqFds:
    _, fds, _, _ = socket.recv_fds(sock, 16, 4)
    return IoqFds(*fds)


def test_ioq_inherited_fds_carry_every_message_once_in_order(children: Any) -> None:
    total = 20000
    with Ioq.create(count=16, slot_size=256) as north:
        fds = north.fds

        def south_side() -> None:
            south = Ioq.attach(fds, direction="to_south")
            got = 0
            while got < total:
                got = check_numbered(south.receive_batch(64, timeout=10), got)
            assert got == total

        pid = children.fork(south_side)
        i = 0
        while i < total:
            batch = [numbered(i + k, 4 + (i + k) % 200) for k in range(min(37, total - i))]
            north.send_batch(batch, timeout=10)
            i += len(batch)
        assert children.wait(pid) == 0


def test_ioq_fds_passed_over_scm_rights_work_toward_north(children: Any) -> None:
    total = 5000
    parent_sock, child_sock = socket.socketpair()
    with parent_sock, child_sock:

        def north_side() -> None:
            north = Ioq.create(count=8, slot_size=64, direction="to_north")
            send_fds(child_sock, north)
            got = 0
            while got < total:
                got = check_numbered(north.receive_batch(64, timeout=10), got)

        pid = children.fork(north_side)
        fds = recv_fds(parent_sock)
        try:
            with Ioq.attach(fds, direction="to_north") as south:
                for i in range(total):
                    south.send(numbered(i, 1 + i % 64), timeout=10)
        finally:
            for fd in fds:
                os.close(fd)
        assert children.wait(pid) == 0


def test_ioq_receiver_notices_a_killed_sender(children: Any) -> None:
    parent_sock, child_sock = socket.socketpair()
    with parent_sock, child_sock:

        def north_side() -> None:
            north = Ioq.create(count=32, slot_size=64)
            send_fds(child_sock, north)
            i = 0
            while True:
                north.send(numbered(i, 64), timeout=30)
                i += 1

        pid = children.fork(north_side)
        fds = recv_fds(parent_sock)
        pidfd = os.pidfd_open(pid)
        try:
            with Ioq.attach(fds, direction="to_south") as south:
                south.watch_peer(pidfd)
                got = 0
                while got < 1000:
                    got = check_numbered(south.receive_batch(64, timeout=10), got)
                os.kill(pid, signal.SIGKILL)
                start = time.monotonic()
                with pytest.raises(IoqClosed):
                    while True:  # drains what is left, then sees the hang-up
                        got = check_numbered(south.receive_batch(64, timeout=10), got)
                assert time.monotonic() - start < 10
        finally:
            os.close(pidfd)
            for fd in fds:
                os.close(fd)
        assert children.wait(pid) == -signal.SIGKILL


def test_ioq_sender_notices_a_receiver_killed_mid_transfer(children: Any) -> None:
    with Ioq.create(count=16, slot_size=64) as north:
        fds = north.fds

        def south_side() -> None:
            south = Ioq.attach(fds, direction="to_south")
            got = 0
            while got < 500:
                got = check_numbered(south.receive_batch(7, timeout=10), got)
            os.kill(os.getpid(), signal.SIGKILL)

        pid = children.fork(south_side)
        pidfd = os.pidfd_open(pid)
        try:
            north.watch_peer(pidfd)
            start = time.monotonic()
            with pytest.raises(IoqClosed):
                for i in range(100000):
                    north.send(numbered(i, 64), timeout=10)
            assert time.monotonic() - start < 10
        finally:
            os.close(pidfd)
        assert children.wait(pid) == -signal.SIGKILL


def test_ioq_watched_socket_hang_up_ends_a_wait(children: Any) -> None:
    parent_sock, child_sock = socket.socketpair()
    with parent_sock, Ioq.create(count=4, slot_size=8) as north:

        def peer() -> None:
            parent_sock.close()
            child_sock.recv(1)  # waits for "go", then exits and hangs up

        pid = children.fork(peer)
        child_sock.close()
        south = Ioq.attach(north.fds, direction="to_south")
        south.watch_peer(parent_sock)
        with pytest.raises(TimeoutError):
            south.wait_receivable(timeout=0.05)  # peer alive: a plain timeout
        parent_sock.send(b"g")
        with pytest.raises(IoqClosed):
            south.wait_receivable(timeout=10)
        south.close()
        assert children.wait(pid) == 0


@pytest.mark.parametrize("spin_us", [0, 50], ids=["eventfd", "adaptive"])
def test_ioq_ping_pong_loses_no_wake_up(children: Any, spin_us: int) -> None:
    rounds = 2000
    down = Ioq.create(count=4, slot_size=16, direction="to_south")
    up = Ioq.create(count=4, slot_size=16, direction="to_north")
    with down, up:
        dfds, ufds = down.fds, up.fds

        def echo() -> None:
            d = Ioq.attach(dfds, direction="to_south")
            u = Ioq.attach(ufds, direction="to_north")
            for _ in range(rounds):
                u.send(d.receive(timeout=5, spin_us=spin_us), timeout=5)

        pid = children.fork(echo)
        for i in range(rounds):
            down.send(numbered(i, 8), timeout=5)
            # a lost wake-up shows as TimeoutError here, never as a hang
            assert up.receive(timeout=5, spin_us=spin_us) == numbered(i, 8)
        assert children.wait(pid) == 0


def test_ioq_trio_south_receives_from_another_process_then_sees_exit(children: Any) -> None:
    total = 3000
    with Ioq.create(count=16, slot_size=32) as north:
        fds = north.fds

        def north_side() -> None:
            for i in range(0, total, 50):
                north.send_batch([numbered(i + k, 32) for k in range(50)], timeout=10)
                time.sleep(0.001)  # let the receiver go to sleep between bursts
            while lowlevel.count_of(north, "inuse"):
                time.sleep(0.001)

        south = AsyncIoq.attach(fds, direction="to_south")
        pid = children.fork(north_side)
        pidfd = os.pidfd_open(pid)
        south.watch_peer(pidfd)

        async def main() -> int:
            got = 0
            with trio.fail_after(20):
                try:
                    while True:
                        await south.wait_receivable()
                        got = check_numbered(south.receive_batch_nowait(64), got)
                except IoqClosed:
                    return got

        try:
            assert trio.run(main) == total
        finally:
            south.close()
            os.close(pidfd)
        assert children.wait(pid) == 0
