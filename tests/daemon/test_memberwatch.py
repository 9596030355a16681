"""The daemon's membership watch: forks, exits and moves found between sweeps and told to
monitors, on an in-memory process table the test moves (the mount tests run it on real
processes)."""

from __future__ import annotations

import pytest

from vbusfs.daemon._memberwatch import MemberWatch
from vbusfs.model import Inferred, MembershipChanged, ProcessInfo, Vbus


class Table:
    def __init__(self) -> None:
        self.clock = 1000
        self.procs: dict[int, ProcessInfo] = {1: ProcessInfo(1, 0, 0, 0)}

    def spawn(self, pid: int, ppid: int) -> int:
        self.clock += 1
        self.procs[pid] = ProcessInfo(pid, ppid, self.clock, 0)
        return pid

    def exit(self, pid: int) -> None:
        del self.procs[pid]

    def info(self, pid):
        return self.procs.get(pid)

    def tgid(self, pid):
        return pid if pid in self.procs else None

    def children(self, pid):
        return [p for p, info in self.procs.items() if info.ppid == pid]


@pytest.fixture
def world():
    table = Table()
    vbus = Vbus(membership=Inferred(table))
    vbus.create_bus("B")
    vbus.create_bus("C")
    heard: list[tuple] = []
    vbus.changes.subscribe(
        lambda c: (
            heard.append((c.pid, c.left, c.joined, c.how))
            if isinstance(c, MembershipChanged)
            else None
        )
    )
    listening = [True]
    watch = MemberWatch(vbus, lambda: listening[0])
    yield table, vbus, watch, heard, listening
    watch.close()


def test_forks_exits_and_recycled_pids_are_told_writes_only_once(world):
    table, vbus, watch, heard, _ = world
    shell = table.spawn(10, 1)
    vbus.set_membership(shell, "B")
    watch.sweep()  # the first look: what was before is not reported
    assert heard == [(10, None, "B", "write")]
    child = table.spawn(11, shell)
    grandchild = table.spawn(12, child)
    watch.sweep()
    watch.sweep()  # nothing new: nothing told
    assert heard[1:] == [(11, None, "B", "fork"), (12, None, "B", "fork")]
    del heard[:]
    vbus.set_membership(child, "0")  # a write: the model tells it, the sweep does not again
    table.exit(grandchild)
    table.spawn(12, shell)  # the same pid, a new process, born into B
    watch.sweep()
    assert heard == [
        (11, "B", None, "write"),
        (12, "B", None, "exit"),
        (12, None, "B", "fork"),
    ]


def test_moves_by_other_means_and_silence_without_monitors(world):
    table, vbus, watch, heard, listening = world
    shell = table.spawn(10, 1)
    stranger = table.spawn(20, 1)
    vbus.set_membership(shell, "B")
    watch.sweep()
    # the backend itself moves them (as a hand-made cgroup move would): no write
    vbus.membership.change(table.info(shell), "C")
    vbus.membership.change(table.info(stranger), "B")
    watch.sweep()
    assert heard[1:] == [(10, "B", "C", "moved"), (20, None, "B", "moved")]
    del heard[:]
    listening[0] = False
    table.spawn(21, stranger)
    table.exit(shell)
    watch.sweep()
    assert heard == []  # nobody listens: nothing looked for
    listening[0] = True
    watch.sweep()  # a first look again, from the members as they are now
    table.spawn(22, stranger)
    watch.sweep()
    assert heard == [(22, None, "B", "fork")]
