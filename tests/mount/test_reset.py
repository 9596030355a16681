"""`vbusfs reset`: a live mount back to a fresh daemon's empty state, on real mounts."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from vbusfs import client
from vbusfs.daemon import build_model
from vbusfs.daemon._cgroup import hierarchy_name
from vbusfs.ioq import IoqClosed
from vbusfs.testing import LiveMount, netns_available

pytestmark = pytest.mark.mount

VBUSFS = [sys.executable, "-m", "vbusfs"]
PLUGINS = str(pathlib.Path(__file__).parent / "plugins")
BUILD = (
    "mkdir config/vbus/instances/B config/vbus/instances/C "
    "config/vbus/devices/L config/vbus/devices/S config/vbus/devices/u && "
    "echo venet-loopback > config/vbus/devices/L/type && "
    "echo venet-switch > config/vbus/devices/S/type && "
    "echo 02:00:00:00:00:0a > sys/vbus/devices/L/client_mac && "
    "ln -s ../../devices/L config/vbus/instances/B/ && "
    "ln -s ../../devices/S config/vbus/instances/B/ && "
    "ln -s ../../devices/S config/vbus/instances/C/"
)


def vbusfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VBUSFS, *args], capture_output=True, text=True, timeout=60)


def fresh_classes() -> list[str]:
    return sorted(build_model(membership="proc").classes)


def listing(mount, *paths: str) -> dict[str, list[str]]:
    return {path: sorted(os.listdir(mount.join(path))) for path in paths}


EMPTY = {
    "config/vbus/devices": [],
    "config/vbus/instances": [],
    "sys/vbus/devices": [],
    "sys/vbus/instances": [],
}


def test_reset_empties_the_mount_and_names_can_be_used_again(mnt):
    mnt.sh(BUILD, check=True)
    done = vbusfs("reset", mnt.path)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert listing(mnt, *EMPTY) == EMPTY
    assert sorted(os.listdir(mnt.join("sys/vbus/deviceclass"))) == fresh_classes()
    # what was there before leaves no trace: same names, fresh objects, ids from 0
    mnt.sh(BUILD, check=True)
    assert mnt.sh("cat sys/vbus/devices/S/../L/client_mac", check=True).stdout == (
        "02:00:00:00:00:0a\n"
    )
    assert sorted(os.listdir(mnt.join("sys/vbus/instances/B/devices"))) == ["0", "1"]
    assert os.listdir(mnt.join("sys/vbus/instances/C/devices")) == ["0"]
    # and resetting an empty mount is no error
    assert vbusfs("reset", mnt.path).returncode == 0
    assert vbusfs("reset", mnt.path).returncode == 0
    assert "reset to the empty state" in mnt.log


def hierarchy_cgroup(pid: int, mountpoint: str) -> str | None:
    """The cgroup of `pid` in the mount's private hierarchy (None: not in it)."""
    marker = f":name={hierarchy_name(mountpoint)}:"
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if marker in line:
                return line.rstrip("\n").split(":", 2)[2]
    return None


