"""Inode numbers and lookup counts: the adapter's bookkeeping, never the model's.

Nodes are addressed by path. A path keeps its inode number while the kernel
holds a reference to it; numbers are never reused. When an object is
removed, its path is detached: the old number answers ENOENT until the kernel
forgets it, and a new object of the same name gets a fresh number.
"""

from __future__ import annotations

from vbusfs.views import Path

ROOT_INODE = 1


class InodeTable:
    def __init__(self) -> None:
        self._by_path: dict[Path, int] = {(): ROOT_INODE}
        self._by_inode: dict[int, Path | None] = {ROOT_INODE: ()}
        self._lookups: dict[int, int] = {}
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_inode)

    def inode(self, path: Path) -> int:
        """The number of `path`, allocating one if the path has none."""
        ino = self._by_path.get(path)
        if ino is None:
            ino = self._next
            self._next += 1
            self._by_path[path] = ino
            self._by_inode[ino] = path
        return ino

    def remember(self, path: Path) -> int:
        """Count one kernel reference (a lookup, mkdir, symlink or readdirplus entry)."""
        ino = self.inode(path)
        self._lookups[ino] = self._lookups.get(ino, 0) + 1
        return ino

    def remember_inode(self, ino: int) -> None:
        """`remember` for a number just taken from `inode()`."""
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def path(self, ino: int) -> Path | None:
        """The path behind `ino`, or None if it was detached or never existed."""
        return self._by_inode.get(ino)

    def detach(self, path: Path) -> None:
        """The object at `path` is gone: keep its number only for the kernel's forget."""
        ino = self._by_path.pop(path, None)
        if ino is None or ino == ROOT_INODE:
            return
        if self._lookups.get(ino):
            self._by_inode[ino] = None
        else:
            del self._by_inode[ino]

    def forget(self, ino: int, count: int) -> None:
        if ino == ROOT_INODE:
            return
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        path = self._by_inode.pop(ino, None)
        if path is not None and self._by_path.get(path) == ino:
            del self._by_path[path]

    def lookups(self, ino: int) -> int:
        return self._lookups.get(ino, 0)
