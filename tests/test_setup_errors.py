"""Failures at set-up time name their cause and their fix, once, with no internal lines.

Each case is produced for real: a daemon without CAP_SYS_ADMIN, a /dev/fuse that is a
regular file (in a private mount namespace, never the machine's own), a mount point that
is missing or is a file, a deviceclass module that does not exist.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

from vbusfs.daemon import explain_mount_failure, fuse_problem
from vbusfs.fuse import mount_at
from vbusfs.testing import LiveMount

VBUSFS = [sys.executable, "-m", "vbusfs"]
NO_SYS_ADMIN = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"]
PRIVATE_MOUNTS = ["unshare", "-m", "--propagation", "private"]
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")


def assert_user_facing(text: str) -> None:
    assert "Traceback" not in text
    assert "fuse_session_mount" not in text  # pyfuse3's internal name for the failed call


# -- the FUSE device probe ------------------------------------------------------------


def test_fuse_problem_names_a_regular_file_at_the_device_path_and_the_fix(tmp_path):
    device = tmp_path / "fuse"
    device.write_bytes(b"")
    problem = fuse_problem(str(device))
    assert problem is not None
    assert f"{device} is not the FUSE device (character device 10:229)" in problem
    assert "a regular file" in problem
    assert f"rm {device} && mknod -m 0666 {device} c 10 229" in problem
    assert "modprobe fuse" in problem
    assert "--device /dev/fuse" in problem


def test_fuse_problem_names_another_character_device_at_the_device_path(tmp_path):
    device = tmp_path / "fuse"
    device.symlink_to("/dev/null")
    problem = fuse_problem(str(device))
    assert problem is not None
    assert "is not the FUSE device" in problem and "character device 1:3" in problem


def test_fuse_problem_names_a_missing_device(tmp_path):
    problem = fuse_problem(str(tmp_path / "fuse"))
    assert problem is not None
    assert "does not exist" in problem and "modprobe fuse" in problem


def test_fuse_problem_accepts_the_real_fuse_device():
    try:
        found = os.stat("/dev/fuse")
    except FileNotFoundError:
        pytest.skip("no /dev/fuse here")
    if not stat.S_ISCHR(found.st_mode) or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("/dev/fuse is not usable by this user here")
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 is missing")
    assert fuse_problem() is None


@pytest.mark.root
@needs_unshare
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="nothing at /dev/fuse to cover")
def test_mount_on_a_regular_file_posing_as_dev_fuse_says_so(tmp_path):
    fake = tmp_path / "not-a-device"
    fake.write_bytes(b"")
    (tmp_path / "m").mkdir()
    # only this private mount namespace sees the fake; the machine's /dev/fuse is untouched
    script = 'mount --bind "$0" /dev/fuse && exec "$@"'
    done = subprocess.run(
        [*PRIVATE_MOUNTS, "sh", "-c", script, str(fake), *VBUSFS, "mount", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "/dev/fuse is not the FUSE device (character device 10:229)" in done.stderr
    assert "but a regular file" in done.stderr
    assert "mknod -m 0666 /dev/fuse c 10 229" in done.stderr
    assert_user_facing(done.stderr)
    assert mount_at(str(tmp_path / "m")) is None


# -- libfuse refusing the mount ---------------------------------------------------------


@pytest.mark.mount
@pytest.mark.root
@needs_setpriv
def test_a_mount_libfuse_refuses_says_once_what_failed_why_and_the_fix(tmp_path):
    done = subprocess.run(
        [*NO_SYS_ADMIN, *VBUSFS, "mount", "--log", str(tmp_path / "log"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    message = done.stderr.strip()
    assert message.startswith(f"vbusfs mount: libfuse could not mount {tmp_path} (")
    assert "Operation not permitted" in message  # libfuse's (fusermount3's) own reason
    assert "CAP_SYS_ADMIN" in message and "--cap-add SYS_ADMIN" in message  # the fix
    assert message.count("mount failed") <= 1
    assert_user_facing(message)
    assert mount_at(str(tmp_path)) is None


@pytest.mark.mount
@pytest.mark.root
@needs_setpriv
def test_the_demo_says_once_why_it_cannot_mount():
    done = subprocess.run(
        [*NO_SYS_ADMIN, *VBUSFS, "demo"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("vbusfs cannot mount here: libfuse could not mount ")
    assert "mounting failed" not in first
    assert "Operation not permitted" in first and "CAP_SYS_ADMIN" in first
    assert_user_facing(first)
    assert "virtual-ethernet" in done.stdout  # and it replayed on the model


@pytest.mark.parametrize(
    ("libfuse_said", "fix"),
    [
        (
            "fusermount3: option allow_other only allowed if 'user_allow_other' is set in "
            "/etc/fuse.conf\n",
            "add the line user_allow_other to /etc/fuse.conf",
        ),
        ("fuse: device not found, try 'modprobe fuse' first\n", "modprobe fuse on the host"),
        ("fusermount3: user has no write access to mountpoint /x\n", "a directory this user"),
        ("", "see the daemon's log"),
    ],
)
def test_libfuse_reasons_are_kept_and_explained(tmp_path, libfuse_said, fix):
    if fuse_problem() is not None:
        pytest.skip("the device probe would speak first here")
    noise = "2026-01-01 00:00:00,000 pyfuse3 DEBUG Calling fuse_session_mount\n"
    message = explain_mount_failure(str(tmp_path), noise + libfuse_said)
    assert message.startswith(f"libfuse could not mount {tmp_path} (")
    assert fix in message
    reason = libfuse_said.strip() or "libfuse gave no reason"
    assert f"({reason})" in message
    assert_user_facing(message)


# -- the mount point --------------------------------------------------------------------


@pytest.mark.mount
def test_mounting_on_a_missing_directory_says_to_create_it(tmp_path):
    missing = tmp_path / "missing"
    done = subprocess.run([*VBUSFS, "mount", str(missing)], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"vbusfs mount: {missing} does not exist: create the directory first (mkdir -p {missing})"
    )


@pytest.mark.mount
def test_mounting_on_a_regular_file_says_it_is_not_a_directory(tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    done = subprocess.run([*VBUSFS, "mount", str(file)], capture_output=True, text=True)
    assert done.returncode == 1
    assert f"{file} is a regular file, not a directory: mount on a directory" in done.stderr
    assert_user_facing(done.stderr)


# -- LiveMount and the vbus_mount fixture hand on the daemon's reason -------------------


@pytest.mark.mount
@pytest.mark.parametrize(
    ("make", "kwargs", "reason"),
    [
        (None, {}, "does not exist: create the directory first"),
        ("file", {}, "is a regular file, not a directory"),
        ("dir", {"load": ("vbusfs_no_such_module:Nothing",)}, "cannot load a deviceclass"),
    ],
)
def test_live_mount_that_fails_raises_with_the_daemons_reason(tmp_path, make, kwargs, reason):
    path = tmp_path / "mountpoint"
    if make == "file":
        path.write_text("")
    elif make == "dir":
        path.mkdir()
    mount = LiveMount(str(path), **kwargs)
    with pytest.raises(RuntimeError) as failed:
        mount.start()
    assert f"vbusfs did not mount {path}: " in str(failed.value)
    assert reason in str(failed.value)
    assert mount.process is not None and mount.process.poll() is not None  # stopped, reaped
    assert not os.path.exists(mount.log_path)
    assert reason in mount.log  # the log stays readable after stop()
    assert mount_at(str(path)) is None


VBUS_MOUNT_PROJECT = """
import pytest


@pytest.fixture
def vbus_load():
    return ("vbusfs_no_such_module:Nothing",)


def test_needs_a_mount(vbus_mount):
    pass
"""


@pytest.mark.mount
def test_vbus_mount_that_fails_reports_the_daemons_reason(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (tmp_path / "test_project.py").write_text(VBUS_MOUNT_PROJECT)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout  # one error in set-up
    assert "1 error" in done.stdout
    assert "vbus_mount cannot load a deviceclass vbusfs_no_such_module:Nothing" in done.stdout
    assert "No module named 'vbusfs_no_such_module'" in done.stdout
    assert "vbusfs_no_such_module" in done.stdout
    assert "FileNotFoundError" not in done.stdout
