"""The kernel caches entries and attributes, and every change is still seen by the very
next system call of any other process (behaviour §3).

One process (this test) changes the trees; another (`Reader`) has just stat'ed, listed
and read what the change affects, so the kernel holds those entries, and is asked the
exact next question the moment the change returned.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount

READER = r"""
import json, os, stat, sys
for line in sys.stdin:
    op, path = json.loads(line)
    try:
        if op == "stat":
            out = ["dir" if stat.S_ISDIR(os.lstat(path).st_mode) else "other"]
        elif op == "list":
            out = sorted(os.listdir(path))
        elif op == "readlink":
            out = os.readlink(path)
        else:
            fd = os.open(path, os.O_RDONLY)
            try:
                out = os.read(fd, 4096).decode()
            finally:
                os.close(fd)
    except OSError as exc:
        out = exc.errno
    print(json.dumps(out), flush=True)
"""


class Reader:
    """Another process that answers one system call at a time."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, op: str, path: str) -> object:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([op, f"{self.root}/{path}"]) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def reader(mnt: LiveMount) -> Iterator[Reader]:
    reader = Reader(mnt.path)
    try:
        yield reader
    finally:
        reader.close()


def write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def test_every_change_is_seen_by_the_next_call_of_another_process(mnt, reader):
    root = mnt.path
    cfg, sys_ = f"{root}/config/vbus", "sys/vbus"
    os.mkdir(f"{cfg}/instances/B")
    for i in range(25):
        d = f"d{i % 3}"  # names come back: a namesake is never the old object
        sd = f"{sys_}/devices/{d}"
        assert reader.ask("stat", sd) == errno.ENOENT
        os.mkdir(f"{cfg}/devices/{d}")
        assert reader.ask("stat", sd) == ["dir"]
        assert reader.ask("list", sd) == ["interfaces"]
        assert reader.ask("stat", f"{sd}/enabled") == errno.ENOENT
        write(f"{cfg}/devices/{d}/type", "venet-loopback\n")
        assert reader.ask("readlink", f"{sd}/class") == "../../deviceclass/venet-loopback"
        assert reader.ask("read", f"{sd}/enabled") == "0\n"
        bus_devices = f"{sys_}/instances/B/devices"
        assert reader.ask("list", bus_devices) == []
        os.symlink(f"{cfg}/devices/{d}", f"{cfg}/instances/B/L")
        (n,) = reader.ask("list", bus_devices)  # type: ignore[misc]
        assert reader.ask("read", f"{bus_devices}/{n}/type") == "virtual-ethernet\n"
        (name,) = reader.ask("list", f"{sd}/interfaces")  # type: ignore[misc]
        mac = f"02:00:00:00:00:{i:02x}"
        write(f"{root}/{sd}/client_mac", mac)
        assert reader.ask("read", f"{sd}/client_mac") == mac + "\n"
        assert reader.ask("stat", f"{sd}/interfaces/{name}") == ["other"]
        os.unlink(f"{cfg}/instances/B/L")
        assert reader.ask("stat", f"{bus_devices}/{n}") == errno.ENOENT
        assert reader.ask("stat", f"{bus_devices}/{n}/type") == errno.ENOENT
        assert reader.ask("stat", f"{sd}/interfaces/{name}") == errno.ENOENT
        assert reader.ask("stat", "config/vbus/instances/B/L") == errno.ENOENT
        assert reader.ask("stat", f"{sd}/enabled") == ["other"]
        os.rmdir(f"{cfg}/devices/{d}")
        assert reader.ask("stat", sd) == errno.ENOENT
        assert reader.ask("stat", f"{sd}/enabled") == errno.ENOENT
        assert reader.ask("stat", f"config/vbus/devices/{d}/type") == errno.ENOENT
        assert d not in reader.ask("list", f"{sys_}/devices")  # type: ignore[operator]
    os.rmdir(f"{cfg}/instances/B")
    assert reader.ask("stat", f"{sys_}/instances/B") == errno.ENOENT


def stat_answers_while_stopped(mnt: LiveMount, path: str) -> bool:
    """Whether another process's stat of `path` answers while the daemon is stopped
    (from the kernel's cache: a request would wait for the daemon)."""
    os.kill(mnt.pid, signal.SIGSTOP)
    try:
        probe = subprocess.Popen([sys.executable, "-c", f"import os; os.stat({path!r})"])
        try:
            probe.wait(timeout=3)
            return probe.returncode == 0
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()
            return False
    finally:
        os.kill(mnt.pid, signal.SIGCONT)


def test_the_kernel_answers_stat_of_an_unchanged_object_from_its_cache(mnt):
    os.mkdir(f"{mnt.path}/config/vbus/devices/D")
    write(f"{mnt.path}/config/vbus/devices/D/type", "venet-loopback\n")
    attribute = f"{mnt.path}/sys/vbus/devices/D/enabled"
    assert stat.S_ISREG(os.stat(attribute).st_mode)
    assert stat_answers_while_stopped(mnt, attribute)


