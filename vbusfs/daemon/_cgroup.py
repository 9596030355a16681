"""Membership the kernel keeps: each bus is a cgroup in a hierarchy private to the mount.

The hierarchy is a named cgroup v1 hierarchy with no controllers (`none,name=...`): a
process is in exactly one cgroup of it, which takes it out of none of its resource
cgroups (cgroup v2, systemd's and the container's, are other hierarchies), and the kernel
does the rest of behaviour §6: a child starts in its parent's cgroup, so inheritance is
exact at fork with no race; an exited process leaves; a recycled pid starts wherever its
new parent is. Joining writes the pid into the bus cgroup's `cgroup.procs` (the whole
thread group moves), leaving writes it into the root's, `members/` reads `cgroup.procs`.

The hierarchy is mounted on a temporary directory, opened, and at once detached: it is
reached only through the daemon's descriptor, in nobody's mount table. Its name follows
from the mount point, so a daemon killed with -9 leaves a hierarchy the next daemon on
the same mount point finds again and empties (members do not outlive their daemon).

A bus's cgroup is named `b` + a digest of the bus name: any valid bus name (any bytes
but `/` and NUL) fits, and no name can collide with the control files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import tempfile
import time

from vbusfs.model import InvalidValue, NoSuchProcess, ProcessInfo, ProcessTable

log = logging.getLogger("vbusfs.daemon")

_MNT_DETACH = 2
_PROCS = "cgroup.procs"


class CgroupUnavailable(Exception):
    """This daemon may not make its hierarchy (not root, no cgroup v1, a locked-down
    container): the reason, for the fallback's log line and `vbusfs status`."""


def hierarchy_name(mountpoint: str) -> str:
    """The hierarchy's name for a mount point (cgroup names are at most 64 bytes)."""
    digest = hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:24]
    return f"vbusfs-{digest}"


def release_leftovers(mountpoint: str) -> None:
    """After the daemon of `mountpoint` has gone: if it was killed and left its hierarchy
    (bus cgroups, members in them), let every member go and the hierarchy end, as the
    next daemon on that mount point would. Nothing when there is none or this process
    may not (not root)."""
    marker = f":name={hierarchy_name(mountpoint)}:".encode()
    with open("/proc/self/cgroup", "rb") as f:
        if marker not in f.read():
            return
    from ._procfs import ProcFs

    with contextlib.suppress(CgroupUnavailable, OSError):
        CgroupMembership(ProcFs(), mountpoint).close()


