"""Attribute files as sysfs has them (behaviour §4): a value produced afresh at every read
from offset 0, and poll/select/epoll reporting POLLPRI|POLLERR when it changed.

The poller is always another process (`Watcher`): it opens the files, reads them (which
arms them), and on each request waits in poll(2), epoll_wait(2) or select(2). A test
makes its change only once the watcher is asleep in that system call (read from
/proc/<pid>/syscall), so a reported event is a real wake-up; what it reports carries the
value read after waking, so a wake-up without a change would show the old value.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import select
import subprocess
import sys
import time

import pytest

from vbusfs.testing import LiveMount, netns_available

pytestmark = pytest.mark.mount

PLUGINS = str(pathlib.Path(__file__).parent / "plugins")
CHANGED = select.POLLPRI | select.POLLERR
# x86-64 numbers of the calls a watcher sleeps in: poll, select, epoll_wait, pselect6,
# ppoll, epoll_pwait, epoll_pwait2 (which one libc uses varies)
WAITING_CALLS = {7, 23, 232, 270, 271, 281, 441}

WATCHER = r"""
import json, os, select, sys, time
how, paths = sys.argv[1], sys.argv[2:]
fds = {os.open(p, os.O_RDONLY): p for p in paths}
for fd in fds:
    os.pread(fd, 4096, 0)  # arms: poll compares with the value last read
print("armed", flush=True)
for line in sys.stdin:
    timeout = float(line)
    began = time.monotonic()
    if how == "poll":
        waiter = select.poll()
        for fd in fds:
            waiter.register(fd, select.POLLPRI | select.POLLERR)
        ready = waiter.poll(timeout * 1000)
    elif how == "epoll":
        waiter = select.epoll()
        for fd in fds:
            waiter.register(fd, select.EPOLLPRI | select.EPOLLERR)
        ready = waiter.poll(timeout)
        waiter.close()
    else:
        _, _, exceptional = select.select([], [], list(fds), timeout)
        ready = [(fd, select.POLLPRI) for fd in exceptional]
    report = {}
    for fd, events in ready:
        try:
            value = os.pread(fd, 4096, 0).decode()  # re-arms
        except OSError as exc:
            value = f"errno {exc.errno}"
        report[fds[fd]] = [events, value]
    print(json.dumps([time.monotonic() - began, report]), flush=True)
"""


class Watcher:
    """Another process polling attribute files with `how` (poll, epoll or select)."""

    def __init__(self, how: str, *paths: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WATCHER, how, *paths],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "armed", self.process.stderr.read()  # type: ignore[union-attr]

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def start_wait(self, timeout: float) -> None:
        """Ask for one wait of at most `timeout` s; return once the watcher sleeps in it."""
        assert self.process.stdin is not None
        self.timeout = timeout
        self.process.stdin.write(f"{timeout}\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{self.process.pid}/syscall") as f:
                number = f.read().split()[0]
            if number.isdigit() and int(number) in WAITING_CALLS:
                return
            time.sleep(0.002)
        raise AssertionError("the watcher never went to sleep in its wait")

    def report(self) -> dict[str, list]:
        """What the wait returned: path -> [events, value read after it]. Events must come
        from a wake-up: poll(2) looks once more when its time is up, and finds a change
        that nothing announced."""
        line = self._line()
        assert line, self.process.stderr.read()  # type: ignore[union-attr]
        elapsed, ready = json.loads(line)
        assert not ready or elapsed < self.timeout / 2, f"not woken: {ready} after {elapsed} s"
        return ready

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def watchers():
    started: list[Watcher] = []

    def start(how: str, *paths: str) -> Watcher:
        watcher = Watcher(how, *paths)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.close()


@pytest.fixture
def mnt(vbus_mount):
    """The session's shared daemon, reset after each test: these tests use only the trees."""
    return vbus_mount


def test_a_read_from_offset_0_renders_afresh_and_other_offsets_continue(mnt):
    mnt.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type", check=True)
    path = mnt.join("sys/vbus/devices/D/burstthresh")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.read(fd, 1) == b"2"
        mnt.sh(f"echo 12345 > {path}", check=True)
        # byte by byte, as a reader with a tiny buffer: the rest of the same rendering
        assert os.read(fd, 1) + os.read(fd, 1) + os.read(fd, 1) == b"0\n"
        assert os.pread(fd, 4096, 0) == b"12345\n"
        mnt.sh(f"echo 7 > {path}", check=True)
        assert os.pread(fd, 3, 2) == b"345"  # not from 0: still the rendering of "12345"
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, 4096) == b"7\n"
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["poll", "epoll", "select"])
def test_a_store_wakes_pollers_of_that_file_and_no_other(mnt, watchers, how):
    mnt.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type", check=True)
    burst = mnt.join("sys/vbus/devices/D/burstthresh")
    mac = mnt.join("sys/vbus/devices/D/client_mac")
    watcher = watchers(how, burst)
    watcher.start_wait(0.4)
    mnt.sh(f"echo 02:00:00:00:00:01 > {mac}", check=True)  # another file of the device
    assert watcher.report() == {}  # woken for nothing, the poller never sees it
    watcher.start_wait(20)
    mnt.sh(f"echo 55 > {burst}", check=True)
    events, value = watcher.report()[burst]
    assert events & CHANGED and value == "55\n"


