"""The fallback (`Inferred`): membership decided from a process table, its inheritance,
start times, exit and threads.

The table here is an in-memory process tree with a clock the test moves, so
every ordering (same tick, recycled pid, re-parenting) can be set up exactly.
The mount tests run the same rules against real processes and /proc.
"""

from __future__ import annotations

import errno

import pytest

from vbusfs.model import Inferred, NoSuchProcess, ProcessInfo, Vbus, VbusError


class FakeTable:
    def __init__(self) -> None:
        self.clock = 1000
        self.procs: dict[int, ProcessInfo] = {1: ProcessInfo(1, 0, 0, 0)}
        self.threads: dict[int, int] = {}

    def spawn(self, pid: int, ppid: int, uid: int = 0) -> int:
        assert pid not in self.procs
        self.procs[pid] = ProcessInfo(pid, ppid, self.clock, uid)
        return pid

    def exit(self, pid: int) -> None:
        del self.procs[pid]
        for child, info in list(self.procs.items()):
            if info.ppid == pid:  # re-parented to init, as the kernel does
                self.procs[child] = ProcessInfo(child, 1, info.start, info.uid)

    def tick(self, n: int = 1) -> None:
        self.clock += n

    def info(self, pid):
        return self.procs.get(pid)

    def tgid(self, pid):
        if pid in self.procs:
            return pid
        return self.threads.get(pid)

    def pids(self):
        return list(self.procs)

    def children(self, pid):
        return [p for p, info in self.procs.items() if info.ppid == pid]

    def now(self):
        return self.clock


@pytest.fixture
def table() -> FakeTable:
    return FakeTable()


@pytest.fixture
def vbus(table) -> Vbus:
    model = Vbus(membership=Inferred(table))
    model.create_bus("B")
    model.create_bus("C")
    return model


def test_join_leave_and_show(vbus, table):
    sh = table.spawn(10, 1)
    assert vbus.membership_of(sh) is None  # the views render it <none>
    vbus.set_membership(sh, "B")
    assert vbus.membership_of(sh) == "B" and vbus.bus_of(sh) == "B"
    vbus.set_membership(sh, "C")  # joining leaves the old bus
    assert vbus.membership.members_of("B") == [] and vbus.membership.members_of("C") == [10]
    vbus.set_membership(sh, "0")
    assert vbus.bus_of(sh) is None
    vbus.set_membership(sh, "0")  # leaving when on no bus succeeds


def test_unknown_bus_is_enoent_and_changes_nothing(vbus, table):
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    with pytest.raises(VbusError) as info:
        vbus.set_membership(sh, "nope")
    assert info.value.errno == errno.ENOENT
    assert vbus.bus_of(sh) == "B"


def test_dead_process_is_esrch(vbus, table):
    with pytest.raises(NoSuchProcess):
        vbus.set_membership(4242, "B")
    with pytest.raises(NoSuchProcess):
        vbus.membership_of(4242)


def test_children_forked_after_the_join_inherit_recursively(vbus, table):
    sh = table.spawn(10, 1)
    early = table.spawn(11, sh)
    table.tick()
    vbus.set_membership(sh, "B")
    table.tick()
    child = table.spawn(12, sh)
    table.tick()
    grandchild = table.spawn(13, child)
    assert vbus.bus_of(child) == "B" and vbus.bus_of(grandchild) == "B"
    assert vbus.bus_of(early) is None
    assert vbus.membership.members_of("B") == [10, 12, 13]


def test_same_tick_children_are_told_apart(vbus, table):
    sh = table.spawn(10, 1)
    before = table.spawn(11, sh)  # same tick as the join, but already there
    vbus.set_membership(sh, "B")
    after = table.spawn(12, sh)  # same tick, forked after the join
    assert vbus.bus_of(before) is None
    assert vbus.bus_of(after) == "B"


def test_a_child_overrides_what_it_inherited(vbus, table):
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    table.tick()
    child = table.spawn(11, sh)
    vbus.set_membership(child, "0")
    table.tick()
    grandchild = table.spawn(12, child)
    assert vbus.bus_of(child) is None and vbus.bus_of(grandchild) is None
    vbus.set_membership(child, "C")
    assert vbus.bus_of(sh) == "B" and vbus.bus_of(child) == "C"
    assert vbus.bus_of(grandchild) is None  # forked while the child was on no bus


