"""ioq_wait_arm: the one C function that arms and disarms a wait (drain, arm, re-check).

The blocking wait (ioq_wait) and the trio face both sleep between its two calls, so
the shm-signal protocol exists once, in C.  These tests drive it directly and watch
the irq bytes of behaviour §7.3 (south's irq at ring offset 19: enabled, pending, dirty).
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import threading
from collections.abc import Iterator

import pytest

from vbusfs.ioq import Ioq, IoqClosed
from vbusfs.ioq._binding import E_CLOSED, RECV, SEND, check, lib
from vbusfs.ioq._ring import c_handle

SOUTH_IRQ = slice(19, 22)
ARM, DISARM = 1, 0


@pytest.fixture
def pair() -> Iterator[tuple[Ioq, Ioq]]:
    north = Ioq.create(count=2, slot_size=64)
    south = Ioq.attach(north.fds, direction="to_south")
    yield north, south
    south.close()
    north.close()


def irq(q: Ioq) -> bytes:
    with mmap.mmap(q.fds.ring, 56) as m:
        return bytes(m[SOUTH_IRQ])


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_wait_arm_sees_work_published_before_arming_and_stays_disarmed(
    pair: tuple[Ioq, Ioq],
) -> None:
    north, south = pair
    north.send_nowait(b"early")
    assert lib.ioq_wait_arm(c_handle(south), RECV, ARM) == 1
    enabled, pending, dirty = irq(south)
    assert (enabled, pending, dirty) == (0, 0, 0)  # drained, and not left armed


def test_wait_arm_with_nothing_ready_arms_and_a_send_wakes_the_eventfd(
    pair: tuple[Ioq, Ioq],
) -> None:
    north, south = pair
    h = c_handle(south)
    wake = lib.ioq_wake_fd(h)
    assert lib.ioq_wait_arm(h, RECV, ARM) == 0
    assert irq(south) == b"\1\0\0"  # enabled, nothing pending
    assert not readable(wake)
    north.send_nowait(b"late")
    assert readable(wake)
    assert irq(south) == b"\1\1\1"  # the sender saw enabled: pending, eventfd written
    assert lib.ioq_wait_arm(h, RECV, DISARM) == 1
    assert irq(south)[0] == 0
    assert south.receive_nowait() == b"late"


def test_wait_disarm_with_nothing_ready_says_zero(pair: tuple[Ioq, Ioq]) -> None:
    _, south = pair
    h = c_handle(south)
    assert lib.ioq_wait_arm(h, RECV, ARM) == 0
    assert lib.ioq_wait_arm(h, RECV, DISARM) == 0
    assert irq(south)[0] == 0


def test_wait_disarm_reports_a_peer_that_hung_up(pair: tuple[Ioq, Ioq]) -> None:
    _, south = pair
    mine, theirs = socket.socketpair()
    try:
        south.watch_peer(mine)
        h = c_handle(south)
        assert lib.ioq_wait_arm(h, RECV, ARM) == 0
        theirs.close()
        assert lib.ioq_wait_arm(h, RECV, DISARM) == E_CLOSED
        with pytest.raises(IoqClosed):
            check(E_CLOSED)
    finally:
        south.watch_peer(None)
        mine.close()


def test_wait_arm_refuses_the_wrong_side(pair: tuple[Ioq, Ioq]) -> None:
    north, south = pair
    assert lib.ioq_wait_arm(c_handle(south), SEND, ARM) < 0
    assert lib.ioq_wait_arm(c_handle(north), RECV, ARM) < 0
    assert irq(south)[0] == 0


def test_wait_arm_loses_no_wake_up_under_a_race(pair: tuple[Ioq, Ioq]) -> None:
    # a sender thread (whose blocking sends wait for room through ioq_wait, which
    # is built on ioq_wait_arm too) against a receiver that sleeps only on the
    # eventfd between arm and disarm: a lost wake-up shows as a sleep that times out
    north, south = pair
    total = 3000
    h = c_handle(south)
    wake = lib.ioq_wake_fd(h)
    sender_error: list[BaseException] = []

    def send_all() -> None:
        try:
            for i in range(total):
                north.send(i.to_bytes(4, "little"), timeout=10)
        except BaseException as e:  # pragma: no cover - reported below
            sender_error.append(e)

    thread = threading.Thread(target=send_all)
    thread.start()
    got: list[int] = []
    timeouts = 0
    try:
        while len(got) < total and timeouts == 0:
            if south.receivable():
                got.extend(int.from_bytes(m, "little") for m in south.receive_batch_nowait(2))
                continue
            if check(lib.ioq_wait_arm(h, RECV, ARM)):
                continue
            if not select.select([wake], [], [], 5.0)[0]:
                timeouts += 1
            check(lib.ioq_wait_arm(h, RECV, DISARM))
    finally:
        thread.join(30)
    assert not sender_error
    assert timeouts == 0, f"a wake-up was lost after {len(got)} messages"
    assert got == list(range(total))


def test_no_module_calls_the_raw_shm_signal_steps() -> None:
    import vbusfs

    root = os.path.dirname(vbusfs.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith((".py", ".pyi")):
                with open(os.path.join(folder, name)) as f:
                    assert "shm_signal_" not in f.read(), name
