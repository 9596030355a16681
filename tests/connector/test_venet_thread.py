"""venet-loopback's and venet-tap's frames move on a thread of their own, never on the
daemon's event loop: they keep moving while that loop is blocked."""

from __future__ import annotations

import threading

from vbusfs.classes import VenetLoopback
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
