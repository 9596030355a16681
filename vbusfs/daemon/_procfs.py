"""The process table membership is decided from, read from /proc.

Start times come from /proc/<pid>/stat (clock ticks since boot) and the
current time from CLOCK_BOOTTIME in the same ticks, so a change's stamp and
a child's start time compare exactly as the kernel counts them. Zombies
count as exited. Every read is of procfs, never of a FUSE mount, so it is
safe inside a request handler.

A read that fails for want of a file descriptor (EMFILE, ENFILE: anyone can use up the
daemon's fds, through connector connections say) raises that OSError: no verdict about
the process, so callers refuse the request that needed it (the FUSE adapter answers the
errno, the connector refuses, the sweep skips a round), never end the daemon.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable

from vbusfs.model import ProcessInfo

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_NS_PER_TICK = 1_000_000_000 // CLOCK_TICKS
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


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
        return ProcessInfo(pid, int(fields[1]), int(fields[19]), uid)

    def tgid(self, pid: int) -> int | None:
        try:
            with open(f"{self.root}/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        return None

    def pids(self) -> Iterable[int]:
        return [int(name) for name in os.listdir(self.root) if name.isascii() and name.isdigit()]

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

    def now(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _NS_PER_TICK
