"""Pid namespaces: each caller's pids, translated by the kernel (behaviour §6).

`PidNamespaces.view_of(pid)` gives the `vbusfs.model.PidView` of the caller whose pid
in the daemon's namespace is `pid` (FUSE's request pid, SO_PEERCRED's pid):

- pid 0 (how FUSE and SO_PEERCRED name a caller whose namespace is not the daemon's or a
  descendant of it), or a caller already gone: `BLIND`, which sees nothing.
- a caller in the daemon's own pid namespace (its `/proc/PID/ns/pid` is the daemon's
  inode): `IdentityView`, no ioctl.
- any other caller: a view over the nsfs pid-translation ioctls on the caller's pid
  namespace fd (Linux 6.11 and later). The argument is the pid itself and the answer is
  the ioctl's return value; ESRCH means "no such process there" (None). Every direction
  uses the TGID variants, because the model's unit is the process (SPEC 6: a thread id
  names its whole process): `inward` is NS_GET_TGID_FROM_PIDNS (the caller's number to
  the daemon's thread-group id), `outward` and `own` are NS_GET_TGID_IN_PIDNS (the
  daemon's number to the caller's thread-group id). The PID variants are never used.

Namespace fds are cached in a small LRU keyed by the nsfs (st_dev, st_ino), `capacity`
(32) at most, each closed when evicted or at `close()`. A view holds no fd: it names its
namespace by key and reaches it through the cache, re-opening it from the caller's
`/proc/PID/ns/pid` (and checking the inode) if it was evicted meanwhile; a view whose
caller has gone since then translates nothing. So the daemon never holds more than
`capacity` namespace fds, however many views are alive. ioctls on a cached fd are made
under a lock, so an eviction in another thread can never close (and the kernel reuse)
an fd between lookup and use.

A kernel without the ioctls (ENOTTY or EINVAL from a probe on the daemon's own namespace
at start, or from any later call) is not guessed around: a caller outside the daemon's
pid namespace is refused with `NotSupported` (EOPNOTSUPP), while callers in the daemon's
namespace are served as ever. The alternative, reading `NSpid:` in /proc/PID/status,
can say how a known daemon pid looks from a namespace, but finding the process a
caller calls N would mean reading every process's status (a sweep of the whole process
table, the cost issue 12 removes) and telling sibling namespaces of equal depth apart
needs an ioctl anyway.

A daemon without the right to follow a caller's `/proc/PID/ns/pid` (not root, another
user's caller) still serves callers of its own namespace, recognised by the depth of
their `NSpid:` line, and refuses the others with `AccessDenied` (EACCES).

Any OSError for want of fds (EMFILE, ENFILE) propagates as it is: no verdict about the
caller, so the request that needed it is refused. Never reads a FUSE mount.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

from vbusfs.model import (
    BLIND,
    AccessDenied,
    IdentityView,
    NotSupported,
    PidView,
    plausible_pid,
)

from ._procfs import ProcFs

_NSIO = 0xB7


def _ior_int(number: int) -> int:
    """The ioctl request _IOR(NSIO, number, int): read direction, a 4-byte argument."""
    return (2 << 30) | (4 << 16) | (_NSIO << 8) | number


NS_GET_PID_FROM_PIDNS = _ior_int(6)
NS_GET_TGID_FROM_PIDNS = _ior_int(7)
NS_GET_PID_IN_PIDNS = _ior_int(8)
NS_GET_TGID_IN_PIDNS = _ior_int(9)

DEFAULT_CAPACITY = 32

NsKey = tuple[int, int]  # (st_dev, st_ino) of a namespace's nsfs inode
Ioctl = Callable[[int, int, int], int]


def _key(st: os.stat_result) -> NsKey:
    return (st.st_dev, st.st_ino)


class PidNamespaces:
    """Makes each caller's `PidView`; owns a bounded cache of pid-namespace fds."""

    def __init__(
        self, root: str = "/proc", capacity: int = DEFAULT_CAPACITY, ioctl: Ioctl = fcntl.ioctl
    ) -> None:
        if capacity < 1:
            raise ValueError("the namespace cache needs room for one fd at least")
        self.root = root
        self.capacity = capacity
        self._ioctl = ioctl
        self._procfs = ProcFs(root)
        self._fds: OrderedDict[NsKey, int] = OrderedDict()
        self._lock = threading.Lock()
        self._own = _key(os.stat(f"{root}/self/ns/pid"))
        self.translates = self._probe()

    def _probe(self) -> bool:
        """Whether this kernel has the pid-translation ioctls (tried on our own namespace)."""
        fd = os.open(f"{self.root}/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._ioctl(fd, NS_GET_TGID_IN_PIDNS, os.getpid())
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL):
                return False
            raise
        finally:
            os.close(fd)
        return True

    def view_of(self, pid: int) -> PidView:
        """The view of the caller whose pid (or thread id) in our namespace is `pid`.

        Raises `NotSupported` (EOPNOTSUPP) for a caller outside our namespace when the
        kernel cannot translate, and OSError when out of fds.
        """
        if not plausible_pid(pid):
            return BLIND  # pid 0: a caller whose namespace we cannot see into
        try:
            key = _key(os.stat(f"{self.root}/{pid}/ns/pid"))
        except (FileNotFoundError, ProcessLookupError):
            return BLIND  # the caller is gone
        except PermissionError:
            return self._view_unseen(pid)
        if key == self._own:
            return IdentityView(self._procfs.tgid(pid))
        if not self.translates:
            raise NotSupported("this kernel cannot translate pids between pid namespaces")
        with self._lock:
            fd = self._fd_locked(key, pid)
            if fd is None:
                return BLIND
            own = self._translate_locked(fd, NS_GET_TGID_IN_PIDNS, pid)
        return _NamespaceView(self, key, pid, own)

    def _view_unseen(self, pid: int) -> PidView:
        """A caller whose namespace link we may not follow (a daemon without root).

        `NSpid:` is readable by all: a caller we see with as many levels as we have is in
        our own namespace (a visible process is in ours or below it). Below ours we
        cannot translate without its namespace: EACCES.
        """
        theirs, ours = self._procfs.nspid(pid), self._procfs.nspid(os.getpid())
        if theirs is None:
            return BLIND
        if ours is not None and len(theirs) == len(ours):
            return IdentityView(self._procfs.tgid(pid))
        raise AccessDenied("the caller's pid namespace is not ours to read")

    def translate(self, key: NsKey, caller: int, request: int, pid: int) -> int | None:
        """One ioctl on namespace `key` (re-opened from `caller` if it was evicted)."""
        if not plausible_pid(pid):
            return None
        with self._lock:
            fd = self._fd_locked(key, caller)
            return None if fd is None else self._translate_locked(fd, request, pid)

    def _fd_locked(self, key: NsKey, caller: int) -> int | None:
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            return fd
        try:
            fd = os.open(f"{self.root}/{caller}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError as e:  # the caller changed credentials since we looked
            raise AccessDenied("the caller's pid namespace is not ours to read") from e
        try:
            opened = _key(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        if opened != key:  # the pid now names another process, in another namespace
            os.close(fd)
            return None
        self._fds[key] = fd
        while len(self._fds) > self.capacity:
            _, evicted = self._fds.popitem(last=False)
            os.close(evicted)
        return fd

    def _translate_locked(self, fd: int, request: int, pid: int) -> int | None:
        try:
            return self._ioctl(fd, request, pid)
        except OSError as e:
            if e.errno == errno.ESRCH:
                return None
            if e.errno in (errno.ENOTTY, errno.EINVAL):
                self.translates = False
                raise NotSupported(
                    "this kernel cannot translate pids between pid namespaces"
                ) from e
            raise

    def __len__(self) -> int:
        """How many namespace fds are held now (at most `capacity`)."""
        return len(self._fds)

    def close(self) -> None:
        with self._lock:
            while self._fds:
                _, fd = self._fds.popitem()
                os.close(fd)

    def __enter__(self) -> PidNamespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NamespaceView:
    """A caller in a pid namespace below ours: every translation is one ioctl."""

    __slots__ = ("_caller", "_key", "_own", "_spaces")

    def __init__(self, spaces: PidNamespaces, key: NsKey, caller: int, own: int | None) -> None:
        self._spaces = spaces
        self._key = key
        self._caller = caller
        self._own = own

    @property
    def own(self) -> int | None:
        return self._own

    def inward(self, pid: int) -> int | None:
        return self._spaces.translate(self._key, self._caller, NS_GET_TGID_FROM_PIDNS, pid)

    def outward(self, pid: int) -> int | None:
        return self._spaces.translate(self._key, self._caller, NS_GET_TGID_IN_PIDNS, pid)

    def __repr__(self) -> str:
        return f"<pid namespace {self._key[1]} of caller {self._caller}: own {self._own}>"
