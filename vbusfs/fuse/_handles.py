"""What the FUSE adapter keeps per open handle, and whom a request is asked by.

Handles: a directory listing taken at opendir (with the caller it was taken for), an
attribute file's rendering (the value its reader last read: what poll compares with),
what its release lets go of and the poll handle it waits with. Callers: which paths answer
each caller differently, and the pid view used when the daemon gives none.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyfuse3

from vbusfs.views import Caller, FileNode, Path


@dataclass(eq=False)
class DirHandle:
    path: Path
    caller: Caller | None
    # the directory's number: once detached (its object removed), the handle lists nothing
    ino: int = 0
    names: Sequence[str] = ()
    # set after the first reply, so a rewind (offset 0) takes a fresh listing
    read: bool = False
    # the model's change count when `names` were taken
    generation: int = -1


@dataclass(eq=False)
class FileHandle:
    file: FileNode
    content: bytes = b""
    # what releasing this handle lets go of (the process a proc/<pid>/vbus handle holds)
    closer: Callable[[], None] | None = None
    # the kernel's poll handle while a process polls this handle and nothing changed
    waiter: Any = None


@dataclass(eq=False)
class Handles:
    by_fh: dict[int, Any] = field(default_factory=dict)
    next_fh: int = 1

    def add(self, handle: Any) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.by_fh[fh] = handle
        return fh

    def get(self, fh: int) -> Any:
        handle = self.by_fh.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle


def render(file: FileNode) -> bytes:
    # A name from the kernel came in through fsdecode: show gives back its own bytes.
    return (file.show() + "\n").encode("utf-8", "surrogateescape")


def caller_dependent(path: Path) -> bool:
    """proc/ and sys/vbus/instances/<B>/members/ answer each caller in its pid namespace;
    a file of config/vbus/instances/<B>/perms/ stores only for root and the bus's owner."""
    return path[:1] == ("proc",) or (
        len(path) >= 5
        and path[:3] in (("sys", "vbus", "instances"), ("config", "vbus", "instances"))
        and path[4] == ("members" if path[0] == "sys" else "perms")
    )
