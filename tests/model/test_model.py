"""The model's rules and errnos, with no mount: every failure changes nothing."""

from __future__ import annotations

import copy
import errno
import random

import pytest

from vbusfs.classes import VenetLoopback, VenetSwitch, VenetTap
from vbusfs.model import (
    Attribute,
    DeviceClass,
    Event,
    InvalidValue,
    Vbus,
    VbusError,
)


class RefusingClass(DeviceClass):
    name = "refuser"
    interface_type = "nothing"

    def create(self, device_name: str) -> None:
        raise VbusError("no hardware", errno=errno.ENODEV)


@pytest.fixture
def vbus() -> Vbus:
    model = Vbus()
    for cls in (VenetTap, VenetLoopback, VenetSwitch):
        model.load_class(cls(rng=random.Random(1)))
    return model


def fails_with(code: int, vbus: Vbus, call, *args):
    """Assert `call(*args)` raises errno `code` and leaves the model unchanged."""
    before = vbus.snapshot()
    with pytest.raises(VbusError) as info:
        call(*args)
    assert info.value.errno == code, info.value
    assert vbus.snapshot() == before


def typed(vbus: Vbus, name: str, cls: str = "venet-tap") -> None:
    vbus.create_device(name)
    vbus.set_device_type(name, cls)


def test_device_two_step_creation_fixes_type(vbus):
    vbus.create_device("d")
    assert vbus.devices["d"].deviceclass is None
    vbus.set_device_type("d", "venet-tap")
    assert vbus.devices["d"].deviceclass.name == "venet-tap"
    fails_with(errno.EINVAL, vbus, vbus.set_device_type, "d", "venet-tap")
    fails_with(errno.EINVAL, vbus, vbus.set_device_type, "d", "venet-loopback")


def test_device_type_unknown_class_is_enoent(vbus):
    vbus.create_device("d")
    fails_with(errno.ENOENT, vbus, vbus.set_device_type, "d", "foo")


def test_device_type_create_step_errno_propagates():
    vbus = Vbus()
    vbus.load_class(RefusingClass())
    vbus.create_device("d")
    fails_with(errno.ENODEV, vbus, vbus.set_device_type, "d", "refuser")
    assert vbus.class_in_use("refuser") == 0


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", errno.EINVAL),
        (".", errno.EINVAL),
        ("..", errno.EINVAL),
        ("a/b", errno.EINVAL),
        ("x" * 256, errno.ENAMETOOLONG),
        ("é" * 128, errno.ENAMETOOLONG),
    ],
)
def test_names_are_checked_for_devices_and_buses(vbus, name, code):
    fails_with(code, vbus, vbus.create_device, name)
    fails_with(code, vbus, vbus.create_bus, name)


def test_names_of_255_bytes_are_accepted(vbus):
    vbus.create_device("x" * 255)
    vbus.create_bus("y" * 255)


def test_bus_name_zero_is_reserved(vbus):
    fails_with(errno.EINVAL, vbus, vbus.create_bus, "0")
    vbus.create_device("0")  # only buses reserve it


def test_existing_names_are_eexist_in_each_namespace(vbus):
    vbus.create_device("x")
    vbus.create_bus("x")  # separate namespaces
    fails_with(errno.EEXIST, vbus, vbus.create_device, "x")
    fails_with(errno.EEXIST, vbus, vbus.create_bus, "x")


def test_link_numbers_interfaces_and_never_reuses_ids(vbus):
    vbus.create_bus("b")
    for name in ("d0", "d1", "d2"):
        typed(vbus, name)
    assert vbus.link("b", "d0", "d0").id == 0
    assert vbus.link("b", "d1", "d1").id == 1
    vbus.unlink("b", "d0")
    assert vbus.link("b", "again", "d0").id == 2
    assert sorted(vbus.buses["b"].interfaces) == [1, 2]
    assert vbus.devices["d0"].interfaces["2"].type == "virtual-ethernet"


