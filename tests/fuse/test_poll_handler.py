"""The poll handler called directly, with a stand-in for the kernel's poll handle."""

from __future__ import annotations

import os
import select

import pytest
from fuse_calls import CTX, lookup_path, run

from vbusfs.classes import default_model
from vbusfs.fuse import VbusOperations

READY = select.POLLIN | select.POLLRDNORM | select.POLLOUT | select.POLLWRNORM
CHANGED = select.POLLPRI | select.POLLERR


class KernelPollHandle:
    """What pyfuse3 hands `poll`: notified at most once, then dropped."""

    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


@pytest.fixture
def ops() -> VbusOperations:
    ops = VbusOperations(default_model())
    ops.vbus.create_device("D")
    ops.vbus.set_device_type("D", "venet-tap")
    return ops


def opened(ops: VbusOperations, path: str) -> tuple[int, int]:
    ino = lookup_path(ops, path)
    return ino, run(ops.open, ino, os.O_RDONLY, CTX).fh


def test_a_poller_is_woken_once_by_a_change_and_rearmed_by_a_read_from_0(ops):
    ino, fh = opened(ops, "sys/vbus/devices/D/burstthresh")
    waiting = KernelPollHandle()
    assert run(ops.poll, ino, fh, waiting, CTX) == READY
    device = ops.vbus.devices["D"]
    ops.vbus.store_attribute(device, "burstthresh", "9")
    ops.vbus.store_attribute(device, "burstthresh", "10")
    assert waiting.notified == 1  # one wake-up; the kernel polls again
    assert run(ops.poll, ino, fh, KernelPollHandle(), CTX) == READY | CHANGED
    assert run(ops.poll, ino, fh, None, CTX) == READY | CHANGED  # until read
    assert run(ops.read, fh, 0, 4096) == b"10\n"
    assert run(ops.poll, ino, fh, None, CTX) == READY


def test_a_change_back_to_the_value_read_is_no_change(ops):
    ino, fh = opened(ops, "sys/vbus/devices/D/burstthresh")
    device = ops.vbus.devices["D"]
    waiting = KernelPollHandle()
    run(ops.poll, ino, fh, waiting, CTX)
    ops.vbus.store_attribute(device, "burstthresh", "20")  # what it read: 20, the default
    assert waiting.notified == 1  # woken liberally ...
    assert run(ops.poll, ino, fh, None, CTX) == READY  # ... but nothing to report


def test_a_removed_attribute_reports_a_change_and_released_handles_are_not_notified(ops):
    ino, fh = opened(ops, "sys/vbus/devices/D/enabled")
    other_ino, other_fh = opened(ops, "sys/vbus/devices/D/host_mac")
    waiting, released = KernelPollHandle(), KernelPollHandle()
    run(ops.poll, ino, fh, waiting, CTX)
    run(ops.poll, other_ino, other_fh, released, CTX)
    run(ops.release, other_fh)
    ops.vbus.remove_device("D")
    assert (waiting.notified, released.notified) == (1, 0)
    assert run(ops.poll, ino, fh, None, CTX) == READY | CHANGED


def test_nothing_is_notified_once_the_session_closes(ops):
    ino, fh = opened(ops, "sys/vbus/devices/D/burstthresh")
    waiting = KernelPollHandle()
    run(ops.poll, ino, fh, waiting, CTX)
    ops.pollers.close()
    ops.vbus.store_attribute(ops.vbus.devices["D"], "burstthresh", "9")
    assert waiting.notified == 0
