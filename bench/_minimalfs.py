"""The floor for any pyfuse3 filesystem: a tree of small files kept in one dict.

`bench/control.py` runs this as a subprocess and compares vbusfs against it,
so the ratio between the two measures vbusfs's own overhead, not pyfuse3's or
the kernel's. It keeps every node in a dict keyed by inode number and does the
least a correct filesystem can do. It uses the cache settings vbusfs uses:
direct I/O on every open file, the `default_permissions` mount option (plus
`allow_other` as root, as vbusfs), a fixed skeleton of directories (`--fixed`, made
at start and never removable) which the kernel may cache for `--fixed-timeout`
seconds, and `--timeout` seconds (default 0) for every other entry and attribute.

Usage: python bench/_minimalfs.py MOUNTPOINT [--ready-fd FD]
                                  [--fixed a/b ...] [--fixed-timeout SECONDS]
                                  [--timeout SECONDS]
Without a mount point (as `make bench` runs every script in bench/) it only
says what it is.

It writes "ok\\n" to FD once mounted (or "error: ..." and exits), serves until
unmounted (`fusermount3 -u MOUNTPOINT`) or sent SIGTERM/SIGINT/SIGHUP, and
always unmounts on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyfuse3
import trio

DIR_MODE = stat.S_IFDIR | 0o755
FILE_MODE = stat.S_IFREG | 0o644
LINK_MODE = stat.S_IFLNK | 0o777


@dataclass(eq=False, slots=True)
class _Node:
    mode: int
    parent: int
    # directories: name -> inode, in insertion order
    children: dict[bytes, int] = field(default_factory=dict)
    data: bytes = b""
    target: bytes = b""
    lookups: int = 0
    linked: bool = True
    # part of the fixed skeleton: cached by the kernel, never removed
    fixed: bool = False


class MinimalOperations(pyfuse3.Operations):
    """Directories, small files and symlinks in a dict; nothing else."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self, fixed: Sequence[str] = (), fixed_timeout: float = 0.0, timeout: float = 0.0
    ) -> None:
        super().__init__()
        root = _Node(DIR_MODE, pyfuse3.ROOT_INODE, lookups=1, fixed=bool(fixed))
        self.nodes: dict[int, _Node] = {pyfuse3.ROOT_INODE: root}
        self.next_inode = pyfuse3.ROOT_INODE + 1
        self.dir_handles: dict[int, list[tuple[bytes, int]]] = {}
        self.next_fh = 1
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.time_ns = time.time_ns()
        self.fixed_timeout = fixed_timeout
        self.timeout = timeout
        for path in fixed:
            self._make_fixed(path)

    def _make_fixed(self, path: str) -> None:
        inode = pyfuse3.ROOT_INODE
        for part in os.fsencode(path).split(b"/"):
            if not part:
                continue
            parent = self.nodes[inode]
            found = parent.children.get(part)
            if found is None:
                found = self.next_inode
                self.next_inode += 1
                self.nodes[found] = _Node(DIR_MODE, inode, fixed=True)
                parent.children[part] = found
            inode = found

    # -- helpers -----------------------------------------------------------

    def _get(self, inode: int) -> _Node:
        node = self.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _attributes(self, inode: int, node: _Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.generation = 0
        entry.entry_timeout = entry.attr_timeout = (
            self.fixed_timeout if node.fixed else self.timeout
        )
        entry.st_mode = node.mode
        entry.st_nlink = 1
        if stat.S_ISLNK(node.mode):
            entry.st_size = len(node.target)
        else:
            entry.st_size = len(node.data)
        entry.st_uid = self.uid
        entry.st_gid = self.gid
        entry.st_rdev = 0
        entry.st_blksize = 4096
        entry.st_blocks = 0
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = self.time_ns
        return entry

    def _new(self, parent_inode: int, name: bytes, node: _Node) -> pyfuse3.EntryAttributes:
        parent = self._get(parent_inode)
        if not stat.S_ISDIR(parent.mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name in parent.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        inode = self.next_inode
        self.next_inode += 1
        node.lookups = 1
        self.nodes[inode] = node
        parent.children[name] = inode
        return self._attributes(inode, node)

    def _remove(self, parent_inode: int, name: bytes, want_dir: bool) -> None:
        parent = self._get(parent_inode)
        inode = parent.children.get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[inode]
        if node.fixed:
            raise pyfuse3.FUSEError(errno.EPERM)
        is_dir = stat.S_ISDIR(node.mode)
        if want_dir and not is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if not want_dir and is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if is_dir and node.children:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        del parent.children[name]
        node.linked = False
        if not node.lookups:
            del self.nodes[inode]

    # -- lookups and attributes ----------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._get(parent_inode)
        if name == b".":
            inode = parent_inode
        elif name == b"..":
            inode = parent.parent
        else:
            found = parent.children.get(name)
            if found is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            inode = found
        node = self.nodes[inode]
        node.lookups += 1
        return self._attributes(inode, node)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(inode, self._get(inode))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._get(inode)
        if fields.update_size:
            if stat.S_ISDIR(node.mode):
                raise pyfuse3.FUSEError(errno.EISDIR)
            node.data = node.data[: attr.st_size].ljust(attr.st_size, b"\0")
        return self._attributes(inode, node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            node = self.nodes.get(inode)
            if node is None or inode == pyfuse3.ROOT_INODE:
                continue
            node.lookups -= count
            if node.lookups <= 0 and not node.linked:
                del self.nodes[inode]

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._get(inode)
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.target

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_files = len(self.nodes)
        data.f_namemax = 255
        return data

    # -- directories ---------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._get(inode)
        if not stat.S_ISDIR(node.mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self.next_fh
        self.next_fh += 1
        # A snapshot, so a cookie (position + 3) names the same entry however
        # the directory changes while it is being listed.
        listing = [(b".", inode), (b"..", node.parent), *node.children.items()]
        self.dir_handles[fh] = listing
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.dir_handles[fh]
        for index in range(start_id, len(listing)):
            name, inode = listing[index]
            node = self.nodes.get(inode)
            if node is None:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attributes(inode, node), index + 1):
                return
            if index >= 2:
                node.lookups += 1

    async def releasedir(self, fh: int) -> None:
        self.dir_handles.pop(fh, None)

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._new(parent_inode, name, _Node(DIR_MODE, parent_inode))

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._remove(parent_inode, name, want_dir=True)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._remove(parent_inode, name, want_dir=False)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._new(parent_inode, name, _Node(LINK_MODE, parent_inode, target=target))

    # -- files ---------------------------------------------------------------

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        entry = self._new(parent_inode, name, _Node(FILE_MODE, parent_inode))
        return pyfuse3.FileInfo(fh=entry.st_ino, direct_io=True, keep_cache=False), entry

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._get(inode)
        if stat.S_ISDIR(node.mode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self._get(fh).data[off : off + size]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self._get(fh)
        node.data = node.data[:off].ljust(off, b"\0") + buf + node.data[off + len(buf) :]
        return len(buf)

    async def release(self, fh: int) -> None:
        pass


def mount_options() -> set[str]:
    """The options vbusfs mounts with, under another name."""
    options = set(pyfuse3.default_options) | {"fsname=minimalfs", "subtype=minimalfs"}
    if os.getuid() == 0:
        options.add("allow_other")
    return options


async def _serve() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


def _report(fd: int | None, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (message + "\n").encode())
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A minimal dict-backed pyfuse3 filesystem.")
    parser.add_argument("mountpoint", nargs="?")
    parser.add_argument("--ready-fd", type=int, metavar="FD")
    parser.add_argument("--fixed", action="append", default=[], metavar="DIR")
    parser.add_argument("--fixed-timeout", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    if args.mountpoint is None:
        # `make bench` runs every script in bench/; this one is a helper of control.py.
        print("bench/_minimalfs.py: the floor filesystem of bench/control.py; nothing to run alone")
        return 0
    operations = MinimalOperations(args.fixed, args.fixed_timeout, args.timeout)
    try:
        pyfuse3.init(operations, args.mountpoint, mount_options())
    except (RuntimeError, OSError) as exc:
        _report(args.ready_fd, f"error: mounting failed: {exc}")
        return 1
    try:
        _report(args.ready_fd, "ok")
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
