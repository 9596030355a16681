"""What the kernel may cache, and telling it, before a change's request replies, what went.

The rule (behaviour §3): an entry and its attributes (mode, size, owner) are cached by
the kernel for `LONG_TIMEOUT` seconds, because in vbusfs they change only when the object
goes: a path that exists keeps its inode number and its attributes until its object is
removed (a new object of the same name gets new numbers). So caching stays exact if every
removal drops the kernel's entries of what went, wherever the removal came from:

- rmdir or unlink: the kernel drops the entry it was asked about itself; the adapter drops
  the other paths that went with it (`views.dependents`: a device's sys directory, a
  link's interface directory and its `interfaces/` entry) and *awaits* those drops before
  the request replies, so the next system call of any process sees the change;
- an administrator's op over the connector: the daemon calls the adapter's
  `drop_removed`, which checks the paths the kernel holds that the op can have changed
  (after modprobe, reload or rmmod, those of the deviceclasses it named: a class with
  devices is never replaced or unloaded, so nothing else shows it; after a reset, every
  one) and awaits the drops before the op replies (awaits: the loop goes on answering
  the kernel meanwhile);
- processes that exit or leave a bus: the daemon's membership sweep.

Paths whose answer depends on who asks or on processes (`proc/`, a bus's `members/` and
`perms/`) keep zero timeouts: the kernel asks again at every use. Attribute *values* are
never cached (direct I/O, behaviour §4), so counters, `ifname` and the like are read afresh.

Drops are sent from a thread of their own (`Invalidations`): the kernel takes the parent
directory's lock to drop an entry, and a request being answered may hold it. The
adapter awaits only drops outside the directories its request holds (a mutation holds
its parent directory and, for rmdir/unlink, the victim); those are sent too, without
waiting. A drop the kernel does not answer within `SETTLE_TIMEOUT` is logged and the
request replies anyway: a stuck kernel must not hang the daemon.

`VBUSFS_ENTRY_CACHE=0` in the daemon's environment turns caching off: zero timeouts for
everything but the fixed skeleton, as before caching existed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
from collections.abc import Callable, Collection, Mapping

import trio

from vbusfs import views
from vbusfs.model import Vbus, VbusError
from vbusfs.views import DirNode, Node, Path, SymlinkNode

from ._handles import caller_dependent
from ._inodes import InodeTable
from ._poll import Pollers

log = logging.getLogger("vbusfs.fuse")

ENTRY_CACHE_ENV = "VBUSFS_ENTRY_CACHE"
# seconds the kernel may keep an entry and its attributes (and the fixed skeleton's)
LONG_TIMEOUT = 3600.0
# seconds a request waits for the kernel to take its drops before replying anyway
SETTLE_TIMEOUT = 2.0

SYS_INSTANCES: Path = (*views.SYS_VBUS, "instances")
SYS_CLASSES: Path = (*views.SYS_VBUS, "deviceclass")
PROC_SELF: Path = ("proc", "self")

# (parent directory's inode, entry name)
Drop = tuple[int, bytes]
Tell = Callable[[int, bytes], None]


def caching_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the kernel may cache entries and attributes (`VBUSFS_ENTRY_CACHE`, default 1)."""
    value = (os.environ if environ is None else environ).get(ENTRY_CACHE_ENV, "1")
    return value.strip() != "0"


class Invalidations:
    """Kernel entries to drop, collected while a request changes the model, sent after.

    Unmounted (`threaded` False: the unit tests, the in-process model) `tell` is called
    inline. Mounted, one thread sends every drop, in order, and a request awaits its own.
    """

    def __init__(self, tell: Tell) -> None:
        self._tell = tell
        self.threaded = False
        self.pending: list[Drop] = []
        self._queue: queue.SimpleQueue[tuple[list[Drop], Callable[[], None] | None] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, parent: int, name: bytes) -> None:
        self.pending.append((parent, name))

    def send(self) -> None:
        """Send what is pending (a change no FUSE request waits for), without waiting."""
        batch, self.pending = self.pending, []
        if batch:
            self._submit(batch, None)

    async def settle(self, locked: Collection[int] = ()) -> None:
        """Send what is pending; wait until the kernel took every drop outside `locked`
        (the directories the calling request holds)."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        if not self.threaded:
            self._submit(batch, None)
            return
        waited = [drop for drop in batch if drop[0] not in locked]
        later = [drop for drop in batch if drop[0] in locked]
        if waited:
            done = trio.Event()
            token = trio.lowlevel.current_trio_token()
            self._submit(waited, lambda: _set_soon(token, done))
            with trio.move_on_after(SETTLE_TIMEOUT) as scope:
                await done.wait()
            if scope.cancelled_caught:
                log.warning("kernel took no entry drop in %.0f s: replying anyway", SETTLE_TIMEOUT)
        if later:  # taken once this request has replied and let go of its directories
            self._submit(later, None)

    def close(self) -> None:
        """The session is going: nothing is sent after this (a closed session's drops
        would fail, or worse); waits briefly for a drop in progress."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=1.0)

    def _submit(self, batch: list[Drop], done: Callable[[], None] | None) -> None:
        if self._closed:
            return
        if not self.threaded:
            self._send(batch)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vbusfs-invalidate", daemon=True)
            self._thread.start()
        self._queue.put((batch, done))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            batch, done = item
            self._send(batch)
            if done is not None:
                done()

    def _send(self, batch: list[Drop]) -> None:
        for parent, name in batch:
            if self._closed:
                return
            try:
                self._tell(parent, name)
            except FileNotFoundError:
                pass  # the kernel held no such entry: nothing to drop
            except Exception:
                log.exception("dropping the kernel's entry %r in directory %d", name, parent)


