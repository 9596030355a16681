"""The model's reset and class replacement, with no mount."""

from __future__ import annotations

import errno

import pytest

from vbusfs.classes import VenetLoopback, VenetSwitch
from vbusfs.model import (
    Attribute,
    DeviceClass,
    Event,
    Inferred,
    ProcessInfo,
    Vbus,
    VbusError,
)


class Table:
    """Three live processes under init; none exits."""

    def __init__(self) -> None:
        self.procs = {pid: ProcessInfo(pid, 1 if pid > 1 else 0, pid, 0) for pid in (1, 5, 6, 7)}

    def info(self, pid):
        return self.procs.get(pid)

    def tgid(self, pid):
        return pid if pid in self.procs else None

    def children(self, pid):
        return [p for p, info in self.procs.items() if info.ppid == pid]

    def groups(self, pid):
        return (0, frozenset())


class Clumsy(DeviceClass):
    """Its drop steps raise: a bug, which a reset must outlive."""

    name = "clumsy"
    interface_type = "clumsy-interface"
    multi_bus = True

    def destroy(self, state: object) -> None:
        raise RuntimeError("destroy failed")

    def detach(self, state: object, interface_state: object) -> None:
        raise RuntimeError("detach failed")


def model() -> Vbus:
    vbus = Vbus(membership=Inferred(Table()))
    for cls in (VenetLoopback, VenetSwitch, Clumsy):
        vbus.load_class(cls())
    for bus in ("a", "b"):
        vbus.create_bus(bus)
    for name, kind in (("l", "venet-loopback"), ("s", "venet-switch"), ("c", "clumsy")):
        vbus.create_device(name)
        vbus.set_device_type(name, kind)
    vbus.create_device("untyped")
    vbus.link("a", "l", "l")
    vbus.link("a", "s", "s")
    vbus.link("b", "s", "s")
    vbus.link("a", "c", "c")
    vbus.link("b", "c", "c")
    vbus.set_membership(5, "a")
    vbus.set_membership(6, "b")
    return vbus


def test_reset_empties_everything_and_outlives_a_buggy_drop_step():
    vbus = model()
    heard: list[Event] = []
    vbus.subscribe(heard.append)
    assert sorted(vbus.leftovers()) == [
        "bus a",
        "bus b",
        "device c",
        "device l",
        "device s",
        "device untyped",
        "member 5 of bus a",
        "member 6 of bus b",
    ]
    faults = vbus.reset()
    # two detaches and one destroy raised; nothing stopped the reset
    assert sorted(str(f) for f in faults) == ["destroy failed", "detach failed", "detach failed"]
    assert vbus.leftovers() == []
    assert not vbus.devices and not vbus.buses
    assert sorted(vbus.classes) == ["clumsy", "venet-loopback", "venet-switch"]
    assert all(vbus.class_in_use(name) == 0 for name in vbus.classes)
    # every client of every interface heard its drop, the buggy class's too
    assert sorted((e.kind, e.bus, e.interface_id) for e in heard) == [
        ("drop", "a", 0),
        ("drop", "a", 1),
        ("drop", "a", 2),
        ("drop", "b", 0),
        ("drop", "b", 1),
    ]
    # no member is left, and old names make fresh objects
    assert vbus.membership_of(5) is None and vbus.membership_of(6) is None
    vbus.create_bus("a")
    assert vbus.membership is not None and vbus.membership.members_of("a") == []
    vbus.create_device("l")
    vbus.set_device_type("l", "venet-loopback")
    assert vbus.link("a", "l", "l").id == 0


def test_replace_class_puts_the_new_class_in_place():
    vbus = model()
    vbus.reset()

    class Newer(VenetLoopback):
        attributes = (*VenetLoopback.attributes, Attribute("extra", lambda s: "1"))

    old = vbus.replace_class("venet-loopback", Newer())
    assert type(old) is VenetLoopback and type(vbus.classes["venet-loopback"]) is Newer
    vbus.create_device("d")
    vbus.set_device_type("d", "venet-loopback")
    assert vbus.show_attribute(vbus.devices["d"], "extra") == "1"


def refused(code: int, vbus: Vbus, name: str, new: DeviceClass) -> None:
    before = (vbus.snapshot(), {n: type(c) for n, c in vbus.classes.items()})
    with pytest.raises(VbusError) as info:
        vbus.replace_class(name, new)
    assert info.value.errno == code, info.value
    assert (vbus.snapshot(), {n: type(c) for n, c in vbus.classes.items()}) == before


def test_replace_class_refusals_change_nothing():
    vbus = model()
    # devices of it exist
    refused(errno.EBUSY, vbus, "venet-loopback", VenetLoopback())
    vbus.reset()
    refused(errno.ENOENT, vbus, "never-loaded", VenetLoopback())
    # renamed to another loaded class's name
    refused(errno.EEXIST, vbus, "clumsy", VenetSwitch())

    class Reserved(DeviceClass):
        name = "venet-loopback"
        interface_type = "x"
        attributes = (Attribute("interfaces", lambda s: ""),)

    # the new class itself is refused: the old one is back, unchanged
    refused(errno.EINVAL, vbus, "venet-loopback", Reserved())