def _cgroup_dir(bus: str) -> str:
    return "b" + hashlib.sha256(bus.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount_detached(name: str, scratch_parent: str | None) -> int:
    """Mount hierarchy `name`, keep a descriptor to its root, detach it; the descriptor."""
    libc = _libc()
    scratch = tempfile.mkdtemp(prefix="vbusfs-cgroup-", dir=scratch_parent)
    try:
        options = f"none,name={name}".encode()
        if libc.mount(b"vbusfs", os.fsencode(scratch), b"cgroup", 0, options) != 0:
            code = ctypes.get_errno()
            raise CgroupUnavailable(
                f"cannot mount a named cgroup v1 hierarchy ({os.strerror(code)})"
            )
        try:
            fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            if libc.umount2(os.fsencode(scratch), _MNT_DETACH) != 0:
                code = ctypes.get_errno()
                raise CgroupUnavailable(f"cannot detach the hierarchy ({os.strerror(code)})")
        return fd
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(scratch)


class CgroupMembership:
    """The kernel-tracked `vbusfs.model.MembershipBackend`."""

    mode = "cgroup"

    def __init__(
        self, table: ProcessTable, mountpoint: str, *, scratch_parent: str | None = None
    ) -> None:
        self.table = table
        self.name = hierarchy_name(mountpoint)
        self._scratch_parent = scratch_parent
        self._root = _mount_detached(self.name, scratch_parent)
        self._buses: dict[str, str] = {}  # cgroup directory -> bus
        self._marker = f":name={self.name}:".encode()
        self._empty_leftovers()

    # -- the port ------------------------------------------------------

    def bus_of(self, info: ProcessInfo) -> str | None:
        path = self._cgroup_path(info.pid)
        if path is None:
            return None
        return self._buses.get(path.lstrip("/"))

    def change(self, info: ProcessInfo, bus: str | None) -> None:
        target = _PROCS if bus is None else f"{_cgroup_dir(bus)}/{_PROCS}"
        try:
            self._write(target, str(info.pid))
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise NoSuchProcess(f"no process {info.pid}") from None
            if exc.errno == errno.EINVAL:  # the kernel refuses kernel threads, say
                raise InvalidValue(f"process {info.pid} cannot be moved: {exc}") from None
            raise

    def members(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for directory, bus in self._buses.items():
            for pid in self._procs(directory):
                found[pid] = bus
        return found

    def members_of(self, bus: str) -> list[int]:
        return sorted(self._procs(_cgroup_dir(bus)))

    def bus_made(self, bus: str) -> None:
        directory = _cgroup_dir(bus)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, dir_fd=self._root)
        self._buses[directory] = bus

    def bus_gone(self, bus: str) -> None:
        directory = _cgroup_dir(bus)
        self._buses.pop(directory, None)
        self._remove(directory)

    def sweep(self) -> None:
        pass  # the kernel keeps it all

    # -- life ----------------------------------------------------------

    def close(self) -> None:
        """Let every member go and remove every bus cgroup: the hierarchy then ends."""
        if self._root < 0:
            return
        for directory in list(self._buses):
            self._remove(directory)
        self._buses.clear()
        os.close(self._root)
        self._root = -1
        self._let_the_hierarchy_go()

    def _let_the_hierarchy_go(self) -> None:
        """Make sure the kernel ends the hierarchy, which it does only if, when the last
        reference to it goes, its root has no child cgroup. A removed cgroup stays its
        parent's child until the kernel has released it (asynchronously, soon after the
        rmdir): closing right after removing the buses can leave the hierarchy behind,
        empty, until reboot, a line more in every process's /proc/PID/cgroup. So while it
        is still there, mount it again and let go again: each time the kernel checks anew."""
        for delay in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
            time.sleep(delay)
            if not self._hierarchy_exists():
                return
            with contextlib.suppress(CgroupUnavailable, OSError):
                os.close(_mount_detached(self.name, self._scratch_parent))
        if self._hierarchy_exists():
            log.warning("the kernel keeps cgroup hierarchy %s after its daemon", self.name)

    def _hierarchy_exists(self) -> bool:
        with open("/proc/self/cgroup", "rb") as f:
            return self._marker in f.read()

    # -- helpers -------------------------------------------------------

    def _cgroup_path(self, pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/cgroup", "rb") as f:
                for line in f:
                    if self._marker in line:
                        return os.fsdecode(line.rstrip(b"\n").split(b":", 2)[2])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def _procs(self, directory: str) -> list[int]:
        # a zombie has exited: it is no member (behaviour §6)
        return [pid for pid in self._raw_procs(directory) if self.table.info(pid) is not None]

    def _write(self, target: str, text: str) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC, dir_fd=self._root)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def _remove(self, directory: str) -> None:
        """Move whoever is left in `directory` to the root, then remove it."""
        for _attempt in range(100):
            try:
                os.rmdir(directory, dir_fd=self._root)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
            for pid in self._raw_procs(directory):
                with contextlib.suppress(ProcessLookupError, OSError):
                    self._write(_PROCS, str(pid))

    def _raw_procs(self, directory: str) -> list[int]:
        try:
            fd = os.open(f"{directory}/{_PROCS}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._root)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as f:
            return [int(word) for word in f.read().split()]

    def _empty_leftovers(self) -> None:
        """A daemon killed on this mount point left bus cgroups: empty and remove them."""
        with os.scandir(f"/proc/self/fd/{self._root}") as entries:
            leftovers = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
        for directory in leftovers:
            self._remove(directory)
