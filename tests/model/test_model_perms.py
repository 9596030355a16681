"""A bus's perms in the pure model: who may join, the three attributes, and persistence."""

from __future__ import annotations

import copy
import errno

import pytest

from vbusfs.model import (
    BusPerms,
    ConfigError,
    Inferred,
    ProcessInfo,
    Vbus,
    VbusError,
    dump_config,
    restore_config,
)

ROOT, OWNER, MEMBER, OTHER, GROUP = 0, 1000, 1001, 1002, 500


@pytest.mark.parametrize(
    ("mode", "uid", "gids", "may"),
    [
        (0o700, ROOT, (), True),
        (0o000, ROOT, (), True),  # root may always join
        (0o700, OWNER, (), True),
        (0o600, OWNER, (), False),  # r and w are not the right to join
        (0o070, OWNER, (GROUP,), False),  # the owner's class decides for the owner
        (0o710, MEMBER, (GROUP,), True),
        (0o701, MEMBER, (GROUP,), False),  # the group's class decides for its members
        (0o701, OTHER, (), True),
        (0o776, OTHER, (), False),
        (0o710, OTHER, (7,), False),
    ],
)
def test_may_join_reads_the_search_bit_of_the_callers_class(mode, uid, gids, may):
    assert BusPerms(OWNER, GROUP, mode).may_join(uid, gids) is may


def test_a_bus_is_its_creators_with_mode_0700():
    vbus = Vbus()
    assert vbus.create_bus("B").perms == BusPerms(ROOT, ROOT, 0o700)
    assert vbus.create_bus("C", owner=OWNER, group=GROUP).perms == BusPerms(OWNER, GROUP, 0o700)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("owner", "x"),
        ("owner", "-1"),
        ("owner", str(2**32 - 1)),
        ("owner", "\uff11"),  # a full-width digit
        ("owner", ""),
        ("group", "12345678901"),
        ("mode", "8"),
        ("mode", "01000"),
        ("mode", ""),
        ("mode", "0o7"),
    ],
)
def test_a_malformed_value_is_einval_and_changes_nothing(name, value):
    vbus = Vbus()
    bus = vbus.create_bus("B", owner=OWNER, group=GROUP)
    with pytest.raises(VbusError) as info:
        vbus.store_perm(bus, name, value, writer=OWNER)
    assert info.value.errno == errno.EINVAL
    assert bus.perms == BusPerms(OWNER, GROUP, 0o700)


def test_only_root_and_the_owner_may_store_and_a_refusal_changes_nothing():
    vbus = Vbus()
    bus = vbus.create_bus("B", owner=OWNER, group=GROUP)
    for writer in (MEMBER, OTHER):
        with pytest.raises(VbusError) as info:
            vbus.store_perm(bus, "mode", "0777", writer=writer)
        assert info.value.errno == errno.EPERM
    assert bus.perms.mode == 0o700
    vbus.store_perm(bus, "mode", "751", writer=OWNER)
    assert vbus.show_perm(bus, "mode") == "0751"
    vbus.store_perm(bus, "owner", str(OTHER), writer=ROOT)
    with pytest.raises(VbusError):  # given away: no longer the old owner's
        vbus.store_perm(bus, "mode", "0", writer=OWNER)
    assert [vbus.show_perm(bus, n) for n in ("owner", "group", "mode")] == ["1002", "500", "0751"]
    vbus.remove_bus("B")
    with pytest.raises(VbusError) as info:
        vbus.store_perm(bus, "mode", "0", writer=ROOT)
    assert info.value.errno == errno.ENODEV


class Table:
    """Processes with users and groups; no inheritance is needed here."""

    def __init__(self) -> None:
        self.procs = {1: ProcessInfo(1, 0, 0, ROOT)}
        self.groups_by_pid: dict[int, tuple[int, frozenset[int]]] = {1: (0, frozenset())}
        self.asked: list[int] = []

    def add(self, pid: int, uid: int, gid: int, groups: tuple[int, ...] = ()) -> int:
        self.procs[pid] = ProcessInfo(pid, 1, pid, uid)
        self.groups_by_pid[pid] = (gid, frozenset(groups))
        return pid

    def info(self, pid):
        return self.procs.get(pid)

    def tgid(self, pid):
        return pid if pid in self.procs else None

    def children(self, pid):
        return []

    def groups(self, pid):
        self.asked.append(pid)
        return self.groups_by_pid.get(pid)


def test_a_join_is_checked_against_the_joining_process():
    table = Table()
    vbus = Vbus(membership=Inferred(table))
    bus = vbus.create_bus("B", owner=OWNER, group=GROUP)
    owner, member, primary, other = (
        table.add(10, OWNER, OWNER),
        table.add(11, MEMBER, MEMBER, (GROUP,)),
        table.add(12, MEMBER, GROUP),
        table.add(13, OTHER, OTHER),
    )
    vbus.set_membership(owner, "B")
    assert table.asked == []  # the owner's class needs no groups
    for pid in (member, primary, other):
        with pytest.raises(VbusError) as info:
            vbus.set_membership(pid, "B")
        assert info.value.errno == errno.EACCES
        assert vbus.membership_of(pid) is None
    vbus.store_perm(bus, "mode", "0710")
    vbus.set_membership(member, "B")
    vbus.set_membership(primary, "B")
    with pytest.raises(VbusError):
        vbus.set_membership(other, "B")
    vbus.set_membership(1, "B")  # root
    assert vbus.membership.members_of("B") == [1, owner, member, primary]
    # tightening keeps who is in (the connector refuses them), and leaving always works
    vbus.store_perm(bus, "mode", "0")
    vbus.set_membership(member, "0")
    assert vbus.membership_of(member) is None
    assert not vbus.may_use("B", MEMBER, {GROUP}) and vbus.may_use("B", ROOT, ())
    assert not vbus.may_use("gone", ROOT, ())
    # a process gone between the lookup and the groups read: ESRCH, nothing changed
    del table.groups_by_pid[other]
    vbus.store_perm(bus, "mode", "0001")
    with pytest.raises(VbusError) as info:
        vbus.set_membership(other, "B")
    assert info.value.errno == errno.ESRCH


def test_dump_and_restore_keep_the_perms_and_an_older_file_gets_root_0700():
    vbus = Vbus()
    vbus.create_bus("B", owner=OWNER, group=GROUP)
    vbus.store_perm(vbus.buses["B"], "mode", "0751")
    vbus.create_bus("C")
    data = dump_config(vbus)
    assert data["buses"][0]["perms"] == {"owner": "1000", "group": "500", "mode": "0751"}
    again = Vbus()
    restore_config(again, data)
    assert again.snapshot() == vbus.snapshot()
    older = copy.deepcopy(data)
    for bus in older["buses"]:
        del bus["perms"]
    old = Vbus()
    restore_config(old, older)
    assert {b.name: b.perms for b in old.buses.values()} == {
        "B": BusPerms(ROOT, ROOT, 0o700),
        "C": BusPerms(ROOT, ROOT, 0o700),
    }


@pytest.mark.parametrize(
    "perms",
    [
        {"mode": "0800"},
        {"owner": 1000},  # saved as the attribute file reads: a string
        {"colour": "red"},
        ["0700"],
    ],
)
def test_a_saved_bad_perms_value_restores_nothing(perms):
    vbus = Vbus()
    vbus.create_bus("B")
    data = dump_config(vbus)
    data["buses"][0]["perms"] = perms
    fresh = Vbus()
    with pytest.raises(ConfigError):
        restore_config(fresh, data)
    assert fresh.buses == {}