def _set_soon(token: trio.lowlevel.TrioToken, done: trio.Event) -> None:
    with contextlib.suppress(trio.RunFinishedError):  # the loop ended: nobody waits
        token.run_sync_soon(done.set)


def st_mode(found: Node) -> int:
    """The file type and permission bits of a node, as stat shows them."""
    if isinstance(found, DirNode):
        return stat.S_IFDIR | found.mode
    if isinstance(found, SymlinkNode):
        return stat.S_IFLNK | found.mode
    return stat.S_IFREG | found.mode


class KernelCache:
    """The caching half of `VbusOperations`: timeouts, and dropping what went."""

    vbus: Vbus
    inodes: InodeTable
    invalidations: Invalidations
    caching: bool
    pollers: Pollers

    def _timeout(self, path: Path | None) -> float:
        """How long the kernel may keep `path`'s entry and attributes (`_cache`)."""
        if path is None:
            return 0  # detached: never again
        if len(path) <= 3 and path in views.FIXED_PATHS:
            return LONG_TIMEOUT
        if not self.caching or caller_dependent(path):
            return 0
        return LONG_TIMEOUT

    def _drop(self, path: Path, *, tell_kernel: bool = True) -> None:
        """The object at `path` is gone, with everything under it; the kernel is told
        when the request settles (or `invalidations.send()`)."""
        parent = self.inodes.find(path[:-1])
        held = self.inodes.detach(path)
        if tell_kernel and held is not None and parent is not None:
            self.invalidations.add(parent, os.fsencode(path[-1]))

    async def drop_removed(self, classes: Collection[str] | None = None) -> None:
        """Drop the entries held of whatever was removed or changed behind our back (an
        administrator's op over the connector). With `classes` (modprobe, reload, rmmod:
        the deviceclasses the op loaded, replaced or unloaded) only their entries are
        checked: the model replaces or unloads no class that has devices, so nothing else
        shows one. With None (a reset: anything) every path the kernel holds is checked,
        outside `proc/` (the membership sweep's). One whose file type or mode changed (a
        reloaded class's attribute) is dropped too, so the kernel looks it up anew."""
        if classes is None:
            held = self.inodes.held()
        else:
            held = [h for c in classes for h in self.inodes.held_under((*SYS_CLASSES, c))]
        for path, ino in sorted(held, key=lambda entry: len(entry[0])):
            if path[:1] == ("proc",) or self.inodes.find(path) != ino:
                continue  # the sweep's, or dropped with its directory already
            try:
                found = views.node(self.vbus, path)
            except VbusError:
                found = None
            kept = self.inodes.kept_mode(ino)
            if found is None or (kept is not None and kept != st_mode(found)):
                self._drop(path)
        # awaited, never blocked on: the kernel may first want this loop to answer a
        # lookup in a directory the drop is in
        await self.invalidations.settle()

    def drop_gone_processes(self) -> None:
        """Drop the entries of processes that exited and of members that left their bus.

        Nothing asks the adapter when that happens, so the daemon calls this from its
        periodic membership sweep; it looks only at the process entries it holds.
        """
        candidates: list[Path] = [("proc", name) for name in self.inodes.children(("proc",))]
        for bus in self.inodes.children(SYS_INSTANCES):
            members = (*SYS_INSTANCES, bus, "members")
            candidates += [(*members, name) for name in self.inodes.children(members)]
        for path in candidates:
            if path == PROC_SELF:
                continue  # not a process: what it names depends on who asks
            try:
                gone = views.node(self.vbus, path) is None
            except VbusError:
                gone = True  # NoSuchProcess
            if gone:
                self._drop(path)
        self.invalidations.send()
        self.pollers.recheck()  # membership files whose process exited or forked
