"""Where a daemon keeps its state: the runtime directory, its state file, its socket.

Paths are derived from the canonical mount point, so every command that names the
same directory finds the same daemon. The runtime directory is a trust boundary:
`ensure_runtime_dir()` creates it (and `mounts/`, `connectors/`) or proves it is this
user's alone, and refuses otherwise; it never changes the mode of a directory it did
not create. Files in it are opened without following symlinks.

A live mount's files are locked (a shared `flock`: the daemon's state file and its log,
held by the daemon's open descriptors, so the kernel lets go when the daemon ends,
however it ends). `sweep_ended()` removes the state file, log and connector socket of
every mount whose daemon is gone: `vbusfs mount` and `vbusfs umount` call it, so the
directory keeps no files of ended mounts past the next of them (behaviour §8).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from vbusfs._mountinfo import canonical_mountpoint

from ._problems import MountError

# Never follow a symlink planted where a file of ours goes; never leak the fd to children.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


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
    hold(fd)  # in use while any copy of this description lives (the daemon's stderr)
    return fd


def hold(fd: int) -> None:
    """Mark the file of `fd` in use for as long as its open file description lives."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def _claim(path: str) -> int | None:
    """An fd of `path`, exclusively locked, if no one holds it and it is still at
    `path`; else None. The fd's lock ends when it is closed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        there, ours = os.lstat(path), os.fstat(fd)
        if (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def sweep_ended(alive: Callable[[int], bool]) -> list[str]:
    """Remove the state files, logs and connector sockets of mounts whose daemon is
    gone; the paths removed. A mount is gone when its state file is not held (and, for
    a daemon of an older vbusfs that held nothing, `alive(pid)` says no); a log goes
    with its state file, or alone when nothing holds it and no state file names it."""
    mounts = os.path.join(runtime_dir(), "mounts")
    try:
        names = sorted(os.listdir(mounts))
    except OSError:
        return []
    removed: list[str] = []
    for name in names:
        path = os.path.join(mounts, name)
        if not name.endswith(".json"):
            continue
        fd = _claim(path)
        if fd is None:
            continue
        try:
            with open(os.dup(fd), encoding="utf-8") as f:
                data = json.load(f)
            pid, mountpoint = int(data["pid"]), str(data["mountpoint"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, mountpoint = 0, ""
        try:
            if pid > 0 and alive(pid):
                continue
            if mountpoint:
                socket = connector_path(mountpoint)
                if os.path.lexists(socket):
                    _remove(socket)
                    removed.append(socket)
            _remove(path)
            removed.append(path)
        finally:
            os.close(fd)
    stems = {n[: -len(".json")] for n in os.listdir(mounts) if n.endswith(".json")}
    for name in names:
        if not name.endswith(".log") or name[: -len(".log")] in stems:
            continue
        path = os.path.join(mounts, name)
        fd = _claim(path)
        if fd is None:
            continue
        try:
            for old in (path, path + ".1"):
                if os.path.lexists(old):
                    _remove(old)
                    removed.append(old)
        finally:
            os.close(fd)
    return removed


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
        """Write the state file, held (locked) until `remove()` or this process ends."""
        path = state_path(self.mountpoint)
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a killed daemon with this pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        hold(fd)  # before it is at `path`: a sweep never sees it unheld
        with open(os.dup(fd), "w", encoding="utf-8") as f:
            json.dump({"pid": self.pid, "mountpoint": self.mountpoint, "log": self.log}, f)
        os.replace(tmp, path)
        previous = _HELD.pop(path, None)
        if previous is not None:
            os.close(previous)
        _HELD[path] = fd

    def remove(self) -> None:
        path = state_path(self.mountpoint)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        held = _HELD.pop(path, None)
        if held is not None:
            os.close(held)


# state file path -> the fd that holds it, for the daemon's life
_HELD: dict[str, int] = {}
