"""Mounting, unmounting, signals, stale mounts, and surviving internal errors."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from vbusfs.daemon import state_path
from vbusfs.daemon._cgroup import hierarchy_name
from vbusfs.fuse import mount_at
from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount

VBUSFS = [sys.executable, "-m", "vbusfs"]
PLUGINS = str(pathlib.Path(__file__).parent / "plugins")


def vbusfs(*args: str, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VBUSFS, *args], capture_output=True, text=True, timeout=60, env=env)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.02)
    return False


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def test_background_mount_then_umount(tmp_path, runtime):
    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    done = vbusfs("mount", str(mountpoint))
    try:
        assert done.returncode == 0, done.stderr
        entry = mount_at(str(mountpoint))
        assert entry is not None and entry.fstype == "fuse.vbusfs"
        assert (mountpoint / "sys/vbus/version").read_text() == "1\n"
        state = json.loads(pathlib.Path(state_path(str(mountpoint))).read_text())
        pid = state["pid"]
        assert os.path.exists(f"/proc/{pid}")
        again = vbusfs("mount", str(mountpoint))
        assert again.returncode == 1 and "already served" in again.stderr
    finally:
        done = vbusfs("umount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    assert mount_at(str(mountpoint)) is None
    assert wait_gone(pid)
    assert not os.path.exists(state_path(str(mountpoint)))


def test_a_runtime_directory_deeper_than_a_socket_address_holds_works(tmp_path, monkeypatch):
    # sun_path holds 107 bytes: the connector socket is bound and reached through its
    # directory's descriptor instead (a long XDG_RUNTIME_DIR or test directory)
    deep = tmp_path / ("r" * 60) / ("u" * 60)
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(deep))
    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    done = vbusfs("mount", str(mountpoint))
    try:
        assert done.returncode == 0, done.stderr
        (mountpoint / "config/vbus/instances/b").mkdir()
        joins = (
            "import sys; from vbusfs import client\n"
            "with open(sys.argv[1] + '/proc/self/vbus', 'w') as f: f.write('b')\n"
            "with client.connect(sys.argv[1]) as bus: print(len(bus.interfaces()))"
        )
        member = subprocess.run(
            [sys.executable, "-c", joins, str(mountpoint)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert member.returncode == 0, member.stderr
        assert member.stdout == "0\n"
        sockets = list(deep.glob("connectors/*.sock"))
        assert len(sockets) == 1 and len(os.fsencode(str(sockets[0]))) > 107
    finally:
        done = vbusfs("umount", str(mountpoint))
    assert done.returncode == 0, done.stderr


def test_mount_errors_are_reported(tmp_path, runtime):
    missing = vbusfs("mount", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert f"mkdir -p {tmp_path / 'nope'}" in missing.stderr  # the fix, too
    not_mounted = vbusfs("umount", str(tmp_path))
    assert not_mounted.returncode == 1 and "not mounted" in not_mounted.stderr
    bad_class = vbusfs("mount", "--load", "no.such.module:Thing", str(tmp_path))
    assert bad_class.returncode == 1 and "cannot load a deviceclass" in bad_class.stderr
    assert mount_at(str(tmp_path)) is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(tmp_path_factory, signum):
    mount = LiveMount(str(tmp_path_factory.mktemp("m"))).start()
    try:
        mount.sh("mkdir config/vbus/devices/D", check=True)
        assert mount.process is not None
        mount.process.send_signal(signum)
        assert mount.process.wait(10) == 0
        assert mount_at(mount.path) is None
    finally:
        log = mount.stop()
    assert "unmounted" in log and "Traceback" not in log


def test_a_stale_mount_from_a_killed_daemon_is_cleared(tmp_path_factory, runtime):
    mount = LiveMount(str(tmp_path_factory.mktemp("m"))).start()
    try:
        assert mount.process is not None
        mount.process.kill()
        mount.process.wait()
        with pytest.raises(OSError) as info:
            os.stat(mount.join("sys"))
        assert info.value.errno == errno.ENOTCONN
        done = vbusfs("mount", mount.path)
        assert done.returncode == 0, done.stderr
        assert os.listdir(mount.join("sys/vbus")) == [
            "deviceclass",
            "devices",
            "instances",
            "version",
        ]
        assert vbusfs("umount", mount.path).returncode == 0
        assert mount_at(mount.path) is None
    finally:
        mount.stop()


def test_umount_of_a_killed_daemons_mount_lets_its_members_and_hierarchy_go(tmp_path, runtime):
    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    done = vbusfs("mount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        if "membership: cgroup" not in vbusfs("status", str(mountpoint)).stdout:
            pytest.skip("membership is not kept in a cgroup hierarchy here")
        marker = f":name={hierarchy_name(str(mountpoint))}:"
        (mountpoint / "config/vbus/instances/B").mkdir()
        (mountpoint / f"proc/{sleeper.pid}/vbus").write_text("B")
        pid = json.loads(pathlib.Path(state_path(str(mountpoint))).read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # the daemon this test mounted
        assert wait_gone(pid)
        done = vbusfs("umount", str(mountpoint))
        assert done.returncode == 0, done.stderr
        assert mount_at(str(mountpoint)) is None

        def cgroups(pid: int | str) -> str:
            return pathlib.Path(f"/proc/{pid}/cgroup").read_text()

        # the member is out of the dead daemon's bus, and the hierarchy ends (the kernel
        # releases it soon after its last cgroup goes)
        assert f"{marker}/b" not in cgroups(sleeper.pid)
        deadline = time.monotonic() + 10
        while marker in cgroups("self") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker not in cgroups("self")
    finally:
        sleeper.kill()
        sleeper.wait()
        if mount_at(str(mountpoint)) is not None:
            vbusfs("umount", str(mountpoint))


def test_an_internal_error_is_eio_and_the_mount_survives(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PLUGINS)
    mount = LiveMount(str(tmp_path_factory.mktemp("m")), load=("buggy:Buggy",)).start()
    try:
        mount.sh(
            "mkdir config/vbus/devices/X && echo buggy > config/vbus/devices/X/type", check=True
        )
        broken = mount.join("sys/vbus/devices/X/broken")
        for _ in range(3):
            with pytest.raises(OSError) as info:
                open(broken).close()
            assert info.value.errno == errno.EIO
        assert mount.sh("cat sys/vbus/version").stdout == "1\n"
        assert mount.sh("ls sys/vbus/deviceclass").stdout.split() == [
            "buggy",
            "venet-loopback",
            "venet-switch",
            "venet-tap",
        ]
    finally:
        log = mount.stop()
    assert "internal error in open" in log and "a bug in a deviceclass" in log


@pytest.mark.parametrize("look", ["ls -la .", "stat .", "cd . && pwd"])
def test_a_stale_mount_is_cleared_even_when_its_root_was_cached(tmp_path_factory, runtime, look):
    mount = LiveMount(str(tmp_path_factory.mktemp("m"))).start()
    try:
        # The root's attributes are now in the kernel's cache (for an hour): a stat of the
        # root after the kill is answered from it, as if the daemon still lived.
        assert mount.sh(look).returncode == 0
        os.stat(mount.path)
        assert mount.process is not None
        mount.process.kill()
        mount.process.wait()
        os.stat(mount.path)  # still answered: only statfs reaches the (dead) daemon
        done = vbusfs("mount", mount.path)
        assert done.returncode == 0, done.stderr
        assert (pathlib.Path(mount.path) / "sys/vbus/version").read_text() == "1\n"
        assert vbusfs("umount", mount.path).returncode == 0
        assert mount_at(mount.path) is None
    finally:
        mount.stop()
