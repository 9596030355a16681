"""2,000 devices on 200 buses work through the mount (10 a bus). bench/control.py runs the
10,000-device population and measures what it costs; this test keeps the suite short."""

from __future__ import annotations

import os

import pytest

from vbusfs.testing import LiveMount, netns_available

pytestmark = [pytest.mark.mount, pytest.mark.slow]

DEVICES = 2_000
BUSES = 200


def test_two_thousand_devices_on_two_hundred_buses(tmp_path_factory):
    # membership is not what this measures: the fallback makes no cgroup per bus
    mnt = _start(tmp_path_factory)
    try:
        _scale(mnt)
    finally:
        log = mnt.stop()
    assert "Traceback" not in log, log


def _start(tmp_path_factory) -> LiveMount:
    path = tmp_path_factory.mktemp("mnt")
    extra = ("--membership", "proc")
    return LiveMount(str(path), private_netns=netns_available(), extra=extra).start()


def _scale(mnt):
    join = mnt.join
    for b in range(BUSES):
        os.mkdir(join(f"config/vbus/instances/b{b}"))
    for d in range(DEVICES):
        os.mkdir(join(f"config/vbus/devices/d{d}"))
        with open(join(f"config/vbus/devices/d{d}/type"), "w") as f:
            f.write("venet-loopback\n")
        os.symlink(f"../../devices/d{d}", join(f"config/vbus/instances/b{d % BUSES}/d{d}"))
    assert len(os.listdir(join("sys/vbus/devices"))) == DEVICES
    assert len(os.listdir(join("config/vbus/instances"))) == BUSES
    with os.scandir(join("sys/vbus/devices")) as entries:
        assert sum(1 for e in entries if e.is_dir(follow_symlinks=False)) == DEVICES
    assert sorted(os.listdir(join("sys/vbus/instances/b7/devices")), key=int) == [
        str(i) for i in range(DEVICES // BUSES)
    ]
    last = DEVICES - 1
    assert os.readlink(join(f"sys/vbus/devices/d{last}/interfaces/{last // BUSES}")) == (
        f"../../../instances/b{last % BUSES}/devices/{last // BUSES}"
    )
    found = mnt.sh("find sys/vbus/instances -name device | wc -l").stdout
    assert int(found) == DEVICES
    for d in range(0, DEVICES, 2):
        os.unlink(join(f"config/vbus/instances/b{d % BUSES}/d{d}"))
        os.rmdir(join(f"config/vbus/devices/d{d}"))
    assert len(os.listdir(join("sys/vbus/devices"))) == DEVICES // 2
