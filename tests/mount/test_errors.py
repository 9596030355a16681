"""Every errno of behaviour §5 that config/ and sys/ answer, through real syscalls."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

import pytest

pytestmark = pytest.mark.mount

SETUP = (
    "mkdir config/vbus/instances/B config/vbus/instances/C "
    "config/vbus/devices/D config/vbus/devices/U config/vbus/devices/L && "
    "echo venet-tap > config/vbus/devices/D/type && "
    "echo venet-loopback > config/vbus/devices/L/type && "
    "ln -s ../../devices/L config/vbus/instances/B/L"
)


@pytest.fixture
def populated(vbus_mount):
    # the session's shared daemon, reset after each test: every case here starts from
    # the same tree, and only the tree (no process, no log line, no daemon resource)
    vbus_mount.sh(SETUP, check=True)
    return vbus_mount


def snapshot(mnt) -> str:
    return mnt.sh(
        "find config sys -printf '%p %y %l\\n' | sort; cat config/vbus/devices/*/type"
    ).stdout


CASES = [
    # (description, python call on paths relative to the mount, errno)
    (
        "type: unknown class",
        lambda p: write(p("config/vbus/devices/U/type"), "foo\n"),
        errno.ENOENT,
    ),
    (
        "type: already typed",
        lambda p: write(p("config/vbus/devices/D/type"), "venet-tap"),
        errno.EINVAL,
    ),
    (
        "type: other class",
        lambda p: write(p("config/vbus/devices/D/type"), "venet-switch"),
        errno.EINVAL,
    ),
    ("mkdir existing device", lambda p: os.mkdir(p("config/vbus/devices/D")), errno.EEXIST),
    ("mkdir existing bus", lambda p: os.mkdir(p("config/vbus/instances/B")), errno.EEXIST),
    ("mkdir in config/vbus", lambda p: os.mkdir(p("config/vbus/x")), errno.EPERM),
    ("mkdir in a device", lambda p: os.mkdir(p("config/vbus/devices/D/x")), errno.EPERM),
    ("mkdir in a bus", lambda p: os.mkdir(p("config/vbus/instances/B/x")), errno.EPERM),
    ("mkdir in perms", lambda p: os.mkdir(p("config/vbus/instances/B/perms/x")), errno.EPERM),
    ("mkdir at the root", lambda p: os.mkdir(p("x")), errno.EPERM),
    ("mkdir bus 0", lambda p: os.mkdir(p("config/vbus/instances/0")), errno.EINVAL),
    (
        "mkdir long name",
        lambda p: os.mkdir(p("config/vbus/devices/" + "x" * 256)),
        errno.ENAMETOOLONG,
    ),
    (
        "mkdir huge name",
        lambda p: os.mkdir(p("config/vbus/devices/" + "x" * 2000)),
        errno.ENAMETOOLONG,
    ),
    ("rmdir linked device", lambda p: os.rmdir(p("config/vbus/devices/L")), errno.EBUSY),
    ("rmdir bus with a link", lambda p: os.rmdir(p("config/vbus/instances/B")), errno.ENOTEMPTY),
    ("rmdir devices", lambda p: os.rmdir(p("config/vbus/devices")), errno.EPERM),
    ("rmdir instances", lambda p: os.rmdir(p("config/vbus/instances")), errno.EPERM),
    ("rmdir perms", lambda p: os.rmdir(p("config/vbus/instances/C/perms")), errno.EPERM),
    ("rmdir config/vbus", lambda p: os.rmdir(p("config/vbus")), errno.EPERM),
    ("rmdir in sys", lambda p: os.rmdir(p("sys/vbus/devices/U")), errno.EPERM),
    ("rmdir sys class", lambda p: os.rmdir(p("sys/vbus/deviceclass/venet-tap")), errno.EPERM),
    ("rmdir a symlink", lambda p: os.rmdir(p("config/vbus/instances/B/L")), errno.ENOTDIR),
    (
        "symlink in instances",
        lambda p: os.symlink("../devices/D", p("config/vbus/instances/x")),
        errno.EPERM,
    ),
    ("symlink in devices", lambda p: os.symlink("D", p("config/vbus/devices/x")), errno.EPERM),
    (
        "symlink in perms",
        lambda p: os.symlink("../../../devices/D", p("config/vbus/instances/B/perms/x")),
        errno.EPERM,
    ),
    ("symlink outside", lambda p: os.symlink("/tmp", p("config/vbus/instances/C/x")), errno.EPERM),
    (
        "symlink to sys",
        lambda p: os.symlink(p("sys/vbus/devices/D"), p("config/vbus/instances/C/x")),
        errno.EPERM,
    ),
    (
        "symlink above mount",
        lambda p: os.symlink("../../../../..", p("config/vbus/instances/C/x")),
        errno.EPERM,
    ),
    (
        "symlink missing",
        lambda p: os.symlink("../../devices/nope", p("config/vbus/instances/C/x")),
        errno.ENOENT,
    ),
    (
        "symlink to file",
        lambda p: os.symlink("../../devices/D/type", p("config/vbus/instances/C/x")),
        errno.ENOTDIR,
    ),
    ("symlink to bus", lambda p: os.symlink("../B", p("config/vbus/instances/C/x")), errno.EINVAL),
    (
        "symlink to devices",
        lambda p: os.symlink("../../devices", p("config/vbus/instances/C/x")),
        errno.EINVAL,
    ),
    (
        "symlink to perms",
        lambda p: os.symlink("perms", p("config/vbus/instances/C/x")),
        errno.EINVAL,
    ),
    (
        "symlink untyped",
        lambda p: os.symlink("../../devices/U", p("config/vbus/instances/C/x")),
        errno.EINVAL,
    ),
    (
        "symlink existing name",
        lambda p: os.symlink("../../devices/D", p("config/vbus/instances/B/L")),
        errno.EEXIST,
    ),
    (
        "symlink named perms",
        lambda p: os.symlink("../../devices/D", p("config/vbus/instances/C/perms")),
        errno.EEXIST,
    ),
    (
        "link tap twice",
        lambda p: os.symlink("../../devices/L", p("config/vbus/instances/C/L")),
        errno.EBUSY,
    ),
    (
        "symlink long name",
        lambda p: os.symlink("../../devices/D", p("config/vbus/instances/C/" + "x" * 256)),
        errno.ENAMETOOLONG,
    ),
    ("unlink attribute", lambda p: os.unlink(p("config/vbus/devices/D/type")), errno.EPERM),
    ("unlink sys attribute", lambda p: os.unlink(p("sys/vbus/devices/D/enabled")), errno.EPERM),
    ("unlink sys link", lambda p: os.unlink(p("sys/vbus/devices/D/class")), errno.EPERM),
    ("unlink version", lambda p: os.unlink(p("sys/vbus/version")), errno.EPERM),
    ("unlink directory", lambda p: os.unlink(p("config/vbus/devices/D")), errno.EISDIR),
    (
        "rename device",
        lambda p: os.rename(p("config/vbus/devices/D"), p("config/vbus/devices/E")),
        errno.EPERM,
    ),
    (
        "rename link",
        lambda p: os.rename(p("config/vbus/instances/B/L"), p("config/vbus/instances/B/M")),
        errno.EPERM,
    ),
    (
        "hard link",
        lambda p: os.link(p("config/vbus/devices/D/type"), p("config/vbus/devices/D/t2")),
        errno.EPERM,
    ),
    ("create file", lambda p: open(p("config/vbus/devices/D/new"), "w").close(), errno.EACCES),
    ("create in sys", lambda p: open(p("sys/vbus/new"), "w").close(), errno.EACCES),
    ("mkfifo", lambda p: os.mkfifo(p("config/vbus/devices/D/fifo")), errno.EACCES),
    (
        "mknod",
        lambda p: os.mknod(p("config/vbus/x"), stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        errno.EACCES,
    ),
    ("socket", lambda p: bind_unix(p("config/vbus/sock")), errno.EACCES),
    ("mkdir in sys", lambda p: os.mkdir(p("sys/vbus/devices/x")), errno.EPERM),
    ("mkdir in sys instances", lambda p: os.mkdir(p("sys/vbus/instances/x")), errno.EPERM),
    (
        "symlink in sys",
        lambda p: os.symlink("../devices/D", p("sys/vbus/instances/B/x")),
        errno.EPERM,
    ),
    (
        "open read-only for write",
        lambda p: open(p("sys/vbus/devices/D/host_mac"), "w").close(),
        errno.EACCES,
    ),
    ("open version for write", lambda p: os.open(p("sys/vbus/version"), os.O_WRONLY), errno.EACCES),
    (
        "open iface type rdwr",
        lambda p: os.open(p("sys/vbus/instances/B/devices/0/type"), os.O_RDWR),
        errno.EACCES,
    ),
    (
        "store too long",
        lambda p: write(p("sys/vbus/devices/D/client_mac"), "x" * 4097),
        errno.EINVAL,
    ),
    ("store bad mac", lambda p: write(p("sys/vbus/devices/D/client_mac"), "nope\n"), errno.EINVAL),
    ("store bad enabled", lambda p: write(p("sys/vbus/devices/D/enabled"), "2\n"), errno.EINVAL),
    ("store bad burst", lambda p: write(p("sys/vbus/devices/D/burstthresh"), "-3\n"), errno.EINVAL),
    ("chmod attribute", lambda p: os.chmod(p("sys/vbus/devices/D/enabled"), 0o666), errno.EPERM),
    ("chown device", lambda p: os.chown(p("config/vbus/devices/D"), 1, 1), errno.EPERM),
]


def bind_unix(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)


def write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


@pytest.mark.parametrize(("what", "call", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_operation_gets_its_errno_and_changes_nothing(populated, what, call, code):
    before = snapshot(populated)
    with pytest.raises(OSError) as info:
        call(populated.join)
    assert info.value.errno == code, f"{what}: {info.value}"
    assert snapshot(populated) == before


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("echo foo > config/vbus/devices/U/type", "No such file or directory"),
        ("mkdir config/vbus/instances/0", "Invalid argument"),
        ("rmdir config/vbus/devices/L", "Device or resource busy"),
        ("rmdir config/vbus/instances/B", "Directory not empty"),
        ("ln -s /etc config/vbus/instances/C/", "Operation not permitted"),
        ("ln -s ../../devices/L config/vbus/instances/C/", "Device or resource busy"),
        ("rm config/vbus/devices/D/type", "Operation not permitted"),
        ("echo 1 > sys/vbus/devices/D/host_mac", "Permission denied"),
        ("touch config/vbus/devices/D/new", "Permission denied"),
        ("mv config/vbus/devices/D config/vbus/devices/E", "Operation not permitted"),
    ],
)
def test_shell_commands_report_the_errno(populated, command, message):
    done = populated.sh(command)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_failed_operations_do_not_disturb_later_ones(populated):
    for _what, call, _code in CASES:
        with contextlib.suppress(OSError):
            call(populated.join)
    populated.sh(
        "rm config/vbus/instances/B/L && ln -s ../../devices/D config/vbus/instances/C/ && "
        "rmdir config/vbus/devices/U",
        check=True,
    )
    assert os.listdir(populated.join("sys/vbus/instances/C/devices")) == ["0"]
    assert os.listdir(populated.join("sys/vbus/instances/B/devices")) == []
