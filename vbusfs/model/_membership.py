"""Bus membership of processes: the port the model asks, and the inferring fallback.

Two backends keep membership (behaviour §6). Where the daemon may, the kernel keeps it:
each bus is a cgroup in a hierarchy private to the mount (`vbusfs.daemon` holds that
backend, since it is I/O). Elsewhere `Inferred` (here, pure) decides it from the process
tree through the `ProcessTable` port.

`Inferred`'s rules: a process is identified by its pid and its start time, so a recycled
pid is a different process. A process's membership is the last change it made itself
(writing a bus name, or leaving), else what it inherited from its parent. When a process
changes, each child it already has is pinned to the membership it had before, so a child
forked before a join stays out and one forked before a leave stays in; a child forked
afterwards reads its parent's. An inherited membership is also pinned the first time it is
worked out, and `sweep()` works it out for the descendants of every member, so it survives
the parent's exit. What is remembered is one entry per live process that changed or was
pinned; dead ones are forgotten by the sweep: memory and work follow the members and their
children, never the size of the process table.

The fallback's limit: a child whose parent exits before vbusfs has looked at it (a lookup,
a listing, or a sweep, which runs twice a second) cannot be traced back and is not a
member; `(cmd &)` in a shell that exits at once can lose it. The cgroup backend has no
such limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ._errors import NoSuchProcess

# Deeper than any real process tree; a guard against a table that lies.
MAX_DEPTH = 4096


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int  # the thread group id, in the daemon's pid namespace
    ppid: int
    start: int  # start time, in the table's clock ticks
    uid: int
    kernel_thread: bool = False


Key = tuple[int, int]  # (pid, start): one process, never a recycled pid


class ProcessPin(Protocol):
    """One process itself, not its pid number, held until `close()`."""

    def alive(self) -> bool:
        """False once that process has exited (zombie included), whoever has its pid."""

    def close(self) -> None: ...


class ProcessTable(Protocol):
    """What membership needs to know about live processes."""

    def info(self, pid: int) -> ProcessInfo | None:
        """The live process (not zombie) with this pid, or None."""

    def tgid(self, pid: int) -> int | None:
        """The process a thread id belongs to, or None if there is no such thread."""

    def children(self, pid: int) -> Iterable[int]:
        """The ids of the process's children."""

    def pin(self, info: ProcessInfo) -> ProcessPin | None:
        """Hold the process `info` itself (a pidfd, say), None if it has exited."""

    def groups(self, pid: int) -> tuple[int, frozenset[int]] | None:
        """The process's effective gid and supplementary groups, or None if it is gone."""


class MembershipBackend(Protocol):
    """Who is a member of which bus: what the model asks, whoever keeps it."""

    #: "cgroup" (kernel-tracked) or "proc" (inferred): what `vbusfs status` shows
    mode: str
    table: ProcessTable

    def bus_of(self, info: ProcessInfo) -> str | None:
        """The bus the live process `info` is a member of now, or None."""

    def change(self, info: ProcessInfo, bus: str | None) -> None:
        """Make `info` a member of `bus`, or of none. Callers check the bus exists."""

    def members(self) -> dict[int, str]:
        """Every live member of any bus (daemon-namespace pid), with its bus."""

    def members_of(self, bus: str) -> list[int]:
        """The live members of `bus`, by pid, sorted."""

    def bus_made(self, bus: str) -> None:
        """A bus was made: the backend may need a place for its members."""

    def bus_gone(self, bus: str) -> None:
        """A bus was removed (it had no members left, or they are let go: shutdown)."""

    def sweep(self) -> None:
        """Periodic upkeep; must cost no more than the members and their children."""


def _key(info: ProcessInfo) -> Key:
    return (info.pid, info.start)


class Inferred:
    """Membership inferred from the process tree (the fallback backend)."""

    mode = "proc"

    def __init__(self, table: ProcessTable) -> None:
        self.table = table
        self._own: dict[Key, str | None] = {}  # what a process chose itself
        self._pinned: dict[Key, str | None] = {}  # what a process got from its parent

    def __len__(self) -> int:
        """How many processes are remembered (for leak checks)."""
        return len(self._own.keys() | self._pinned.keys())

    def bus_of(self, info: ProcessInfo) -> str | None:
        return self._current(info, 0)

    def change(self, info: ProcessInfo, bus: str | None) -> None:
        before = self._current(info, 0)
        if before == bus and _key(info) in self._own:
            return
        # children that exist now were forked under `before`: it stays theirs
        self._pin_children(info, before)
        self._own[_key(info)] = bus

    def members(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for key in list(self._own.keys() | self._pinned.keys()):
            info = self.table.info(key[0])
            if info is None or info.start != key[1]:
                self._own.pop(key, None)
                self._pinned.pop(key, None)
                continue
            self._walk(info, found)
        return found

    def members_of(self, bus: str) -> list[int]:
        return sorted(pid for pid, joined in self.members().items() if joined == bus)

    def bus_made(self, bus: str) -> None:
        pass

    def bus_gone(self, bus: str) -> None:
        for table in (self._own, self._pinned):
            for key, joined in list(table.items()):
                if joined == bus:
                    table[key] = None

    def sweep(self) -> None:
        self.members()

    def _walk(self, root: ProcessInfo, found: dict[int, str]) -> None:
        """Record `root` and its descendants that are members, pinning what they inherit."""
        stack = [(root, 0)]
        while stack:
            info, depth = stack.pop()
            if info.pid in found or depth > MAX_DEPTH:
                continue
            bus = self._current(info, 0)
            if bus is None:
                continue  # its descendants are only members if they chose: roots too
            found[info.pid] = bus
            stack.extend((child, depth + 1) for child in self._pin_children(info, bus))

    def _pin_children(self, info: ProcessInfo, bus: str | None) -> list[ProcessInfo]:
        """Pin each live child of `info` that has no entry yet to `bus`; the children."""
        children = []
        for child in self.table.children(info.pid):
            child_info = self.table.info(child)
            if child_info is None or child_info.ppid != info.pid:
                continue
            key = _key(child_info)
            if key not in self._own and key not in self._pinned:
                self._pinned[key] = bus
            children.append(child_info)
        return children

    def _current(self, info: ProcessInfo, depth: int) -> str | None:
        key = _key(info)
        if key in self._own:
            return self._own[key]
        if key in self._pinned:
            return self._pinned[key]
        if not (self._own or self._pinned) or depth > MAX_DEPTH or info.ppid <= 0:
            return None
        parent = self.table.info(info.ppid)
        if parent is None or parent.start > info.start:
            return None  # the parent is gone: re-parented, or the pid was recycled
        bus = self._current(parent, depth + 1)
        if bus is not None:
            self._pinned[key] = bus  # kept when the parent exits
        return bus


def process_of(table: ProcessTable, pid: int) -> ProcessInfo:
    """The process `pid` (or the process of thread `pid`), else NoSuchProcess."""
    tgid = table.tgid(pid)
    info = table.info(tgid) if tgid is not None else None
    if info is None:
        raise NoSuchProcess(f"no process {pid}")
    return info
