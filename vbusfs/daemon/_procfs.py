"""The process table the model asks about processes, read from /proc.

A process is its pid and its start time from /proc/<pid>/stat (clock ticks since boot),
so a recycled pid is another process; the stat flags tell kernel threads. Zombies count
as exited. Every read is of procfs, never of a FUSE mount, so it is
safe inside a request handler.

A read that fails for want of a file descriptor (EMFILE, ENFILE: anyone can use up the
daemon's fds, through connector connections say) raises that OSError: no verdict about
the process, so callers refuse the request that needed it (the FUSE adapter answers the
errno, the connector refuses, the sweep skips a round), never end the daemon.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from vbusfs.model import ProcessInfo

OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
_PF_KTHREAD = 0x00200000  # the flags field of /proc/<pid>/stat: a kernel thread


class ProcFs:
    """A `vbusfs.model.ProcessTable` over a procfs mount."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    def info(self, pid: int) -> ProcessInfo | None:
        try:
            with open(f"{self.root}/{pid}/stat", "rb") as f:
                stat = f.read()
            uid = os.stat(f"{self.root}/{pid}").st_uid
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            return None
        kernel_thread = bool(int(fields[6]) & _PF_KTHREAD)
        return ProcessInfo(pid, int(fields[1]), int(fields[19]), uid, kernel_thread)

    def tgid(self, pid: int) -> int | None:
        try:
            with open(f"{self.root}/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        return None

    def children(self, pid: int) -> Iterable[int]:
        found: list[int] = []
        try:
            tasks = os.listdir(f"{self.root}/{pid}/task")
        except FileNotFoundError:
            return found
        for task in tasks:
            try:
                with open(f"{self.root}/{pid}/task/{task}/children", "rb") as f:
                    found.extend(int(child) for child in f.read().split())
            except FileNotFoundError:
                continue
        return found

    def groups(self, pid: int) -> tuple[int, frozenset[int]] | None:
        """The effective gid and supplementary groups of `pid`, None if it is gone."""
        gid: int | None = None
        supplementary: frozenset[int] = frozenset()
        try:
            with open(f"{self.root}/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Gid:"):
                        gid = int(line.split()[2])  # real, effective, saved, filesystem
                    elif line.startswith(b"Groups:"):
                        supplementary = frozenset(int(g) for g in line.split()[1:])
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        return None if gid is None else (gid, supplementary)