def test_link_errors(vbus):
    vbus.create_bus("b")
    vbus.create_bus("c")
    vbus.create_device("untyped")
    typed(vbus, "tap")
    fails_with(errno.EINVAL, vbus, vbus.link, "b", "u", "untyped")
    fails_with(errno.ENOENT, vbus, vbus.link, "b", "x", "missing")
    fails_with(errno.ENOENT, vbus, vbus.link, "missing", "x", "tap")
    vbus.link("b", "tap", "tap")
    fails_with(errno.EEXIST, vbus, vbus.link, "b", "tap", "tap")
    fails_with(errno.EBUSY, vbus, vbus.link, "b", "other", "tap")
    fails_with(errno.EBUSY, vbus, vbus.link, "c", "tap", "tap")


def test_single_bus_classes_refuse_second_bus(vbus):
    vbus.create_bus("b")
    vbus.create_bus("c")
    typed(vbus, "lo", "venet-loopback")
    vbus.link("b", "lo", "lo")
    fails_with(errno.EBUSY, vbus, vbus.link, "c", "lo", "lo")


def test_switch_sits_on_several_buses_with_qualified_names(vbus):
    typed(vbus, "sw", "venet-switch")
    for bus in ("b", "c"):
        vbus.create_bus(bus)
    vbus.create_device("pad")
    vbus.set_device_type("pad", "venet-loopback")
    vbus.link("c", "pad", "pad")
    vbus.link("b", "sw", "sw")
    vbus.link("c", "sw", "sw")
    assert list(vbus.devices["sw"].interfaces) == ["b.0", "c.1"]
    assert vbus.show_attribute(vbus.devices["sw"], "ports") == "b.0 c.1"
    fails_with(errno.EBUSY, vbus, vbus.link, "b", "sw2", "sw")
    vbus.unlink("b", "sw")
    assert vbus.show_attribute(vbus.devices["sw"], "ports") == "c.1"


def test_interface_id_space_exhaustion_is_enospc():
    vbus = Vbus(max_interface_ids=2)
    vbus.load_class(VenetSwitch())
    typed(vbus, "a", "venet-switch")
    typed(vbus, "b", "venet-switch")
    vbus.create_bus("bus")
    vbus.link("bus", "a", "a")
    vbus.unlink("bus", "a")
    vbus.link("bus", "b", "b")
    fails_with(errno.ENOSPC, vbus, vbus.link, "bus", "a", "a")


def test_remove_device_rules(vbus):
    vbus.create_bus("b")
    typed(vbus, "d")
    vbus.link("b", "d", "d")
    fails_with(errno.EBUSY, vbus, vbus.remove_device, "d")
    vbus.unlink("b", "d")
    vbus.remove_device("d")
    assert "d" not in vbus.devices
    assert vbus.class_in_use("venet-tap") == 0
    fails_with(errno.ENOENT, vbus, vbus.remove_device, "d")


def test_remove_bus_rules(vbus):
    vbus.create_bus("b")
    typed(vbus, "d")
    vbus.link("b", "d", "d")
    fails_with(errno.ENOTEMPTY, vbus, vbus.remove_bus, "b")
    vbus.unlink("b", "d")
    vbus.remove_bus("b")
    fails_with(errno.ENOENT, vbus, vbus.remove_bus, "b")


def test_unload_class_busy_while_typed_devices_exist(vbus):
    typed(vbus, "d", "venet-loopback")
    fails_with(errno.EBUSY, vbus, vbus.unload_class, "venet-loopback")
    vbus.remove_device("d")
    vbus.unload_class("venet-loopback")
    assert "venet-loopback" not in vbus.classes
    fails_with(errno.ENOENT, vbus, vbus.unload_class, "venet-loopback")
    fails_with(errno.EEXIST, vbus, vbus.load_class, VenetTap())


def test_class_may_not_take_reserved_entry_names():
    class Clashing(DeviceClass):
        name = "clash"
        interface_type = "x"
        attributes = (Attribute("interfaces", lambda s: ""),)

    with pytest.raises(InvalidValue):
        Vbus().load_class(Clashing())