def test_poll_fires_for_a_type_a_link_a_membership_and_a_removal(mnt, watchers):
    mnt.sh(
        "mkdir config/vbus/devices/D config/vbus/devices/S config/vbus/instances/B "
        "config/vbus/instances/C && echo venet-switch > config/vbus/devices/S/type",
        check=True,
    )
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        type_file = mnt.join("config/vbus/devices/D/type")
        ports = mnt.join("sys/vbus/devices/S/ports")
        member = mnt.join("proc", str(sleeper.pid), "vbus")
        watcher = watchers("poll", type_file, ports, member)
        steps = [
            ("echo venet-tap > config/vbus/devices/D/type", type_file, "venet-tap\n"),
            ("ln -s ../../devices/S config/vbus/instances/B/", ports, "B.0\n"),
            (f"echo B > proc/{sleeper.pid}/vbus", member, "B\n"),
            ("ln -s ../../devices/S config/vbus/instances/C/", ports, "B.0 C.0\n"),
            ("rm config/vbus/instances/B/S", ports, "C.0\n"),
            (f"echo 0 > proc/{sleeper.pid}/vbus", member, "<none>\n"),
            ("rmdir config/vbus/devices/D", type_file, f"errno {errno.ENODEV}"),
        ]
        for command, path, value in steps:
            watcher.start_wait(20)
            mnt.sh(command, check=True)
            report = watcher.report()
            assert list(report) == [path], command
            assert report[path][0] & CHANGED and report[path][1] == value, command
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_membership_file_of_a_process_that_exits_reports_it(mnt, watchers):
    # no request announces an exit: the daemon's membership sweep finds it
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        mnt.sh(f"echo B > proc/{sleeper.pid}/vbus", check=True)
        member = mnt.join("proc", str(sleeper.pid), "vbus")
        watcher = watchers("poll", member)
        watcher.start_wait(20)
    finally:
        sleeper.kill()
        sleeper.wait()
    events, value = watcher.report()[member]
    assert events & CHANGED and value == f"errno {errno.ESRCH}"


@pytest.mark.root
@pytest.mark.skipif(not netns_available(), reason="needs unshare and root")
def test_enabling_a_tap_wakes_the_pollers_of_its_ifname(mnt, watchers):
    # the shared daemon runs in a network namespace of its own: its TAPs stay there
    mnt.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type", check=True)
    ifname = mnt.join("sys/vbus/devices/D/ifname")
    watcher = watchers("select", ifname)
    watcher.start_wait(20)
    mnt.sh("echo 1 > sys/vbus/devices/D/enabled", check=True)
    events, value = watcher.report()[ifname]
    assert events & select.POLLPRI and value not in ("<disabled>\n", "")
    watcher.start_wait(20)
    mnt.sh("echo 0 > sys/vbus/devices/D/enabled", check=True)
    assert watcher.report()[ifname][1] == "<disabled>\n"


@pytest.fixture
def ticker_mount(tmp_path_factory, monkeypatch):
    """A mount of its own with the ticker class (tests/mount/plugins/ticker.py) loaded."""
    monkeypatch.setenv("PYTHONPATH", PLUGINS)
    mount = LiveMount(str(tmp_path_factory.mktemp("m")), load=("ticker:Ticker",)).start()
    try:
        yield mount
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log


def test_a_deviceclass_notify_from_its_thread_wakes_pollers(ticker_mount, watchers):
    # (ticker_mount first: the watchers, which hold files open on it, end before it)
    mount = ticker_mount
    mount.sh(
        "mkdir config/vbus/devices/A config/vbus/devices/B && "
        "echo ticker > config/vbus/devices/A/type && echo ticker > config/vbus/devices/B/type",
        check=True,
    )
    count = mount.join("sys/vbus/devices/B/count")
    watcher = watchers("epoll", count)
    for expected in ("1\n", "2\n"):
        watcher.start_wait(20)
        # a store to A; B's count changes only in the class's thread, which notifies
        mount.sh("echo 1 > sys/vbus/devices/A/tick", check=True)
        events, value = watcher.report()[count]
        assert events & CHANGED and value == expected