def test_children_keep_the_membership_they_were_forked_with(vbus, table):
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    table.tick()
    on_b = table.spawn(11, sh)
    table.tick()
    vbus.set_membership(sh, "C")
    table.tick()
    on_c = table.spawn(12, sh)
    table.tick()
    vbus.set_membership(sh, "0")
    assert (vbus.bus_of(on_b), vbus.bus_of(on_c), vbus.bus_of(sh)) == ("B", "C", None)


def test_a_recycled_pid_never_inherits(vbus, table):
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    table.exit(sh)
    table.tick()
    table.spawn(10, 1)  # same pid, another process
    assert vbus.bus_of(10) is None
    assert vbus.membership.members_of("B") == []


def test_inheritance_survives_reparenting_once_seen(vbus, table):
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    table.tick()
    seen = table.spawn(11, sh)
    unseen = table.spawn(12, sh)
    assert vbus.bus_of(seen) == "B"
    table.exit(sh)
    assert vbus.bus_of(seen) == "B"
    assert vbus.bus_of(unseen) is None  # the documented limit


def test_sweep_remembers_inheritance_and_forgets_the_dead(vbus, table):
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    table.tick()
    kids = [table.spawn(100 + i, sh) for i in range(50)]
    vbus.membership.sweep()
    table.exit(sh)
    assert all(vbus.bus_of(k) == "B" for k in kids)
    for k in kids:
        table.exit(k)
    vbus.membership.sweep()
    assert len(vbus.membership) == 0


def test_threads_act_for_their_process(vbus, table):
    proc = table.spawn(10, 1)
    table.threads[15] = proc
    vbus.set_membership(15, "B")
    assert vbus.bus_of(proc) == "B"
    assert vbus.membership_of(15) == "B"


def test_bus_with_live_members_cannot_be_removed(vbus, table):
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    table.tick()
    child = table.spawn(11, sh)
    vbus.set_membership(sh, "0")
    with pytest.raises(VbusError) as info:
        vbus.remove_bus("B")
    assert info.value.errno == errno.EBUSY  # the child still is a member
    table.exit(child)
    vbus.remove_bus("B")
    assert "B" not in vbus.buses


def test_model_without_processes_refuses_membership():
    vbus = Vbus()
    with pytest.raises(NoSuchProcess):
        vbus.bus_of(1)


def test_kernel_threads_cannot_join(vbus, table):
    table.procs[2] = ProcessInfo(2, 0, 0, 0, kernel_thread=True)
    with pytest.raises(VbusError) as info:
        vbus.set_membership(2, "B")
    assert info.value.errno == errno.EINVAL
    assert vbus.bus_of(2) is None and vbus.membership.members_of("B") == []


def test_what_is_remembered_does_not_grow_with_changes(vbus, table):
    """A process that toggles its membership forever costs one entry, not a history."""
    sh = table.spawn(10, 1)
    child = table.spawn(11, sh)
    for round_ in range(1000):
        vbus.set_membership(sh, "B" if round_ % 2 else "0")
        table.tick()
    assert len(vbus.membership) == 2  # the process and its child, pinned at the first
    assert vbus.bus_of(child) is None  # forked before any join


def test_the_sweep_costs_the_members_not_the_process_table(vbus, table):
    """10,000 unrelated processes: a sweep and a listing never look at them."""
    for pid in range(1000, 11000):
        table.spawn(pid, 1)
    sh = table.spawn(10, 1)
    vbus.set_membership(sh, "B")
    looked: list[int] = []
    info, children = table.info, table.children
    table.info = lambda pid: (looked.append(pid), info(pid))[1]  # type: ignore[method-assign]
    table.children = lambda pid: (looked.append(pid), children(pid))[1]  # type: ignore[method-assign]
    vbus.membership.sweep()
    assert vbus.membership.members_of("B") == [10]
    assert set(looked) <= {10}
