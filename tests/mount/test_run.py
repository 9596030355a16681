"""`vbusfs run`: the original walkthrough, verbatim, in a private mount namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from vbusfs.fuse import read_mountinfo
from vbusfs.testing import LiveMount

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare"),
]

VBUSFS = [sys.executable, "-m", "vbusfs"]
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

# The original document's commands; only /proc/self/vbus became /run/vbus/proc/self/vbus.
WALKTHROUGH = """
set -e
ls /sys/vbus/deviceclass
mkdir /config/vbus/devices/foo
echo venet-tap > /config/vbus/devices/foo/type
mkdir /config/vbus/instances/bar
ln -s /config/vbus/devices/foo /config/vbus/instances/bar
echo bar > /run/vbus/proc/self/vbus
tree /sys/vbus/instances/bar/devices
cat /sys/vbus/instances/bar/devices/0/type
test -d /sys/vbus/instances/bar/members/$$ && echo member
ls /sys/class/net > /dev/null && echo sys-still-works
echo 0 > /run/vbus/proc/self/vbus
rm /config/vbus/instances/bar/foo
rmdir /config/vbus/instances/bar /config/vbus/devices/foo
"""


def fuse_mounts() -> list[str]:
    return sorted(e.mount_point for e in read_mountinfo() if e.fstype.startswith("fuse.vbusfs"))


def run_dirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("vbusfs-run-")}


@pytest.mark.root
def test_walkthrough_runs_verbatim_and_leaves_nothing_mounted():
    before_mounts, before_dirs = fuse_mounts(), run_dirs()
    done = subprocess.run(
        [*VBUSFS, "run", "--", "bash", "-c", WALKTHROUGH],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "venet-tap" in out and "virtual-ethernet" in out
    assert "member\n" in out and "sys-still-works" in out
    assert "device -> ../../../../devices/foo" in out
    # nothing it made is left (only its own: other test runs on the machine may mount and
    # unmount meanwhile, elsewhere than in a vbusfs-run- directory)
    new = set(fuse_mounts()) - set(before_mounts)
    assert not [m for m in new if "/vbusfs-run-" in m], new
    assert run_dirs() <= before_dirs
    with open("/proc/self/mountinfo") as f:
        assert " /sys/vbus " not in f.read()


@pytest.mark.root
def test_run_on_an_existing_mount_and_its_exit_status(mnt):
    done = subprocess.run(
        [
            *VBUSFS,
            "run",
            "--mount",
            mnt.path,
            "--",
            "bash",
            "-c",
            "mkdir /config/vbus/instances/from-inside && exit 7",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 7, done.stderr
    assert os.path.isdir(mnt.join("sys/vbus/instances/from-inside"))
    assert mnt.mounted()


def test_run_without_a_command_or_a_vbusfs_mount_says_why(tmp_path):
    done = subprocess.run(
        [*VBUSFS, "run", "--mount", str(tmp_path), "--", "true"], capture_output=True, text=True
    )
    assert done.returncode == 125 and "is not a vbusfs mount" in done.stderr
    done = subprocess.run([*VBUSFS, "run", "--"], capture_output=True, text=True)
    assert done.returncode == 125 and "no command" in done.stderr


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_an_unprivileged_user_runs_it_in_a_user_namespace():
    probe = subprocess.run(
        [*AS_NOBODY, "unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"the kernel refuses an unprivileged user namespace here: {probe.stderr.strip()}"
        )
    if not os.path.isdir("/config"):
        os.mkdir("/config", 0o755)  # what `vbusfs run` as root does once
    top = tempfile.mkdtemp(prefix="vbusfs-user-run-")
    os.chmod(top, 0o755)
    mount = LiveMount(top).start()
    try:
        # others may join B (behaviour §6: a new bus is for root and its creator alone)
        mount.sh(
            "mkdir config/vbus/instances/B && echo 0701 > config/vbus/instances/B/perms/mode",
            check=True,
        )
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                *VBUSFS,
                "run",
                "--mount",
                top,
                "--",
                "bash",
                "-c",
                "echo B > /run/vbus/proc/self/vbus && cat /run/vbus/proc/self/vbus "
                "&& ls /sys/vbus/instances && ls /config/vbus",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, HOME="/"),
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["B", "B", "devices", "instances"]
    finally:
        log = mount.stop()
        os.rmdir(top)
    assert "Traceback" not in log
