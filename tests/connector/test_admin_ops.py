"""The administrators' ops over a model, with no socket: reset's check, the class rules.

The mount tests (tests/mount/test_reset.py, test_reload.py) run the same ops through a
live daemon; here the cases a live daemon cannot be brought to on purpose (the kernel
refusing to let a member go) are set up exactly.
"""

from __future__ import annotations

import contextlib
import errno
import logging

import pytest
import trio

from vbusfs.classes import Catalog, VenetLoopback, VenetSwitch, discover
from vbusfs.connector._admin import ADMIN_OPS, FoundOnly, administer
from vbusfs.connector._protocol import Request
from vbusfs.model import DeviceClass, Inferred, ProcessInfo, Vbus, VbusError


class Admin:
    """What the ops reach besides the model, as the connector gives it."""

    def __init__(self, catalog) -> None:
        self.catalog = catalog
        self.released = 0

    def release_all(self) -> int:
        self.released += 1
        return 2


def ask(vbus: Vbus, admin: Admin, op: str, **fields) -> dict:
    return ADMIN_OPS[op](vbus, Request(op, 1, fields), admin)


def fresh() -> Vbus:
    vbus = Vbus()
    for cls in discover().values():
        vbus.load_class(cls())
    return vbus


def test_reset_closes_open_interfaces_first_and_answers_how_many():
    vbus = fresh()
    vbus.create_bus("b")
    admin = Admin(Catalog())
    assert ask(vbus, admin, "reset") == {"closed": 2}
    assert admin.released == 1 and not vbus.buses


class Stuck:
    """A membership backend the kernel will not let a member leave."""

    mode = "cgroup"

    def __init__(self) -> None:
        self.table = None

    def members(self):
        return {9: "b"}

    def members_of(self, bus):
        return [9] if bus == "b" else []

    def bus_made(self, bus):
        pass

    def bus_gone(self, bus):
        raise OSError(errno.EBUSY, "Device or resource busy")


def test_reset_that_leaves_something_is_refused_with_ebusy_naming_it(caplog):
    vbus = Vbus(membership=Stuck())  # type: ignore[arg-type]
    for cls in discover().values():
        vbus.load_class(cls())
    vbus.create_bus("b")

    class Extra:
        def restore(self, vbus: Vbus) -> list[Exception]:
            return []

        def extra(self, vbus: Vbus) -> list[str]:
            return ["deviceclass odd (m:Odd)"]

    with caplog.at_level(logging.WARNING), pytest.raises(VbusError) as refused:
        ask(vbus, Admin(Extra()), "reset")
    assert refused.value.errno == errno.EBUSY
    assert str(refused.value) == (
        "the reset left member 9 of bus b, deviceclass odd (m:Odd) [EBUSY]"
    )
    # what the backend raised is in the log, with its traceback: a bug or the kernel
    assert "reset: internal error" in caplog.text and "OSError" in caplog.text


def test_a_connector_with_no_catalog_can_modprobe_but_not_reset_or_reload():
    vbus = Vbus()
    admin = Admin(FoundOnly(lambda name: VenetLoopback))
    assert ask(vbus, admin, "modprobe", deviceclass="venet-loopback") == {
        "deviceclass": "venet-loopback"
    }
    for op in ("reset", "reload"):
        with pytest.raises(VbusError) as refused:
            ask(vbus, admin, op, deviceclass="venet-loopback")
        assert refused.value.errno == errno.EOPNOTSUPP


class MySwitch(DeviceClass):
    name = "venet-switch"
    interface_type = "mine"


class MySwitchToo(DeviceClass):
    name = "venet-switch"
    interface_type = "mine-too"


def test_a_spec_takes_a_discovered_namesakes_place_once(caplog):
    vbus = fresh()
    catalog = Catalog()
    spec = f"{__name__}:MySwitch"
    with caplog.at_level(logging.WARNING, logger="vbusfs.classes"):
        assert catalog.load(vbus, spec) == "venet-switch"
    assert type(vbus.classes["venet-switch"]) is MySwitch
    assert "replaces the discovered one from vbusfs.classes._venet_switch" in caplog.text
    # now the loaded one is no discovered class: another of the name is refused
    with pytest.raises(VbusError) as refused:
        catalog.load(vbus, f"{__name__}:MySwitchToo")
    assert refused.value.errno == errno.EEXIST
    # by name: a class of that name is loaded, so success and nothing changes (modprobe(8))
    assert catalog.load(vbus, "venet-switch") == "venet-switch"
    assert catalog.load(vbus, spec) == "venet-switch"  # the loaded spec itself: the same
    assert type(vbus.classes["venet-switch"]) is MySwitch
    assert catalog.extra(vbus) == [f"deviceclass venet-switch ({__name__}:MySwitch)"]
    # a reset's restore brings the discovered class back
    assert catalog.restore(vbus) == []
    assert type(vbus.classes["venet-switch"]) is VenetSwitch and catalog.extra(vbus) == []