def test_venet_tap_attribute_rules(vbus):
    typed(vbus, "d")
    device = vbus.devices["d"]

    def show(name):
        return vbus.show_attribute(device, name)

    assert show("enabled") == "0"
    assert show("ifname") == "<disabled>"
    assert show("burstthresh") == "20"
    for mac in (show("host_mac"), show("client_mac")):
        octets = bytes.fromhex(mac.replace(":", ""))
        assert len(octets) == 6 and octets[0] & 0x03 == 0x02  # local, unicast
    vbus.store_attribute(device, "client_mac", "0A:1b:2C:3d:4E:5f")
    assert show("client_mac") == "0a:1b:2c:3d:4e:5f"
    for bad in ("", "0a:1b:2c:3d:4e", "0a:1b:2c:3d:4e:5f:60", "zz:1b:2c:3d:4e:5f", "0a-1b"):
        before = show("client_mac")
        with pytest.raises(InvalidValue):
            vbus.store_attribute(device, "client_mac", bad)
        assert show("client_mac") == before
    for bad in ("-1", "abc", "1.5", "", " 3", str(1 << 32)):
        with pytest.raises(InvalidValue):
            vbus.store_attribute(device, "burstthresh", bad)
    vbus.store_attribute(device, "burstthresh", "0")
    assert show("burstthresh") == "0"
    for bad in ("2", "-1", "true", "", "01"):
        with pytest.raises(InvalidValue):
            vbus.store_attribute(device, "enabled", bad)
    for name in ("host_mac", "ifname"):
        with pytest.raises(VbusError) as info:
            vbus.store_attribute(device, name, "x")
        assert info.value.errno == errno.EACCES


def test_client_mac_is_busy_while_a_client_holds_the_device(vbus):
    typed(vbus, "d")
    device = vbus.devices["d"]
    device.state.clients = 1
    with pytest.raises(VbusError) as info:
        vbus.store_attribute(device, "client_mac", "02:00:00:00:00:01")
    assert info.value.errno == errno.EBUSY
    device.state.clients = 0
    vbus.store_attribute(device, "client_mac", "02:00:00:00:00:01")


class FakeTap:
    """Stands in for the host TAP only in this model test; mount tests use real ones."""

    opened: list[FakeTap] = []

    def __init__(self, mac: bytes) -> None:
        self.name = f"fake{len(self.opened)}"
        self.closed = False
        self.opened.append(self)

    def close(self) -> None:
        self.closed = True


def test_venet_tap_enabled_opens_and_closes_the_host_interface():
    vbus = Vbus()
    vbus.load_class(VenetTap(open_tap=FakeTap))
    typed(vbus, "d")
    device = vbus.devices["d"]
    vbus.store_attribute(device, "enabled", "1")
    tap = FakeTap.opened[-1]
    assert vbus.show_attribute(device, "ifname") == tap.name
    vbus.store_attribute(device, "enabled", "1")  # same value: nothing happens
    assert FakeTap.opened[-1] is tap
    vbus.store_attribute(device, "enabled", "0")
    assert tap.closed and vbus.show_attribute(device, "ifname") == "<disabled>"
    vbus.store_attribute(device, "enabled", "1")
    vbus.remove_device("d")
    assert FakeTap.opened[-1].closed


def test_venet_tap_enable_failure_changes_nothing():
    def no_tun(mac: bytes):
        raise VbusError("no tun", errno=errno.ENOENT)

    vbus = Vbus()
    vbus.load_class(VenetTap(open_tap=no_tun))
    typed(vbus, "d")
    with pytest.raises(VbusError) as info:
        vbus.store_attribute(vbus.devices["d"], "enabled", "1")
    assert info.value.errno == errno.ENOENT
    assert vbus.show_attribute(vbus.devices["d"], "enabled") == "0"


def test_events_are_emitted_on_link_and_unlink(vbus):
    heard: list[Event] = []
    unsubscribe = vbus.subscribe(heard.append)
    vbus.create_bus("b")
    typed(vbus, "d")
    vbus.link("b", "d", "d")
    vbus.unlink("b", "d")
    unsubscribe()
    vbus.link("b", "d", "d")
    assert heard == [
        Event("add", "b", 0, "virtual-ethernet", "d"),
        Event("drop", "b", 0, "virtual-ethernet", "d"),
    ]


def test_clear_releases_everything(vbus):
    vbus.create_bus("b")
    typed(vbus, "d", "venet-switch")
    vbus.link("b", "d", "d")
    vbus.clear()
    assert not vbus.devices and not vbus.buses
    assert vbus.class_in_use("venet-switch") == 0


def test_snapshot_is_a_deep_picture(vbus):
    vbus.create_bus("b")
    first = vbus.snapshot()
    kept = copy.deepcopy(first)
    vbus.create_device("d")
    assert first == kept and vbus.snapshot() != first
