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
import select
from collections.abc import Iterable
from dataclasses import dataclass

from vbusfs.model import ProcessInfo

OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
_PF_KTHREAD = 0x00200000  # the flags field of /proc/<pid>/stat: a kernel thread
_GONE = (FileNotFoundError, ProcessLookupError, NotADirectoryError)


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

    def is_kernel_thread(self, pid: int) -> bool:
        """Whether `pid` is a kernel thread (PF_KTHREAD in stat's flags); False if gone."""
        info = self.info(pid)
        return info is not None and info.kernel_thread

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
        except _GONE:
            return None
        return None if gid is None else (gid, supplementary)

    def pin(self, info: ProcessInfo) -> ProcessHandle | None:
        """`vbusfs.model.ProcessTable.pin`: a pidfd on process `info`, None if that process
        (that pid with that start time) has exited."""
        handle = self.open_process(info.pid, pidfd=True)
        if handle is not None and handle.start != info.start:
            handle.close()
            return None
        return handle

    def open_process(self, pid: int, *, pidfd: bool = False) -> ProcessHandle | None:
        """A handle on the process `pid` is now, None if there is none (or a zombie).

        With `pidfd`, the handle also holds a pidfd (one fd, until `close()`), which
        makes `alive()` exact; without, it compares the start time, which a recycled
        pid would have to match to the clock tick.
        """
        fd = None
        if pidfd:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None
        # The pidfd first: if its process is still alive after the stat read, that
        # read was of the pidfd's process, not of a later one with the same pid.
        info = self.info(pid)
        handle = ProcessHandle(self, pid, -1 if info is None else info.start, fd)
        if info is None or not handle.alive():
            handle.close()
            return None
        return handle

    def tgid(self, pid: int) -> int | None:
        try:
            with open(f"{self.root}/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        return None

    def nspid(self, pid: int) -> tuple[int, ...] | None:
        """`pid`'s number in our pid namespace and each one below it down to its own."""
        try:
            with open(f"{self.root}/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"NSpid:"):
                        return tuple(int(n) for n in line.split()[1:])
        except _GONE:
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


@dataclass
class ProcessHandle:
    """One process, not one pid number: `alive()` is False once it has exited.

    Zombies count as exited, as everywhere in ProcFs. Safe across pid reuse: a later
    process with the same pid has another start time (and is not the pidfd's process).
    """

    procfs: ProcFs
    pid: int
    start: int  # start time, in ProcFs's clock ticks
    pidfd: int | None = None

    def alive(self) -> bool:
        if self.pidfd is not None:
            # A pidfd polls readable once its process has exited (zombie or reaped),
            # and keeps naming that process whatever reuses its number.
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            return not poller.poll(0)
        info = self.procfs.info(self.pid)
        return info is not None and info.start == self.start

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