def test_reset_lets_every_member_go(mode_mnt):
    mnt = mode_mnt
    mnt.sh("mkdir config/vbus/instances/B config/vbus/instances/C", check=True)
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    parent: subprocess.Popen[str] | None = None
    forked = 0
    try:
        for sleeper, bus in zip(sleepers, ["B", "B", "C"], strict=True):
            mnt.sh(f"echo {bus} > proc/{sleeper.pid}/vbus", check=True)
        # a child forked after its parent joined is a member too (behaviour §6)
        parent = subprocess.Popen(
            [
                "bash",
                "-c",
                f"echo C > {mnt.join('proc/self/vbus')} && {{ sleep 60 & echo $!; wait; }}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert parent.stdout is not None
        forked = int(parent.stdout.readline())
        deadline = time.monotonic() + 5
        while len(os.listdir(mnt.join("sys/vbus/instances/C/members"))) < 3:
            assert time.monotonic() < deadline, "the forked member never showed up"
            time.sleep(0.02)
        members = [int(p) for p in os.listdir(mnt.join("sys/vbus/instances/C/members"))]
        if mnt.membership == "cgroup":
            assert hierarchy_cgroup(sleepers[0].pid, mnt.path) not in (None, "/")

        done = vbusfs("reset", mnt.path)
        assert done.returncode == 0, done.stderr

        assert listing(mnt, *EMPTY) == EMPTY
        for pid in [s.pid for s in sleepers] + members:
            assert mnt.sh(f"cat proc/{pid}/vbus", check=True).stdout == "<none>\n"
            if mnt.membership == "cgroup":
                assert hierarchy_cgroup(pid, mnt.path) == "/"
        # a bus made again under an old name starts with no members
        mnt.sh("mkdir config/vbus/instances/B config/vbus/instances/C", check=True)
        assert os.listdir(mnt.join("sys/vbus/instances/B/members")) == []
        assert os.listdir(mnt.join("sys/vbus/instances/C/members")) == []
        # and joining works as on a fresh daemon
        mnt.sh(f"echo B > proc/{sleepers[2].pid}/vbus", check=True)
        assert os.listdir(mnt.join("sys/vbus/instances/B/members")) == [str(sleepers[2].pid)]
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        if forked:
            os.kill(forked, signal.SIGKILL)
        if parent is not None:
            parent.kill()
            parent.wait()
            assert parent.stdout is not None
            parent.stdout.close()


def test_reset_closes_open_interfaces_as_a_drop_does(mnt):
    mnt.sh(
        "mkdir config/vbus/instances/B config/vbus/devices/L && "
        "echo venet-loopback > config/vbus/devices/L/type && "
        "ln -s ../../devices/L config/vbus/instances/B/",
        check=True,
    )
    with open(mnt.join("proc/self/vbus"), "w") as f:
        f.write("B")
    try:
        with client.connect(mnt.path) as bus, bus.open_venet(0) as nic:
            outcome: list[BaseException] = []

            def wait_forever() -> None:
                try:
                    nic.recv()  # no timeout: only the close can end it
                except BaseException as exc:
                    outcome.append(exc)

            waiter = threading.Thread(target=wait_forever)
            waiter.start()
            time.sleep(0.1)
            done = vbusfs("reset", mnt.path)
            assert done.returncode == 0, done.stderr
            waiter.join(5)
            assert not waiter.is_alive(), "a wait on a reset device hung"
            assert len(outcome) == 1 and isinstance(outcome[0], IoqClosed)
            assert bus.wait_event(5) == client.Event("drop", 0, "virtual-ethernet")
            # its bus is gone too: the connection speaks for no bus any more
            with pytest.raises(client.ConnectorError) as refused:
                nic.interface.call(client.MACQUERY)
            assert refused.value.errno == errno.EACCES
            assert "no longer a member of bus 'B'" in refused.value.strerror
        assert "reset to the empty state (1 open interface(s) closed)" in mnt.log
    finally:
        with open(mnt.join("proc/self/vbus"), "w") as f:
            f.write("0")


@pytest.fixture
def plugin_mnt(tmp_path_factory, monkeypatch):
    """A fresh mount whose daemon can import the classes in tests/mount/plugins."""
    monkeypatch.setenv("PYTHONPATH", PLUGINS)
    with LiveMount(str(tmp_path_factory.mktemp("mnt")), private_netns=netns_available()) as mount:
        yield mount
        log = mount.log
    assert "Traceback" not in log, log


def test_reset_unloads_classes_loaded_at_run_time_and_brings_back_discovered_ones(plugin_mnt):
    mnt = plugin_mnt
    assert vbusfs("modprobe", mnt.path, "buggy:Buggy").returncode == 0
    assert vbusfs("rmmod", mnt.path, "venet-switch").returncode == 0
    classes = sorted(os.listdir(mnt.join("sys/vbus/deviceclass")))
    assert "buggy" in classes and "venet-switch" not in classes
    done = vbusfs("reset", mnt.path)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(mnt.join("sys/vbus/deviceclass"))) == fresh_classes()


@pytest.mark.root
def test_reset_is_for_administrators_only():
    top = tempfile.mkdtemp(prefix="vbusfs-reset-")
    os.chmod(top, 0o755)
    mount = LiveMount(top).start()
    try:
        mount.sh(
            "mkdir config/vbus/instances/B config/vbus/devices/d && "
            "echo 0701 > config/vbus/instances/B/perms/mode",
            check=True,
        )
        code = (
            "from vbusfs import client; import sys; m = sys.argv[1]\n"
            "open(f'{m}/proc/self/vbus', 'w').write('B')\n"
            "c = client.connect(m)\n"
            "try:\n    c.request('reset')\nexcept client.ConnectorError as e:\n"
            "    print(e.errno)\n"
        )
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        done = subprocess.run(
            [*as_nobody, sys.executable, "-c", code, top], capture_output=True, text=True
        )
        assert done.stdout.split() == [str(errno.EPERM)], done.stderr
        assert listing(mount, "config/vbus/devices", "config/vbus/instances") == {
            "config/vbus/devices": ["d"],
            "config/vbus/instances": ["B"],
        }
    finally:
        mount.stop()
        os.rmdir(top)