def test_with_caching_off_every_stat_asks_the_daemon(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VBUSFS_ENTRY_CACHE", "0")
    mount = LiveMount(str(tmp_path_factory.mktemp("mnt"))).start()
    try:
        os.mkdir(f"{mount.path}/config/vbus/devices/D")
        path = f"{mount.path}/config/vbus/devices/D"
        os.stat(path)
        time.sleep(0.1)
        assert not stat_answers_while_stopped(mount, path)
        assert os.path.isdir(path)  # and the daemon serves on after SIGCONT
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log


# stats every entry under a directory again and again, for a while
WALKER = (
    "import os, sys, time\n"
    "end = time.monotonic() + float(sys.argv[2])\n"
    "while time.monotonic() < end:\n"
    "    for top, dirs, files in os.walk(sys.argv[1]):\n"
    "        for name in files + dirs:\n"
    "            try: os.lstat(os.path.join(top, name))\n"
    "            except OSError: pass\n"
)


def walking(top: str, seconds: float, count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-c", WALKER, top, str(seconds)]) for _ in range(count)
    ]


def test_drops_never_deadlock_with_concurrent_walks_of_the_same_directories(mnt):
    """The kernel takes a directory's lock to drop an entry in it, and walks hold it too:
    removals whose drops the daemon awaits, while other processes walk and list the very
    directories concerned, all finish (and the daemon logs no warning of a stuck drop)."""
    root = mnt.path
    os.mkdir(f"{root}/config/vbus/instances/B")
    walkers = walking(f"{root}/sys/vbus", 6, 3)
    try:
        began = time.monotonic()
        for i in range(40):
            d = f"{root}/config/vbus/devices/w{i % 4}"
            os.mkdir(d)
            write(f"{d}/type", "venet-loopback\n")
            os.stat(f"{root}/sys/vbus/devices/w{i % 4}/enabled")
            os.symlink(d, f"{root}/config/vbus/instances/B/L")
            os.unlink(f"{root}/config/vbus/instances/B/L")
            os.rmdir(d)
        assert time.monotonic() - began < 30
    finally:
        for process in walkers:
            process.kill()
            process.wait()
    assert "no entry drop" not in mnt.log


def test_what_an_administrator_removes_is_gone_at_the_next_call(mnt, reader):
    """rmmod and reset go through the connector, not a FUSE request: the kernel is still
    told before the op answers, so the cached entries are gone at the next call."""
    vbusfs = [sys.executable, "-m", "vbusfs"]
    classes = "sys/vbus/deviceclass"
    assert reader.ask("stat", f"{classes}/venet-switch") == ["dir"]
    gone = subprocess.run([*vbusfs, "rmmod", mnt.path, "venet-switch"], capture_output=True)
    assert gone.returncode == 0, gone.stderr
    assert reader.ask("stat", f"{classes}/venet-switch") == errno.ENOENT
    os.mkdir(f"{mnt.path}/config/vbus/devices/D")
    write(f"{mnt.path}/config/vbus/devices/D/type", "venet-loopback\n")
    assert reader.ask("read", "sys/vbus/devices/D/enabled") == "0\n"
    reset = subprocess.run([*vbusfs, "reset", mnt.path], capture_output=True)
    assert reset.returncode == 0, reset.stderr
    assert reader.ask("stat", "sys/vbus/devices/D/enabled") == errno.ENOENT
    assert reader.ask("stat", "config/vbus/devices/D") == errno.ENOENT
    assert reader.ask("stat", f"{classes}/venet-switch") == ["dir"]  # back, as at start


def test_an_administrators_op_while_processes_walk_the_trees_waits_for_no_one(mnt, reader):
    """The kernel may want the daemon to answer a lookup before it takes a drop: an op
    awaits its drops with the loop free, so none times out and each is gone at once."""
    vbusfs = [sys.executable, "-m", "vbusfs"]
    root = mnt.path
    walkers = walking(f"{root}/sys/vbus", 8, 3)
    try:
        for i in range(4):
            os.mkdir(f"{root}/config/vbus/devices/D{i}")
            write(f"{root}/config/vbus/devices/D{i}/type", "venet-loopback\n")
            assert reader.ask("read", f"sys/vbus/devices/D{i}/enabled") == "0\n"
            reset = subprocess.run([*vbusfs, "reset", root], capture_output=True)
            assert reset.returncode == 0, reset.stderr
            assert reader.ask("stat", f"sys/vbus/devices/D{i}/enabled") == errno.ENOENT
    finally:
        for process in walkers:
            process.kill()
            process.wait()
    assert "no entry drop" not in mnt.log