def test_a_spec_over_a_discovered_class_in_use_is_refused_and_changes_nothing():
    vbus = fresh()
    vbus.create_device("s")
    vbus.set_device_type("s", "venet-switch")
    with pytest.raises(VbusError) as refused:
        Catalog().load(vbus, f"{__name__}:MySwitch")
    assert refused.value.errno == errno.EBUSY
    assert type(vbus.classes["venet-switch"]) is VenetSwitch


def test_restore_unloads_spec_classes_and_reloads_removed_discovered_ones():
    vbus = fresh()

    catalog = Catalog()
    catalog.load(vbus, f"{__name__}:Spare")
    vbus.unload_class("venet-loopback")
    assert sorted(catalog.extra(vbus)) == [
        f"deviceclass spare ({__name__}:Spare)",
        "no deviceclass venet-loopback",
    ]
    before = dict(vbus.classes)
    assert catalog.restore(vbus) == []
    assert sorted(vbus.classes) == sorted(discover())
    # a class keeps nothing of its own across a reset: each one is a new instance
    assert all(vbus.classes[name] is not before.get(name) for name in vbus.classes)


def test_unknown_specs_are_enoent():
    with pytest.raises(VbusError) as refused:
        Catalog().load(fresh(), "vbusfs_no_such_module:Nothing")
    assert refused.value.errno == errno.ENOENT


class Spare(DeviceClass):
    name = "spare"
    interface_type = "spare-interface"


def test_inferred_membership_is_let_go_by_reset():
    class Table:
        procs = {1: ProcessInfo(1, 0, 0, 0), 4: ProcessInfo(4, 1, 5, 0)}

        def info(self, pid):
            return self.procs.get(pid)

        def tgid(self, pid):
            return pid if pid in self.procs else None

        def children(self, pid):
            return [p for p, i in self.procs.items() if i.ppid == pid]

        def groups(self, pid):
            return (0, frozenset())

    vbus = Vbus(membership=Inferred(Table()))
    vbus.create_bus("b")
    vbus.set_membership(4, "b")
    assert ask(vbus, Admin(Catalog()), "reset") == {"closed": 2}
    assert vbus.membership_of(4) is None


def test_reset_keeps_the_classes_the_daemon_started_with():
    catalog = Catalog((f"{__name__}:MySwitch",))  # as `--load` gave it
    vbus = fresh()
    vbus.replace_class("venet-switch", MySwitch())
    catalog.load(vbus, f"{__name__}:Spare")  # as modprobe added it
    assert catalog.extra(vbus) == [f"deviceclass spare ({__name__}:Spare)"]
    assert catalog.restore(vbus) == []
    assert type(vbus.classes["venet-switch"]) is MySwitch and "spare" not in vbus.classes
    assert catalog.extra(vbus) == []


def test_each_op_tells_the_catalog_where_it_may_have_changed_the_model():
    """After modprobe, reload and rmmod the catalog hears the deviceclasses named (the
    request's and the reply's: a spec names the class it loads), refused or not; after a
    reset, anything (None); after a save, nothing."""
    heard: list[set[str] | None] = []

    async def changed(classes):
        heard.append(None if classes is None else set(classes))

    vbus = fresh()
    vbus.create_device("s")
    vbus.set_device_type("s", "venet-switch")
    admin = Admin(Catalog(changed=changed))

    def op(name: str, **fields) -> None:
        async def main() -> None:
            with contextlib.suppress(VbusError):
                await administer(name, vbus, Request(name, 1, fields), admin)

        trio.run(main)

    spec = f"{__name__}:Spare"
    op("modprobe", deviceclass=spec)
    op("rmmod", deviceclass="spare")
    op("rmmod", deviceclass="venet-switch")  # EBUSY: a device is of it
    op("reload", deviceclass="no-such-class")  # ENOENT
    op("save")
    op("reset")
    assert heard == [{spec, "spare"}, {"spare"}, {"venet-switch"}, {"no-such-class"}, None]
    assert "spare" not in vbus.classes and not vbus.devices
