"""Dead stays dead (behaviour §4, §5): what a process holds of a removed object (its cwd,
a directory fd, an attribute fd) never reaches a later object of the same name.

As in the kernel's sysfs and configfs: in a removed directory `stat .` still answers and
`ls` lists nothing, every name looked up there is ENOENT, nothing can be made there, and
reads and writes through a file opened before the removal fail with ENODEV.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess

import pytest

from vbusfs.classes import VenetLoopback

pytestmark = pytest.mark.mount

# run in a removed directory, after the line that says it may go on
IN_DEAD_CWD = r"""
cd "$1" || exit 9
echo ready
read _
echo "stat:$(stat -c %F .)"
echo "ls:$(ls -A 2>&1)|$?"
cat type 2>&1 || true
cat client_mac 2>&1 || true
echo venet-tap > type 2>&1 || echo "store failed"
mkdir X 2>&1 || true
"""


@pytest.fixture
def mnt(vbus_mount):
    """The session's shared daemon, reset after each test: these tests use only the trees."""
    return vbus_mount


class Shell:
    """A bash whose cwd is `directory`, waiting for a line on its stdin to go on."""

    def __init__(self, directory: str) -> None:
        self.process = subprocess.Popen(
            ["bash", "-c", IN_DEAD_CWD, "bash", directory],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, LC_ALL="C"),
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "ready\n"

    def go_on(self) -> str:
        out, _ = self.process.communicate("go\n", timeout=30)
        return out


def test_a_shell_in_a_removed_directory_never_reaches_the_new_namesake(mnt):
    mnt.sh(
        "mkdir config/vbus/devices/Z config/vbus/instances/B && "
        "echo venet-tap > config/vbus/devices/Z/type && "
        "ln -s ../../devices/Z config/vbus/instances/B/",
        check=True,
    )
    held = {
        "sys device": "sys/vbus/devices/Z",
        "config device": "config/vbus/devices/Z",
        "interfaces": "sys/vbus/devices/Z/interfaces",
        "interface": "sys/vbus/instances/B/devices/0",
        "perms": "config/vbus/instances/B/perms",
    }
    shells = {what: Shell(mnt.join(path)) for what, path in held.items()}
    try:
        # everything goes, and comes back under the same names: Z of another class,
        # a bus B whose first interface is 0 again
        mnt.sh(
            "rm config/vbus/instances/B/Z && "
            "rmdir config/vbus/instances/B config/vbus/devices/Z && "
            "mkdir config/vbus/devices/Z config/vbus/instances/B && "
            "echo venet-loopback > config/vbus/devices/Z/type && "
            "ln -s ../../devices/Z config/vbus/instances/B/",
            check=True,
        )
        said = {what: shell.go_on() for what, shell in shells.items()}
    finally:
        for shell in shells.values():
            shell.process.kill()
            shell.process.wait()
    for what, out in said.items():
        lines = out.splitlines()
        assert lines[:4] == [
            "stat:directory",
            "ls:|0",  # nothing listed, and no error
            "cat: type: No such file or directory",
            "cat: client_mac: No such file or directory",
        ], (what, out)
        assert lines[4].endswith("type: No such file or directory"), (what, out)  # the `>`
        assert lines[5:] == [
            "store failed",
            "mkdir: cannot create directory 'X': No such file or directory",
        ], (what, out)
    # the new objects are as made: untouched by the shells
    assert mnt.sh("cat config/vbus/devices/Z/type").stdout == "venet-loopback\n"
    made = {a.name for a in VenetLoopback.attributes} | {"class", "interfaces"}
    assert sorted(os.listdir(mnt.join("sys/vbus/devices/Z"))) == sorted(made)
    assert os.listdir(mnt.join("config/vbus/instances/B/perms")) == ["owner", "group", "mode"]


def _errno_of(call) -> int:
    with pytest.raises(OSError) as info:
        call()
    return info.value.errno


def test_fds_held_across_a_removal_answer_enodev_and_enoent(mnt):
    mnt.sh(
        "mkdir config/vbus/devices/Z config/vbus/instances/B && "
        "echo venet-tap > config/vbus/devices/Z/type && "
        "ln -s ../../devices/Z config/vbus/instances/B/",
        check=True,
    )
    burst = os.open(mnt.join("sys/vbus/devices/Z/burstthresh"), os.O_RDWR)
    device_dir = os.open(mnt.join("sys/vbus/devices/Z"), os.O_RDONLY | os.O_DIRECTORY)
    interface_dir = os.open(mnt.join("sys/vbus/instances/B/devices/0"), os.O_RDONLY)
    interface_type = os.open(mnt.join("sys/vbus/instances/B/devices/0/type"), os.O_RDONLY)
    mode = os.open(mnt.join("config/vbus/instances/B/perms/mode"), os.O_RDWR)
    held = [burst, device_dir, interface_dir, interface_type, mode]
    try:
        mnt.sh(
            "rm config/vbus/instances/B/Z && "
            "rmdir config/vbus/instances/B config/vbus/devices/Z && "
            "mkdir config/vbus/devices/Z config/vbus/instances/B && "
            "echo venet-tap > config/vbus/devices/Z/type && "
            "echo 33 > config/vbus/devices/Z/../../../../sys/vbus/devices/Z/burstthresh && "
            "ln -s ../../devices/Z config/vbus/instances/B/",
            check=True,
        )
        assert _errno_of(lambda: os.write(burst, b"5\n")) == errno.ENODEV
        assert _errno_of(lambda: os.pread(burst, 100, 0)) == errno.ENODEV
        assert _errno_of(lambda: os.pread(interface_type, 100, 0)) == errno.ENODEV
        assert _errno_of(lambda: os.write(mode, b"0777\n")) == errno.ENODEV
        for directory in (device_dir, interface_dir):
            assert stat.S_ISDIR(os.fstat(directory).st_mode)  # stat still answers
            assert os.listdir(directory) == []
            for name in ("burstthresh", "type", "device"):
                with pytest.raises(FileNotFoundError):
                    os.open(name, os.O_RDONLY, dir_fd=directory)
        assert stat.S_ISREG(os.fstat(burst).st_mode)
    finally:
        for fd in held:
            os.close(fd)
    # the namesakes kept their own values
    assert mnt.sh("cat sys/vbus/devices/Z/burstthresh").stdout == "33\n"
    assert mnt.sh("cat config/vbus/instances/B/perms/mode").stdout == "0700\n"
    assert mnt.sh("cat sys/vbus/instances/B/devices/0/type").stdout == "virtual-ethernet\n"


def test_a_type_fd_of_an_untyped_device_never_types_its_namesake(mnt):
    mnt.sh("mkdir config/vbus/devices/Z", check=True)
    fd = os.open(mnt.join("config/vbus/devices/Z/type"), os.O_WRONLY)
    try:
        mnt.sh("rmdir config/vbus/devices/Z && mkdir config/vbus/devices/Z", check=True)
        assert _errno_of(lambda: os.write(fd, b"venet-tap\n")) == errno.ENODEV
    finally:
        os.close(fd)
    assert mnt.sh("cat config/vbus/devices/Z/type").stdout == "\n"
    assert os.listdir(mnt.join("sys/vbus/devices/Z")) == ["interfaces"]
