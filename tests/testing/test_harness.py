"""DeviceHarness: a class's data path through the daemon's connector in this process.

Each ending runs the daemon's close order and the harness checks it; its checks fail on a
class that breaks the contract and on a framework that breaks its guarantees; the
harness leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import sys
import threading

import kit_devices
import pytest

import vbusfs.testing._harness as harness_module
import vbusfs.testing._inprocess as inprocess_module
import vbusfs.testing._probe as probe_module
from vbusfs.classes import VenetLoopback
from vbusfs.client import ConnectorError, Venet
from vbusfs.connector._datapath import DataPath
from vbusfs.device import Ioq, IoqClosed, Queues
from vbusfs.testing import ENDINGS, DeviceHarness


@pytest.mark.parametrize("ending", ENDINGS)
def test_each_ending_runs_the_daemons_close_order_and_is_checked(ending):
    with DeviceHarness(kit_devices.Upper, attributes={"size": "1024", "label": "x1"}) as h:
        assert (h.show("size"), h.show("blocks"), h.show("label")) == ("1024", "2", "x1")
        dev = h.open()
        rr = h.request_response(dev)
        assert rr.request(b"abc", 5) == b"ABC"
        assert dev.stats() == {"handled": 1}
        probe = dev.probe
        # the framework's loop thread, handed the framework's Queues
        assert probe.thread is not None and probe.thread.name == (
            "vbusfs kit-upper device D interface B/0"
        )
        assert isinstance(probe.queues, Queues) and sorted(probe.queues) == [0, 1]
        assert h.show("opened") == "1"
        ended = h.end(dev, ending)
        assert ended == [dev] and dev.ending == ending
        # serve() has returned (probe.ended); its thread then unwinds the framework's frames
        probe.thread.join(5)
        assert probe.closes == 1 and probe.rings_closed() and not probe.thread.is_alive()
        assert isinstance(probe.outcome, IoqClosed) or probe.outcome is None
        assert not h.instance.open_devices
        rr.close()
        if ending == "unmount":
            assert h.vbus.devices == {} and h.vbus.buses == {}
            return
        assert h.show("opened") == "0"
        if ending == "unlink":
            with pytest.raises(LookupError):
                _ = h.interface_id
            h.link()
        # the device opens again at once
        again = h.request_response(h.open())
        assert again.request(b"x", 5) == b"X"
        again.close()


def test_the_harness_refuses_what_the_daemon_refuses():
    with DeviceHarness(kit_devices.Upper) as h:
        with pytest.raises(ConnectorError) as refused:
            h.open(version=2)
        assert refused.value.errno == errno.EINVAL
        dev = h.open()
        with pytest.raises(ConnectorError) as refused:
            h.open()  # one client at a time
        assert refused.value.errno == errno.EBUSY
        ring = Ioq.create(8, 4096, direction="to_south")  # slots over the 256-byte spec
        with pytest.raises(ConnectorError, match=r"queue 0 \(requests\) takes buffers") as refused:
            dev.attach_queue(0, ring)
        assert refused.value.errno == errno.EINVAL
        ring.close()
        ring = Ioq.create(8, 64, direction="to_south")
        with pytest.raises(ConnectorError, match="has no queue 5") as refused:
            dev.attach_queue(5, ring)
        assert refused.value.errno == errno.EINVAL
        dev.attach_queue(0, ring)
        with pytest.raises(ConnectorError, match="already attached") as refused:
            dev.attach_queue(0, ring)
        assert refused.value.errno == errno.EBUSY
        assert not dev.probe.started.is_set()  # queue 1 is missing: no loop yet
        h.end(dev, "death")
        ring.close()


def test_a_loop_that_fails_faults_its_client_and_the_device_opens_again():
    with DeviceHarness(kit_devices.FailingLoop) as h:
        dev = h.open()
        rr = h.request_response(dev)
        for request in (b"a", b"b", b"c"):
            rr.submit(request, 5)
        outcome = h.check_failed(dev)
        assert isinstance(outcome, RuntimeError) and "third request" in str(outcome)
        rr.close()
        again = h.request_response(h.open())
        assert again.request(b"ok", 5) == b"OK"
        again.close()


def test_the_harness_catches_a_loop_that_ignores_the_stop():
    with DeviceHarness(kit_devices.StuckLoop, join_bound=0.2) as h:
        dev = h.open()
        rr = h.request_response(dev)
        with pytest.raises(AssertionError, match=r"its loop did not stop within 0.2 s"):
            h.end(dev, "close")
        rr.close()


def test_the_harness_catches_a_close_that_raises():
    h = DeviceHarness(kit_devices.RaisingClose).start()
    dev = h.open()
    rr = h.request_response(dev)
    with pytest.raises(AssertionError, match="internal error closing the device") as caught:
        h.end(dev, "close")
    assert "close() must not fail" in str(caught.value)  # the traceback comes with it
    rr.close()
    h.close()


def test_the_harness_checks_the_opens_left_open_at_its_end():
    h = DeviceHarness(kit_devices.StuckLoop, join_bound=0.2).start()
    rr = h.request_response()
    with pytest.raises(AssertionError, match=r"did not stop within 0.2 s of the unmount"):
        h.close()
    rr.close()


def test_a_failing_test_keeps_its_own_error_and_the_harness_still_cleans_up():
    threads = set(threading.enumerate())
    # the test's error comes out, not the one of the close() that raises at the end
    with pytest.raises(ZeroDivisionError), DeviceHarness(kit_devices.RaisingClose) as h:
        rr = h.request_response()
        1 / 0  # noqa: B018
    rr.close()
    assert set(threading.enumerate()) <= threads


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("_finish", r"connection.close\(\) was not called"),
        ("_close_rings", "its rings were not closed"),
        ("_close_hangup", "did not let go of the interface"),
    ],
)
def test_the_harness_fails_a_framework_that_breaks_its_close_order(monkeypatch, broken, message):
    # the checks can fail: a framework that skips a step of the close order is caught
    monkeypatch.setattr(harness_module, "MARGIN", 0.5)
    monkeypatch.setattr(inprocess_module, "WAIT_ENDS", 0.5)
    monkeypatch.setattr(probe_module, "RINGS_CLOSE_WITHIN", 0.5)
    kept: list[DataPath] = []
    original = getattr(DataPath, broken)

    def skipped(self: DataPath) -> None:
        kept.append(self)

    monkeypatch.setattr(DataPath, broken, skipped)
    h = DeviceHarness(kit_devices.Upper).start()
    try:
        dev = h.open()
        rr = h.request_response(dev)
        with pytest.raises(AssertionError, match=message):
            h.end(dev, "close")
        rr.close()
    finally:
        monkeypatch.setattr(DataPath, broken, original)
        for path in kept:  # what the broken framework left: released here
            path.closed = False
            path._finish()
        h.close()


def test_a_legacy_class_runs_through_the_harness():
    with DeviceHarness(VenetLoopback, attributes={"enabled": "1"}) as h:
        dev = h.open()
        nic = Venet(dev, slots=8)
        nic.send(b"\x01" * 60, 5)
        assert nic.recv(5) == b"\x01" * 60
        h.end(dev, "close")
        assert dev.probe.closes == 1
        nic.rx.close()
        nic.tx.close()


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_the_harness_leaves_nothing_behind():
    switch = sys.getswitchinterval()
    fds = _fds()
    threads = set(threading.enumerate())
    with DeviceHarness(kit_devices.Upper) as h:
        rr = h.request_response()
        assert rr.request(b"x", 5) == b"X"
        directory = h._daemon.directory  # type: ignore[union-attr]
        assert os.path.isdir(directory)
        rr.close()
    assert set(threading.enumerate()) <= threads
    assert not os.path.exists(directory)
    assert sys.getswitchinterval() == switch
    assert _fds() <= fds
