"""Inode numbers and lookup counts: the adapter's bookkeeping, never the model's.

Nodes are addressed by path. A path keeps its inode number while the kernel
holds a reference to it; numbers are never reused. When an object is
removed, its path and every path under it are detached: the old numbers answer
ENOENT until the kernel forgets them (but for `stat`: the kernel's sysfs and configfs
still stat a removed directory that is someone's cwd, so the table keeps the file type
and mode of every number the kernel holds), and a new object of the same name gets
fresh numbers. The table also knows which paths it holds under each directory,
so a removed subtree is found without looking at the rest.
"""

from __future__ import annotations

from collections.abc import Iterator

from vbusfs.views import Path

ROOT_INODE = 1


class InodeTable:
    def __init__(self) -> None:
        self._by_path: dict[Path, int] = {(): ROOT_INODE}
        self._by_inode: dict[int, Path | None] = {ROOT_INODE: ()}
        self._lookups: dict[int, int] = {}
        # st_mode of each number the kernel holds, for stat of a detached one
        self._modes: dict[int, int] = {}
        # directory -> names of the paths under it that have a number
        self._children: dict[Path, set[str]] = {}
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
            self._children.setdefault(path[:-1], set()).add(path[-1])
        return ino

    def find(self, path: Path) -> int | None:
        """The number of `path` if it has one (allocates nothing)."""
        return self._by_path.get(path)

    def children(self, path: Path) -> list[str]:
        """The names under directory `path` that have a number."""
        return list(self._children.get(path, ()))

    def remember(self, path: Path) -> int:
        """Count one kernel reference (a lookup, mkdir, symlink or readdirplus entry)."""
        ino = self.inode(path)
        self._lookups[ino] = self._lookups.get(ino, 0) + 1
        return ino

    def remember_inode(self, ino: int) -> None:
        """`remember` for a number just taken from `inode()`."""
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def keep_mode(self, ino: int, mode: int) -> None:
        """Remember `ino`'s st_mode while the kernel holds it (after `remember`)."""
        if ino in self._lookups:
            self._modes[ino] = mode

    def kept_mode(self, ino: int) -> int | None:
        """The st_mode last given the kernel for a number it holds, else None."""
        return self._modes.get(ino)

    def held(self) -> list[tuple[Path, int]]:
        """Every attached path the kernel holds a reference to, with its number."""
        return [(p, i) for p, i in self._by_path.items() if self._lookups.get(i)]

    def held_under(self, top: Path) -> list[tuple[Path, int]]:
        """`held()` limited to `top` and the paths under it (the rest is not looked at)."""
        return [(p, i) for p, i in self._subtree(top) if i is not None and self._lookups.get(i)]

    def _subtree(self, top: Path) -> Iterator[tuple[Path, int | None]]:
        """`top` and every path under it, each with its number (None for a directory kept
        only for its children). The caller may unpath what it is given."""
        stack = [top]
        while stack:
            here = stack.pop()
            stack.extend((*here, name) for name in self._children.get(here, ()))
            yield here, self._by_path.get(here)

    def ghost_mode(self, ino: int) -> int | None:
        """The st_mode of a detached number the kernel still holds, else None."""
        if ino in self._by_inode and self._by_inode[ino] is None:
            return self._modes.get(ino)
        return None

    def path(self, ino: int) -> Path | None:
        """The path behind `ino`, or None if it was detached or never existed."""
        return self._by_inode.get(ino)

    def detach(self, path: Path) -> int | None:
        """The object at `path` is gone, and everything under it: keep their numbers only
        for the kernel's forget. Returns the number `path` had if the kernel holds it
        (then the kernel may hold entries under it too), else None."""
        if path == ():
            return None
        top = self._by_path.get(path)
        held = top if top is not None and self._lookups.get(top) else None
        for here, ino in self._subtree(path):
            if ino is None:
                continue  # a directory without a number of its own, kept for its children
            self._unpath(here)
            if self._lookups.get(ino):
                self._by_inode[ino] = None
            else:
                del self._by_inode[ino]
        return held

    def forget(self, ino: int, count: int) -> None:
        if ino == ROOT_INODE:
            return
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        self._modes.pop(ino, None)
        path = self._by_inode.pop(ino, None)
        if path is not None and self._by_path.get(path) == ino:
            self._unpath(path)

    def lookups(self, ino: int) -> int:
        return self._lookups.get(ino, 0)

    def _unpath(self, path: Path) -> None:
        del self._by_path[path]
        parent = path[:-1]
        names = self._children.get(parent)
        if names is not None:
            names.discard(path[-1])
            if not names:
                del self._children[parent]
