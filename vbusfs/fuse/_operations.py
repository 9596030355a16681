"""The pyfuse3 operations: translate requests into view and model calls.

This is the one place where inodes become paths, bytes become str and model
errors become `FUSEError`. Any other exception is a bug: it is logged with
its traceback and answered EIO, and the mount stays up. Handlers never await
between reading the model and changing it.

Caching (`_cache`): entries and attributes are cached by the kernel for an hour, but
where the answer depends on who asks or on processes (`proc/`, `members/`, `perms/`);
every attribute file is opened with direct I/O, so values are never cached. Whatever a
request removes, the kernel is told of before the request replies (`_drop` collects, the
removing handlers `settle`); what is removed behind the handlers' back (an
administrator's op, a process exiting) is found by `drop_removed` and
`drop_gone_processes`. Dropping also keeps the inode table and the kernel's caches from
growing with every object and member ever seen.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence

import pyfuse3

from vbusfs import views
from vbusfs.model import IdentityView, PidView, Vbus, VbusError
from vbusfs.views import Caller, DirNode, FileNode, Node, Path, SymlinkNode

from ._cache import Invalidations, KernelCache, caching_enabled, st_mode
from ._errno import answers_errno as _answers_errno
from ._errno import fail as _fail
from ._handles import (
    DirHandle,
    FileHandle,
    Handles,
    caller_dependent,
    render,
)
from ._inodes import InodeTable
from ._links import LinkTargets
from ._mountinfo import MountLocations
from ._poll import Pollers
from ._xattrs import RootXattrs

log = logging.getLogger("vbusfs.fuse")

# A store is at most one page, as in sysfs and configfs.
ATTRIBUTE_SIZE = 4096
# The original silently truncated longer writes; vbusfs refuses them.
MAX_STORE = 4096


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class VbusOperations(KernelCache, RootXattrs, pyfuse3.Operations):
    """Serves the trees of one `Vbus` model."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        vbus: Vbus,
        locations: MountLocations | None = None,
        *,
        root_xattrs: Mapping[bytes, bytes] | None = None,
        pid_views: Callable[[int], PidView] | None = None,
    ) -> None:
        super().__init__()
        self.vbus = vbus
        self.root_xattrs = dict(root_xattrs or {})
        # how a caller's pid namespace numbers processes, given its pid in ours (0: the
        # caller's namespace is not below ours); given by whoever composes the daemon
        self.pid_views: Callable[[int], PidView] = pid_views or self._same_namespace
        self.inodes = InodeTable()
        # tells the kernel to drop its entry `name` in directory `parent`; nothing is
        # mounted until `vbusfs.fuse.mount()` sets the session's own
        self.invalidate_entry: Callable[[int, bytes], None] = _unmounted
        # the drops a request collects, sent (and awaited) before it replies
        self.invalidations = Invalidations(lambda parent, name: self.invalidate_entry(parent, name))
        # VBUSFS_ENTRY_CACHE=0: zero timeouts for all but the fixed skeleton
        self.caching = caching_enabled()
        self.locations = locations if locations is not None else MountLocations()
        self.links = LinkTargets(self.locations)
        self._handles = Handles()
        # attribute handles by what they show, woken by the model's changes (behaviour §4)
        self.pollers = Pollers()
        vbus.changes.subscribe(self.pollers.heard)
        # counts the model's changes: a listing's names are current while it stands still
        self.generation = 0
        vbus.changes.subscribe(self._changed)
        # the entries of listed paths the kernel may cache, by inode number (`readdir`)
        self._listed: dict[int, pyfuse3.EntryAttributes] = {}
        self._uid = os.getuid()
        self._gid = os.getgid()
        self._time_ns = time.time_ns()

    # -- helpers ---------------------------------------------------------

    def _changed(self, change: object) -> None:
        self.generation += 1

    def _path(self, ino: int) -> Path:
        path = self.inodes.path(ino)
        if path is None:
            raise _fail(errno.ENOENT)
        return path

    def _same_namespace(self, pid: int) -> PidView:
        """The pid view when none is given: every caller numbers processes as we do."""
        table = self.vbus.membership.table if self.vbus.membership is not None else None
        return IdentityView(table.tgid(pid) if table is not None and pid > 0 else None)

    def _caller(self, path: Path, ctx: pyfuse3.RequestContext | None) -> Caller | None:
        """Who asks, where the answer depends on it (proc/, a bus's members/)."""
        if ctx is None or self.vbus.membership is None or not caller_dependent(path):
            return None
        # FUSE gives the asking thread's id in our pid namespace, 0 if it has none there;
        # the view resolves it to its process (its `own`)
        return Caller(ctx.uid, self.pid_views(ctx.pid))

    def _node(self, path: Path, ctx: pyfuse3.RequestContext | None = None) -> Node:
        found = views.node(self.vbus, path, self._caller(path, ctx))
        if found is None:
            raise _fail(errno.ENOENT)
        return found

    def _attributes(
        self, ino: int, found: Node, path: Path | None = None
    ) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = ino
        entry.generation = 0
        if path is None:
            path = self.inodes.path(ino)
        entry.entry_timeout = entry.attr_timeout = self._timeout(path)
        entry.st_mode = st_mode(found)
        if isinstance(found, DirNode):
            # 1 tells find(1) and friends that the subdirectory count is unknown
            entry.st_nlink = 1
            entry.st_size = 0
        elif isinstance(found, SymlinkNode):
            entry.st_nlink = 1
            entry.st_size = len(os.fsencode(found.target))
        else:
            entry.st_nlink = 1
            entry.st_size = ATTRIBUTE_SIZE
        entry.st_uid = found.uid if found.uid is not None else self._uid
        gid = found.gid if isinstance(found, FileNode) else None
        entry.st_gid = gid if gid is not None else self._gid
        entry.st_rdev = 0
        entry.st_blksize = 4096
        entry.st_blocks = 0
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = self._time_ns
        return entry

    async def _remove(
        self, remove: Callable[[Vbus, Path, str], None], parent_inode: int, text: str
    ) -> None:
        """rmdir or unlink: the kernel drops its own entry for the path named, not the
        rest, which it is told of before the request replies."""
        parent = self._path(parent_inode)
        first, *rest = views.dependents(self.vbus, (*parent, text))  # asked before removing
        victim = self.inodes.find(first)
        remove(self.vbus, parent, text)
        self._drop(first, tell_kernel=False)
        for path in rest:
            self._drop(path)
        # the request holds the parent directory and the victim: drops there cannot wait
        await self.invalidations.settle({parent_inode, victim or 0})

    def _entry(
        self, path: Path, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        """Attributes of `path` for a reply that gives the kernel a reference."""
        found = self._node(path, ctx)
        entry = self._attributes(self.inodes.remember(path), found, path)
        self.inodes.keep_mode(entry.st_ino, entry.st_mode)
        return entry

    # -- lookups and attributes -------------------------------------------

    @_answers_errno
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._path(parent_inode)
        text = _name(name)
        if text == ".":
            path = parent
        elif text == "..":
            path = parent[:-1]
        else:
            path = (*parent, text)
        return self._entry(path, ctx)

    @_answers_errno
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        mode = self.inodes.ghost_mode(inode)
        if mode is not None:  # removed, still someone's cwd or fd: stat works, as in sysfs
            entry = self._attributes(inode, DirNode())
            entry.st_mode = mode
            return entry
        return self._attributes(inode, self._node(self._path(inode), ctx))

    @_answers_errno
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        found = self._node(self._path(inode), ctx)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise _fail(errno.EPERM)
        if fields.update_size:
            # The shell's `>` truncates before writing: accepted and ignored on
            # files that can be written, as configfs does.
            if not isinstance(found, FileNode):
                raise _fail(errno.EISDIR if isinstance(found, DirNode) else errno.EPERM)
            if not found.writable:
                raise _fail(errno.EACCES)
        # Time updates (touch) are accepted and have nothing to change.
        return self._attributes(inode, found)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            for inode, count in inode_list:
                self.inodes.forget(inode, count)
                if not self.inodes.lookups(inode):
                    self._listed.pop(inode, None)
        except Exception:
            log.exception("internal error in forget")

    @_answers_errno
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        found = self._node(self._path(inode), ctx)
        if not isinstance(found, SymlinkNode):
            raise _fail(errno.EINVAL)
        return os.fsencode(found.target)

    @_answers_errno
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = len(self.inodes)
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    # -- directories ---------------------------------------------------

    @_answers_errno
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if self.inodes.ghost_mode(inode) is not None:  # removed: `ls` in it lists nothing
            return self._handles.add(DirHandle((), None, ino=inode))
        path = self._path(inode)
        if not isinstance(self._node(path, ctx), DirNode):
            raise _fail(errno.ENOTDIR)
        caller = self._caller(path, ctx)  # listings of proc/ and members/ depend on it
        names = views.children(self.vbus, path, caller)
        handle = DirHandle(path, caller, names=names, ino=inode, generation=self.generation)
        return self._handles.add(handle)

    @_answers_errno
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle: DirHandle = self._handles.get(fh)
        if self.inodes.path(handle.ino) != handle.path:
            raise _fail(errno.ENOENT)  # removed: never the listing of a later namesake
        if start_id == 0 and handle.read:
            handle.names = views.children(self.vbus, handle.path, handle.caller)
            handle.generation = self.generation
        handle.read = True
        # Offsets are positions in this handle's listing (1 and 2 are the dot
        # entries), so they stay valid however the directory changes meanwhile.
        if start_id < 1:
            ino = self.inodes.inode(handle.path)
            if not pyfuse3.readdir_reply(token, b".", self._attributes(ino, DirNode()), 1):
                return
        if start_id < 2:
            parent = handle.path[:-1]
            ino = self.inodes.inode(parent)
            if not pyfuse3.readdir_reply(token, b"..", self._attributes(ino, DirNode()), 2):
                return
        names = handle.names
        # what the kernel may cache never changes while its object lives (`_cache`): an
        # entry made for a listing serves the next, while no change came since this one
        memo = self._listed if handle.generation == self.generation else None
        for index in range(max(start_id - 2, 0), len(names)):
            name = names[index]
            path = (*handle.path, name)
            ino = self.inodes.inode(path)
            entry = memo.get(ino) if memo is not None else None
            if entry is None:
                try:
                    found = views.node(self.vbus, path, handle.caller)
                except VbusError:
                    found = None  # a process that exited since the listing was taken
                if found is None:
                    if not self.inodes.lookups(ino):
                        self.inodes.forget(ino, 0)
                    continue  # removed since the listing was taken
                entry = self._attributes(ino, found, path)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, index + 3):
                if not self.inodes.lookups(ino):
                    self.inodes.forget(ino, 0)
                return
            # memoized only once the kernel holds the inode: its forget then clears it
            if entry.attr_timeout:
                self._listed[ino] = entry
            self.inodes.remember_inode(ino)
            self.inodes.keep_mode(ino, entry.st_mode)

    @_answers_errno
    async def releasedir(self, fh: int) -> None:
        self._handles.by_fh.pop(fh, None)

    @_answers_errno
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._path(parent_inode)
        text = _name(name)
        views.mkdir(self.vbus, parent, text, uid=ctx.uid, gid=ctx.gid)
        return self._entry((*parent, text))  # making removes nothing: nothing to drop

    @_answers_errno
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove(views.rmdir, parent_inode, _name(name))

    @_answers_errno
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove(views.unlink, parent_inode, _name(name))

    @_answers_errno
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        target_text = os.fsdecode(target)
        walked = await self.links.walk(target_text, ctx.pid)  # the caller's view, not ours
        parent = self._path(parent_inode)  # the model from here on: no await
        text = _name(name)
        views.symlink(
            self.vbus,
            parent,
            text,
            lambda: self.links.target(self.vbus, self.inodes, parent, target_text, walked, ctx.pid),
        )
        return self._entry((*parent, text))

    @_answers_errno
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        raise _fail(errno.EPERM)

    @_answers_errno
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        raise _fail(errno.EPERM)

    @_answers_errno
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._path(parent_inode)  # ENOENT in a removed directory
        raise _fail(errno.EACCES)

    @_answers_errno
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._path(parent_inode)  # ENOENT in a removed directory
        raise _fail(errno.EACCES)

    # -- attribute files -----------------------------------------------

    @_answers_errno
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        found = self._node(self._path(inode), ctx)
        if isinstance(found, DirNode):
            raise _fail(errno.EISDIR)
        if not isinstance(found, FileNode):
            raise _fail(errno.ELOOP)
        if flags & os.O_ACCMODE != os.O_RDONLY and not found.writable:
            raise _fail(errno.EACCES)  # for root too, as sysfs
        closer = None
        if found.opened is not None:
            found, closer = found.opened()
        try:
            handle = FileHandle(found, render(found), closer)
        except BaseException:
            if closer is not None:
                closer()
            raise
        self.pollers.opened(handle)
        # direct_io: no page cache, so every read sees this handle's value and
        # every write(2) arrives as one store.
        return pyfuse3.FileInfo(fh=self._handles.add(handle), direct_io=True, keep_cache=False)

    @_answers_errno
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle: FileHandle = self._handles.get(fh)
        if off == 0:  # a read from the start renders afresh (behaviour §4)
            handle.content = render(handle.file)
        return handle.content[off : off + size]

    @_answers_errno
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle: FileHandle = self._handles.get(fh)
        if len(buf) > MAX_STORE:
            raise _fail(errno.EINVAL)
        if not buf:
            return 0
        store = handle.file.store
        if store is None:
            raise _fail(errno.EACCES)
        # as names from the kernel are: any bytes, so a bus named by bytes can be joined;
        # a value that is not text fails the attribute's own parse (EINVAL)
        text = buf.decode("utf-8", "surrogateescape")
        if text.endswith("\n"):
            text = text[:-1]
        store(text)
        handle.content = render(handle.file)
        return len(buf)

    @_answers_errno
    async def release(self, fh: int) -> None:
        handle = self._handles.by_fh.pop(fh, None)
        if isinstance(handle, FileHandle):
            self.pollers.released(handle)
            if handle.closer is not None:
                handle.closer()

    @_answers_errno
    async def poll(
        self,
        inode: int,
        fh: int,
        poll_handle: pyfuse3.PollHandle | None,
        ctx: pyfuse3.RequestContext,
    ) -> int:
        handle = self._handles.get(fh)
        if not isinstance(handle, FileHandle):
            raise _fail(errno.EBADF)
        return self.pollers.poll(handle, poll_handle)


def _unmounted(parent: int, name: bytes) -> None:
    """Not mounted: no kernel holds an entry to drop."""
