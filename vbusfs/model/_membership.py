"""Bus membership of processes, decided from the process tree and start times.

A process is identified by its pid and its start time, so a recycled pid is
a different process. A process's membership is the last change it made
itself (writing a bus name, or leaving), else what it inherited: its
parent's membership at the moment it was forked. Changes are stamped with the
clock that process start times use; a child that starts in the same clock
tick as a change of its parent is told apart by the list of children that
already existed when the change was made.

An inherited membership never changes once the child exists, so it is
remembered the first time it is worked out: a process keeps it even after
its parent exits and it is re-parented. The limit: a process whose parent
exits before vbusfs has ever looked at it (a lookup, a listing, or the
daemon's periodic sweep) cannot be traced back and is not a member.

The process table is a port: this module reads it but does no I/O itself.
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
    pid: int  # the thread group id
    ppid: int
    start: int  # start time, in the table's clock ticks
    uid: int


Key = tuple[int, int]  # (pid, start): one process, never a recycled pid


class ProcessTable(Protocol):
    """What membership needs to know about live processes."""

    def info(self, pid: int) -> ProcessInfo | None:
        """The live process (not zombie) with this pid, or None."""

    def tgid(self, pid: int) -> int | None:
        """The process a thread id belongs to, or None if there is no such thread."""

    def pids(self) -> Iterable[int]:
        """Every live process id."""

    def children(self, pid: int) -> Iterable[int]:
        """The ids of the process's children."""

    def now(self) -> int:
        """The current time in the clock of `ProcessInfo.start`."""


@dataclass(frozen=True, slots=True)
class Change:
    tick: int
    bus: str | None
    # children that started in `tick` but before this change: it is not theirs
    before: frozenset[Key]


def _key(info: ProcessInfo) -> Key:
    return (info.pid, info.start)


class Membership:
    """Which bus each process is a member of."""

    def __init__(self, table: ProcessTable) -> None:
        self.table = table
        self._changes: dict[Key, list[Change]] = {}
        self._inherited: dict[Key, str] = {}  # only memberships, never "none"

    def __len__(self) -> int:
        """How many processes are remembered (for leak checks)."""
        return len(self._changes.keys() | self._inherited.keys())

    def process(self, pid: int) -> ProcessInfo:
        """The process `pid` (or the process of thread `pid`), else NoSuchProcess."""
        tgid = self.table.tgid(pid)
        info = self.table.info(tgid) if tgid is not None else None
        if info is None:
            raise NoSuchProcess(f"no process {pid}")
        return info

    def bus_of(self, pid: int) -> str | None:
        """The bus process `pid` is a member of now, or None."""
        info = self.table.info(pid)
        if info is None:
            raise NoSuchProcess(f"no process {pid}")
        return self.current(info)

    def current(self, info: ProcessInfo) -> str | None:
        changes = self._changes.get(_key(info))
        if changes:
            return changes[-1].bus
        return self._inherited_by(info, 0)

    def change(self, info: ProcessInfo, bus: str | None) -> None:
        """Make `info` a member of `bus` (None: of no bus). Callers check the bus exists."""
        if self.current(info) == bus:
            return
        # Children forked before this change still need what came before it,
        # even after this process's own parent is gone.
        self._inherited_by(info, 0)
        tick = self.table.now()
        before = set()
        for child in self.table.children(info.pid):
            child_info = self.table.info(child)
            if child_info is not None and child_info.start >= tick:
                before.add(_key(child_info))
        self._changes.setdefault(_key(info), []).append(Change(tick, bus, frozenset(before)))

    def members_of(self, bus: str) -> list[int]:
        """Every live member of `bus`, by pid; forgets dead processes on the way."""
        return sorted(pid for pid, joined in self.members().items() if joined == bus)

    def members(self) -> dict[int, str]:
        """Every live member of any bus, with its bus; forgets dead processes."""
        found = {}
        live: set[Key] = set()
        for pid in self.table.pids():
            info = self.table.info(pid)
            if info is None:
                continue
            live.add(_key(info))
            bus = self.current(info)
            if bus is not None:
                found[info.pid] = bus
        self._forget_all_but(live)
        return found

    def sweep(self) -> None:
        """Remember every live process's inheritance and forget the dead (periodic)."""
        if self._changes or self._inherited:
            self.members()

    def _forget_all_but(self, live: set[Key]) -> None:
        for key in self._changes.keys() - live:
            del self._changes[key]
        for key in self._inherited.keys() - live:
            del self._inherited[key]

    def _inherited_by(self, info: ProcessInfo, depth: int) -> str | None:
        """What `info` got from its parent at fork time."""
        key = _key(info)
        if key in self._inherited:
            return self._inherited[key]
        if depth > MAX_DEPTH or info.ppid <= 0:
            return None
        parent = self.table.info(info.ppid)
        if parent is None or parent.start > info.start:
            return None  # the parent is gone: re-parented, or the pid was recycled
        bus = self._at(parent, info.start, key, depth + 1)
        if bus is not None:
            self._inherited[key] = bus
        return bus

    def _at(self, info: ProcessInfo, tick: int, child: Key, depth: int) -> str | None:
        """The membership `info` passed on to `child`, forked at `tick`."""
        for change in reversed(self._changes.get(_key(info), ())):
            if change.tick < tick or (change.tick == tick and child not in change.before):
                return change.bus
        return self._inherited_by(info, depth)
