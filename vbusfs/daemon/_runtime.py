"""Where a daemon keeps its state: the runtime directory, its state file, its socket.

Paths are derived from the canonical mount point, so every command that names the
same directory finds the same daemon. The runtime directory is a trust boundary:
`ensure_runtime_dir()` creates it (and `mounts/`, `connectors/`) or proves it is this
user's alone, and refuses otherwise; it never changes the mode of a directory it did
not create. Files in it are opened without following symlinks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import urllib.parse
from dataclasses import dataclass

from ._problems import MountError

# Never follow a symlink planted where a file of ours goes; never leak the fd to children.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def canonical_mountpoint(path: str) -> str:
    """The absolute path of a mount point without touching the mount itself.

    realpath() would stat a dead FUSE mount and fail; the parent is safe.
    """
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def runtime_dir() -> str:
    explicit = os.environ.get("VBUSFS_RUNTIME_DIR")
    if explicit:
        return explicit
    if os.getuid() == 0:
        return "/run/vbusfs"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "vbusfs")
    return f"/tmp/vbusfs-{os.getuid()}"


def connector_path(mountpoint: str) -> str:
    """The connector socket of the daemon serving `mountpoint` (short: sun_path is 108 bytes)."""
    digest = hashlib.sha256(canonical_mountpoint(mountpoint).encode()).hexdigest()[:20]
    return os.path.join(runtime_dir(), "connectors", f"{digest}.sock")


def _shared_mode() -> int:
    """The mode of the directories on the way to a connector socket.

    Root's mounts are open to every user (allow_other), so members of any user must
    reach its socket: searchable, writable by root alone. A user's mount is that
    user's alone, and so is the way to its socket.
    """
    return 0o755 if os.getuid() == 0 else 0o700


def _unsafe_fix(directory: str, found: os.stat_result) -> str:
    if os.environ.get("VBUSFS_RUNTIME_DIR"):
        if directory == runtime_dir() and found.st_mode & stat.S_ISVTX:
            # A sticky directory like /tmp: a directory of ours inside it stays ours.
            private = os.path.join(directory, f"vbusfs-{os.getuid()}")
            return (
                "point VBUSFS_RUNTIME_DIR at a directory only this user can write, e.g. "
                f"mkdir -m 0700 {private} and use that"
            )
        return (
            "point VBUSFS_RUNTIME_DIR at a directory only this user can write (mkdir -m 0700 DIR)"
        )
    return (
        f"if this user did not make {directory}, someone else did: remove it "
        f"(rm -rf {directory}) and vbusfs makes it afresh, or point VBUSFS_RUNTIME_DIR at "
        "a directory only this user can write (mkdir -m 0700 DIR)"
    )


def _own_dir(directory: str, mode: int) -> None:
    """Create `directory` with `mode`, or check an existing one is this user's alone.

    A directory another user owns or may write to could hold a planted symlink where our
    log goes or a swapped socket where members connect: refuse it, and leave it alone.
    """
    try:
        os.mkdir(directory, mode)
    except FileExistsError:
        pass
    else:
        os.chmod(directory, mode)  # ours, just made: the umask must not narrow it
        return
    found = os.lstat(directory)
    why = None
    if stat.S_ISLNK(found.st_mode):
        why = "it is a symbolic link"
    elif not stat.S_ISDIR(found.st_mode):
        why = "it is not a directory"
    elif found.st_uid != os.getuid():
        why = f"it belongs to uid {found.st_uid}, not to this user (uid {os.getuid()})"
    elif found.st_mode & 0o022:
        why = f"other users may write to it (mode {stat.S_IMODE(found.st_mode):04o})"
    if why is not None:
        raise MountError(
            f"the runtime directory {directory} is not safe to use: {why}. Fix: "
            f"{_unsafe_fix(directory, found)}"
        )


def ensure_runtime_dir() -> str:
    """Make the runtime directory and its `mounts/` and `connectors/`, or refuse them.

    Created here: mode 0700 (0755 for root, whose members of any user must reach the
    connector socket), `mounts/` 0700. Found: each must be a real directory owned by
    this user that no one else may write to, or MountError names it and the fix.
    """
    top = runtime_dir()
    parent = os.path.dirname(os.path.abspath(top))
    try:
        os.makedirs(parent, exist_ok=True)
        _own_dir(top, _shared_mode())
        _own_dir(os.path.join(top, "mounts"), 0o700)
        _own_dir(os.path.join(top, "connectors"), _shared_mode())
    except OSError as exc:
        raise MountError(
            f"cannot prepare the runtime directory {top} ({exc.strerror}): point "
            "VBUSFS_RUNTIME_DIR at a directory this user may create files in"
        ) from exc
    return top


def open_log(path: str) -> int:
    """Open `path` to append to, never through a symlink; the fd. MountError if refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o600)
    except OSError as exc:
        raise MountError(
            f"cannot open the log file {path} ({exc.strerror}; a symbolic link is never "
            "followed): give --log a regular file this user owns"
        ) from exc
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_uid != os.getuid():
        os.close(fd)
        raise MountError(
            f"the log file {path} is not a regular file of this user: give --log a "
            "regular file this user owns"
        )
    return fd


def state_path(mountpoint: str) -> str:
    """Where the daemon serving `mountpoint` records its pid and log file."""
    name = urllib.parse.quote(canonical_mountpoint(mountpoint), safe="")
    return os.path.join(runtime_dir(), "mounts", name + ".json")


@dataclass(frozen=True)
class MountState:
    pid: int
    mountpoint: str
    log: str | None

    @classmethod
    def load(cls, mountpoint: str) -> MountState | None:
        try:
            fd = os.open(state_path(mountpoint), os.O_RDONLY | NOFOLLOW)
            with open(fd, encoding="utf-8") as f:
                data = json.load(f)
            return cls(int(data["pid"]), str(data["mountpoint"]), data.get("log"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self) -> None:
        path = state_path(self.mountpoint)
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a killed daemon with this pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump({"pid": self.pid, "mountpoint": self.mountpoint, "log": self.log}, f)
        os.replace(tmp, path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_path(self.mountpoint))
