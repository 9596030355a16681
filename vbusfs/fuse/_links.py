"""Link targets resolved as the kernel resolves configfs's (behaviour §5).

configfs has the kernel walk a new link's target in the caller's context: a relative
target from the caller's cwd, an absolute one from its root, through every symlink and
mount on the way; the link is made if the walk lands on an item of that configfs. So
`cd MNT/config/vbus && ln -s devices/D instances/B/`, a symlink or a bind mount leading to
the mount, and `/proc/self/cwd/...` all work.

The walk has two halves, because a request handler must never look a path up in its own
mount: the kernel would send that lookup back to us, and the bus directory the link goes
in is locked by the very `symlink(2)` being served, so it could wait forever.

1. Outside this mount (`walk_outside`, in a worker thread, so a slow or hung filesystem
   of the caller's stalls only this request): from `/proc/<tid>/root` or `/proc/<tid>/cwd`
   one component at a time with `openat(O_PATH|O_NOFOLLOW)`, which never asks a
   filesystem to open anything. Each step's mount and inode are read from
   `/proc/self/fdinfo` (never a request to a filesystem); the walk stops at the first
   directory on this mount (entered by crossing a mount point, a bind mount, or a magic
   link such as `/proc/<pid>/cwd`) and reports its inode number and the rest of the path.
   Ordinary symlinks are read and followed here; `/proc/self` and `/proc/thread-self`
   mean the caller, not the daemon; other procfs links are magic (`cwd`, `root`, `fd/N`)
   and the kernel jumps through them.
2. Inside (`LinkTargets.target`, in the handler, atomic with the link): the inode number
   becomes a tree path and the rest is walked in the views, symlinks included.

When the caller cannot be walked for (no pid in our namespace, /proc refused), an
absolute target falls back to the mountinfo rule (`MountLocations`); a relative one that
does not land on this mount is taken from the bus directory, as vbusfs always did.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass

import trio

from vbusfs import views
from vbusfs.model import Vbus, VbusError
from vbusfs.views import Path

from ._inodes import InodeTable
from ._mountinfo import MountLocations

# Walks outside the mount under way at once (each in a thread of its own).
WALKERS = 8
# The kernel's limit on symlinks followed in one walk.
MAX_HOPS = 40
# The inode number of every procfs's root directory.
PROC_ROOT_INO = 1
_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_FOLLOW = os.O_PATH | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Landing:
    """The walk reached this mount at inode `inode`; `rest` is still to walk."""

    inode: int
    rest: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Walked:
    """What the outside walk found: a landing, somewhere else, a failure, or nothing
    (it could not be made for this caller)."""

    landing: Landing | None = None
    outside: bool = False  # it ended on an existing object that is not on this mount
    error: int = 0  # the errno the kernel's walk would have failed with
    unavailable: bool = False


UNAVAILABLE = Walked(unavailable=True)
OUTSIDE = Walked(outside=True)


def _parts(text: str) -> list[str]:
    return [part for part in text.split("/") if part not in ("", ".")]


def fdinfo(fd: int) -> tuple[int, int]:
    """(mount id, inode number) of `fd`, from procfs: no filesystem is asked."""
    info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(info, 4096)
    finally:
        os.close(info)
    mount_id = inode = -1
    for line in text.splitlines():
        key, _, value = line.partition(b":")
        if key == b"mnt_id":
            mount_id = int(value)
        elif key == b"ino":
            inode = int(value)
    return mount_id, inode


class _Mounts:
    """Which mounts (by id) are ours and which are procfs, as the caller's mountinfo says.

    One per walk, read when first asked and again for an id it does not list: mount ids
    are reused as soon as a mount is gone (namespaces come and go by the hundred), so
    nothing is kept between walks. An id asked about is that of an fd the walk holds,
    which keeps its mount, and so its id, alive."""

    def __init__(self, tid: int, device: str) -> None:
        self.tid = tid
        self.device = device
        self._kinds: dict[int, str] | None = None

    def kind(self, mount_id: int) -> str:
        """ "ours", "proc" or "other"."""
        if self._kinds is None or mount_id not in self._kinds:
            self._kinds = self._read()
        return self._kinds.get(mount_id, "other")

    def _read(self) -> dict[int, str]:
        kinds: dict[int, str] = {}
        with open(f"/proc/{self.tid}/mountinfo", "rb") as f:
            text = f.read()
        device = self.device.encode()
        for line in text.splitlines():
            # id parent major:minor root mount-point options [optional...] - fstype ...
            fields = line.split(b" ")
            try:
                mount_id = int(fields[0])
                fstype = fields[fields.index(b"-", 6) + 1]
            except (ValueError, IndexError):
                continue
            if fields[2] == device:
                kinds[mount_id] = "ours"
            else:
                kinds[mount_id] = "proc" if fstype == b"proc" else "other"
        return kinds


def _status_ids(tid: int) -> tuple[list[str], list[str]]:
    """The caller's process and thread ids in each pid namespace from ours inward."""
    found: dict[str, list[str]] = {}
    with open(f"/proc/{tid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("NStgid", "NSpid"):
                found[key] = value.split()
    return found["NStgid"], found["NSpid"]


# (mount id, inode number, "ours" | "proc" | "other") of the directory a walk is at
Position = tuple[int, int, str]


class _Walk:
    """One walk outside the mount for caller `tid`. It holds two fds at most (the
    caller's root and where it is); `close()` ends it."""

    def __init__(self, tid: int, device: str) -> None:
        self.tid = tid
        self.mounts = _Mounts(tid, device)
        self.root = self.here = -1
        self.root_id = (-1, -1)

    def close(self) -> None:
        for fd in {self.root, self.here} - {-1}:
            os.close(fd)
        self.root = self.here = -1

    def _at(self, fd: int) -> Position:
        mount_id, inode = fdinfo(fd)
        return mount_id, inode, self.mounts.kind(mount_id)

    def _go(self, fd: int, position: Position | None = None) -> Position:
        """Make `fd` (now ours to close) where the walk is; its position."""
        if self.here not in (-1, self.root, fd):
            os.close(self.here)
        self.here = fd
        return position if position is not None else self._at(fd)

    def _self(self, part: str) -> list[str]:
        """What `self` or `thread-self` in the procfs at hand names for the caller."""
        tgids, pids = _status_ids(self.tid)
        try:  # a procfs of our pid namespace names us by our own pid
            ours = os.readlink("self", dir_fd=self.here) == str(os.getpid())
        except OSError:
            ours = False
        tgid, pid = (tgids[0], pids[0]) if ours else (tgids[-1], pids[-1])
        return [tgid] if part == "self" else [tgid, "task", pid]

    def _root(self) -> tuple[int, tuple[int, int]]:
        """The caller's root: its fd and (mount id, inode), opened when first needed."""
        if self.root == -1:
            self.root = os.open(f"/proc/{self.tid}/root", _FOLLOW)
            self.root_id = fdinfo(self.root)
        return self.root, self.root_id

    def run(self, text: str) -> Walked:
        if text.startswith("/"):
            at = self._go(self._root()[0])
        else:
            at = self._go(os.open(f"/proc/{self.tid}/cwd", _FOLLOW))
        parts = deque(_parts(text))
        hops = 0
        while True:
            mount_id, inode, kind = at
            if kind == "ours":
                return Walked(landing=Landing(inode, tuple(parts)))
            if not parts:
                return OUTSIDE
            part = parts.popleft()
            if part == "..":
                if (mount_id, inode) != self._root()[1]:  # `..` of its root is its root
                    at = self._go(os.open("..", _NOFOLLOW, dir_fd=self.here))
                continue
            if kind == "proc" and inode == PROC_ROOT_INO and part in ("self", "thread-self"):
                parts.extendleft(reversed(self._self(part)))
                continue
            step = os.open(part, _NOFOLLOW, dir_fd=self.here)
            try:
                there = self._at(step)
                # fstat asks the filesystem: never ours (a mount point crossed into it)
                symlink = there[2] != "ours" and stat.S_ISLNK(os.fstat(step).st_mode)
                link = os.readlink("", dir_fd=step) if symlink else None
            except BaseException:
                os.close(step)
                raise
            if link is None:
                at = self._go(step, there)
                continue
            os.close(step)
            hops += 1
            if hops > MAX_HOPS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links")
            if kind == "proc":  # a magic link (cwd, root, fd/N): the kernel jumps
                at = self._go(os.open(part, _FOLLOW, dir_fd=self.here))
            else:
                if link.startswith("/"):
                    at = self._go(self._root()[0])
                parts.extendleft(reversed(_parts(link)))


class LinkTargets:
    """Resolves the target text of a link made in a bus directory, for its caller."""

    def __init__(self, locations: MountLocations) -> None:
        self.locations = locations
        # walks of their own: callers' hung filesystems can hold up only these threads
        self._walkers = trio.CapacityLimiter(WALKERS)

    def walk_outside(self, text: str, tid: int) -> Walked:
        """The kernel's half of the walk (blocking: run it in a thread)."""
        device = self.locations.device
        if device is None or tid <= 0:
            return UNAVAILABLE
        walk = _Walk(tid, device)
        try:
            return walk.run(text)
        except OSError as exc:
            if exc.filename is not None and str(exc.filename).startswith(f"/proc/{tid}/"):
                return UNAVAILABLE  # the caller's root or cwd is not ours to read
            return Walked(error=exc.errno or errno.EIO)
        finally:
            walk.close()

    async def walk(self, text: str, tid: int) -> Walked:
        return await trio.to_thread.run_sync(self.walk_outside, text, tid, limiter=self._walkers)

    def target(
        self, vbus: Vbus, inodes: InodeTable, parent: Path, text: str, walked: Walked, tid: int
    ) -> Path | None:
        """The tree path the link in `parent` points to (None: outside this mount).

        VbusError with the errno of a walk that failed."""
        absolute = text.startswith("/")
        if walked.landing is not None:
            try:
                found = _walk_inside(vbus, inodes, walked.landing)
            except VbusError:
                if absolute:
                    raise
                found = None
            if found is not None or absolute:
                return found
        elif absolute and walked.unavailable:
            return self.locations.resolve(text, tid)
        elif absolute and walked.error:
            raise VbusError(f"{text}: {os.strerror(walked.error)}", errno=walked.error)
        elif absolute:
            return None
        # relative, and not on this mount from the caller's cwd: from the bus directory
        return views.join(parent, text)


def _walk_inside(vbus: Vbus, inodes: InodeTable, landing: Landing) -> Path | None:
    """The rest of a walk, in the trees; None if it climbs out of the mount."""
    done = inodes.path(landing.inode)
    if done is None:
        raise VbusError("the directory the walk reached was removed", errno=errno.ENOENT)
    for part in landing.rest:
        if part == "..":
            if not done:
                return None
            done = done[:-1]
        else:
            done = views.resolve(vbus, (*done, part))
    return done
