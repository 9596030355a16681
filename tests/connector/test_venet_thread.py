"""venet-loopback's and venet-tap's frames move on a thread of their own, never on the
daemon's event loop: they keep moving while that loop is blocked. venet-switch's
thread tells that loop of a broken ring, which never polls for one."""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import time

import pytest

from vbusfs.classes import VenetLoopback, VenetSwitch
from vbusfs.classes._venet_switch import SwitchConnection, SwitchPort
from vbusfs.ioq import Switch, SwitchRunner
from vbusfs.model import Busy
from vbusfs.testing import DeviceHarness


def frame(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xB5]) + b"%04d" % n + bytes(46)


def test_loopback_frames_come_back_while_the_daemons_loop_is_blocked() -> None:
    with DeviceHarness(VenetLoopback, attributes={"enabled": "1"}) as h:
        interface_id = h.interface_id
        with h.connect().open_venet(interface_id, slots=8) as nic:
            nic.send(frame(0))
            assert nic.recv(timeout=5) == frame(0)
            blocked, release = threading.Event(), threading.Event()

            def block_the_loop() -> None:
                blocked.set()
                release.wait(10)  # the daemon's trio thread does nothing else meanwhile

            blocker = threading.Thread(target=h.in_daemon, args=(block_the_loop,))
            blocker.start()
            try:
                assert blocked.wait(5)
                for i in range(1, 50):  # more frames than the rings hold: all come back
                    nic.send(frame(i), timeout=2)
                    assert nic.recv(timeout=2) == frame(i)
            finally:
                release.set()
                blocker.join(10)
            assert nic.stats()["rx_frames"] == 50  # the loop answers again


def _runner_of(h: DeviceHarness) -> SwitchRunner:
    runner = h.in_daemon(lambda: h.vbus.device(h.device).state.runner)
    assert isinstance(runner, SwitchRunner)
    return runner


def test_a_switch_client_costs_the_daemons_loop_nothing_until_its_ring_breaks(caplog) -> None:
    """The loop waits for the switch's thread to report a broken ring: an idle client
    never makes it take the runner's lock (a loop that polled took it 20 times a second), and a
    ring broken then is heard of at once all the same."""
    with (
        DeviceHarness(VenetSwitch) as h,
        h.connect().open_venet(h.interface_id, slots=8) as nic,
    ):
        nic.link_down()  # the port let go and linked again: its fault fd handed back too
        nic.link_up()
        runner = _runner_of(h)
        taken: list[float] = []
        real = runner.locked

        def counted() -> contextlib.AbstractContextManager[None]:
            taken.append(time.monotonic())
            return real()

        h.in_daemon(setattr, runner, "locked", counted)  # the daemon's calls go here
        time.sleep(0.3)
        assert taken == [], f"an idle client took the runner's lock {len(taken)} times"
        # a hostile client: a frame whose descriptor then points far outside its data
        with real():
            nic.tx.send(frame(1))
            with mmap.mmap(nic.tx.fds.ring, 0) as ring:
                ring[56 + 8 : 56 + 16] = (1 << 40).to_bytes(8, "little")
        nic.tx.inject()
        deadline = time.monotonic() + 5
        while "broke queue protocol" not in caplog.text:
            assert time.monotonic() < deadline, "the broken transmit ring went unnoticed"
            time.sleep(0.01)
        assert "the transmit queue broke the protocol" in caplog.text
        assert taken, "the fault was read without the lock: the count above proves nothing"


def _unlink(h: DeviceHarness, interface_id: int) -> None:
    h.vbus.unlink(h.bus, h.vbus.bus(h.bus).interfaces[interface_id].link_name)


def test_a_switch_client_gone_leaves_none_of_its_descriptors() -> None:
    # each connection owns a fault eventfd besides its rings: it goes with the connection
    with DeviceHarness(VenetSwitch) as h:
        c = h.connect()
        with c.open_venet(h.interface_id, slots=8) as nic:  # the thread is up from here on
            nic.send(frame(0))
        before = len(os.listdir("/proc/self/fd"))
        interface_id = h.interface_id
        for i in range(5):
            with c.open_venet(interface_id, slots=8) as nic:
                nic.send(frame(i))
                assert h.in_daemon(lambda: len(h.vbus.device(h.device).state.connections)) == 1
                if i == 2:  # the device unlinked under its open client
                    h.in_daemon(_unlink, h, interface_id)
            if i == 2:
                interface_id = h.link()
        deadline = time.monotonic() + 5
        while h.in_daemon(lambda: len(h.vbus.device(h.device).state.connections)):
            assert time.monotonic() < deadline, "the last client was never let go"
            time.sleep(0.01)
        assert len(os.listdir("/proc/self/fd")) == before


def test_a_switch_client_refused_for_want_of_an_index_changes_nothing() -> None:
    switch = VenetSwitch().create("sw")
    switch.indices = {f"b.{i}": i for i in range(Switch.MAX_PORTS)}  # every index taken
    port = SwitchPort("b.99", bytes(6))
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(Busy, match="clients already"):
        SwitchConnection(switch, port)
    assert (port.clients, switch.tuning.clients) == (0, 0)  # its claims undone
    assert sorted(os.listdir("/proc/self/fd")) == before  # and no fault fd left open
    del switch.indices["b.3"]
    conn = SwitchConnection(switch, port)  # one free: taken
    try:
        assert (conn.index, port.clients, switch.tuning.clients) == (3, 1, 1)
    finally:
        conn.close()
    assert (port.clients, switch.tuning.clients) == (0, 0)
