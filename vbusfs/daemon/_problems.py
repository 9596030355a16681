"""Why a mount cannot be made, in words a user can act on: what failed, why, the fix.

Every check here only looks (stat, access, which); nothing is changed. `MountError`
carries the message to the user, through the daemon's readiness report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator


class MountError(Exception):
    """A mount or unmount that cannot be done, with a message for the user."""


FUSE_DEVICE = "/dev/fuse"
# The FUSE character device's numbers (Documentation/admin-guide/devices.txt: 10 229).
FUSE_MAJOR, FUSE_MINOR = 10, 229
_CONTAINER_FIX = (
    "In a container: run it with --device /dev/fuse --cap-add SYS_ADMIN "
    "(and --security-opt apparmor:unconfined on AppArmor hosts)."
)


def fuse_problem(device: str = FUSE_DEVICE) -> str | None:
    """Why a FUSE mount cannot be made here, with the fix; None if nothing is known wrong.

    `device` is where the FUSE device is looked for (tests point it elsewhere).
    """
    try:
        found = os.stat(device)
    except FileNotFoundError:
        return f"{device} does not exist. On a host: modprobe fuse. {_CONTAINER_FIX}"
    except OSError as exc:
        return f"{device} cannot be examined ({exc.strerror}). {_CONTAINER_FIX}"
    if not stat.S_ISCHR(found.st_mode) or found.st_rdev != os.makedev(FUSE_MAJOR, FUSE_MINOR):
        return (
            f"{device} is not the FUSE device (character device {FUSE_MAJOR}:{FUSE_MINOR}) "
            f"but {_describe(found)}. On a host: rm {device} && "
            f"mknod -m 0666 {device} c {FUSE_MAJOR} {FUSE_MINOR} (or modprobe fuse, "
            f"which makes it). {_CONTAINER_FIX}"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return (
            f"{device} is not readable and writable by this user (mode "
            f"{stat.S_IMODE(found.st_mode):04o}): run as root, or chmod 0666 {device} "
            "(Debian's default)."
        )
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing: apt-get install fuse3 (make setup does it)."
    return None


def _describe(found: os.stat_result) -> str:
    """What kind of file a stat result is, for a message."""
    if stat.S_ISCHR(found.st_mode):
        return f"character device {os.major(found.st_rdev)}:{os.minor(found.st_rdev)}"
    if stat.S_ISBLK(found.st_mode):
        return f"block device {os.major(found.st_rdev)}:{os.minor(found.st_rdev)}"
    kinds = [
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(found.st_mode)), "another kind of file")


def mountpoint_problem(mountpoint: str) -> str | None:
    """Why `mountpoint` cannot be mounted on, with the fix; None if it is a directory."""
    try:
        found = os.stat(mountpoint)
    except FileNotFoundError:
        return f"{mountpoint} does not exist: create the directory first (mkdir -p {mountpoint})"
    except OSError as exc:
        return f"{mountpoint} cannot be examined ({exc.strerror})"
    if not stat.S_ISDIR(found.st_mode):
        return f"{mountpoint} is {_describe(found)}, not a directory: mount on a directory"
    return None


# What libfuse's own complaint (on stderr) means, and how to fix it; first match wins.
_LIBFUSE_FIXES = (
    (
        "user_allow_other",
        "add the line user_allow_other to /etc/fuse.conf, or mount as root",
    ),
    (
        "no write access to mountpoint",
        "mount on a directory this user owns and may write to, or mount as root",
    ),
    (
        "Operation not permitted",
        "mounting needs CAP_SYS_ADMIN or a working setuid-root fusermount3: run the daemon "
        "as root with that capability (in a container: --cap-add SYS_ADMIN), and check that "
        "fusermount3 is installed setuid root (apt-get install --reinstall fuse3)",
    ),
    (
        "Permission denied",
        f"this user may not open {FUSE_DEVICE} or the mount point: run as root, or give the "
        f"user read and write access to {FUSE_DEVICE} and a mount point it owns",
    ),
    (
        "modprobe fuse",
        f"modprobe fuse on the host. {_CONTAINER_FIX}",
    ),
    (
        "fusermount3",
        "fusermount3 failed or is missing: apt-get install fuse3 (make setup does it)",
    ),
)


def explain_mount_failure(mountpoint: str, libfuse_said: str) -> str:
    """The message for a mount libfuse refused: what failed, libfuse's reason, the fix."""
    reasons = [
        line.strip()
        for line in libfuse_said.splitlines()
        if line.strip().startswith(("fuse:", "fusermount3:", "fusermount:"))
    ]
    reason = "; ".join(reasons) if reasons else "libfuse gave no reason"
    # A problem with the device or the mount point outranks libfuse's guess.
    probed = fuse_problem() or mountpoint_problem(mountpoint)
    if probed is not None:
        fix = probed
    else:
        fix = next(
            (fix for clue, fix in _LIBFUSE_FIXES if clue in reason),
            "see the daemon's log and the troubleshooting section of the README",
        )
    return f"libfuse could not mount {mountpoint} ({reason}). Fix: {fix}"


@contextlib.contextmanager
def stderr_captured() -> Iterator[list[str]]:
    """Collect what is written to fd 2 (libfuse and fusermount3 print their reasons there)
    inside the block, then write it to the real fd 2 as well, so the log keeps it."""
    said: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to capture, and nowhere it would have gone
        yield said
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read()
            os.write(2, text)
            said.append(text.decode(errors="replace"))
