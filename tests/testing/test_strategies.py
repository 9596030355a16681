"""The strategies draw what they promise, checked against the model itself."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from vbusfs.classes import BUILTIN_CLASSES
from vbusfs.model import NAME_MAX, Vbus, VbusError
from vbusfs.testing import (
    AttributeValues,
    CreateBus,
    CreateDevice,
    Link,
    LiveMount,
    SetType,
    StoreAttribute,
    StoreInterfaceAttribute,
    apply_plan,
    apply_plan_to_mount,
    attribute_values,
    canonical_mac,
    host_free_model,
    interface_attribute_values,
    invalid_mac_addresses,
    invalid_names,
    mac_addresses,
    names,
    netns_available,
    topologies,
    topology_plans,
)


def typed_device(kind: str = "venet-loopback") -> tuple[Vbus, object]:
    vbus = host_free_model()
    vbus.create_device("d")
    vbus.set_device_type("d", kind)
    return vbus, vbus.devices["d"]


def create(vbus: Vbus, kind: str, name: str) -> None:
    if kind == "bus":
        vbus.create_bus(name)
    elif kind == "device":
        vbus.create_device(name)
    else:
        vbus.create_bus("b")
        vbus.create_device("d")
        vbus.set_device_type("d", "venet-loopback")
        vbus.link("b", name, "d")


@pytest.mark.parametrize("kind", ["bus", "device", "link"])
@given(data=st.data())
def test_names_are_accepted(kind, data):
    name = data.draw(names(kind))
    assert 1 <= len(name.encode()) <= NAME_MAX
    create(Vbus() if kind != "link" else host_free_model(), kind, name)


@pytest.mark.parametrize("kind", ["bus", "device", "link"])
@given(data=st.data())
def test_invalid_names_are_refused_with_their_errno(kind, data):
    bad = data.draw(invalid_names(kind))
    vbus = host_free_model()
    with pytest.raises(VbusError) as refused:
        create(vbus, kind, bad.text)
    assert refused.value.errno == bad.errno


def test_invalid_names_include_the_reserved_bus_name_and_long_multibyte_names():
    zero = find(invalid_names("bus"), lambda bad: bad.text == "0")
    assert zero == ("0", errno.EINVAL) and zero.through_mount
    long = find(
        invalid_names("device"), lambda bad: len(bad.text) < NAME_MAX < len(bad.text.encode())
    )
    assert long.errno == errno.ENAMETOOLONG and long.through_mount
    assert not find(invalid_names("device"), lambda bad: "/" in bad.text).through_mount


@given(mac=mac_addresses())
def test_mac_addresses_are_stored_and_read_canonically(mac):
    vbus, device = typed_device()
    vbus.store_attribute(device, "client_mac", mac)
    shown = vbus.show_attribute(device, "client_mac")
    assert shown == canonical_mac(mac) == canonical_mac(mac.upper())
    assert len(shown) == 17 and shown == shown.lower()


@given(mac=invalid_mac_addresses())
def test_invalid_mac_addresses_are_refused(mac):
    vbus, device = typed_device()
    before = vbus.show_attribute(device, "client_mac")
    with pytest.raises(VbusError) as refused:
        vbus.store_attribute(device, "client_mac", mac)
    assert refused.value.errno == errno.EINVAL
    assert vbus.show_attribute(device, "client_mac") == before


@pytest.mark.parametrize("kind", [cls.name for cls in BUILTIN_CLASSES])
@given(data=st.data())
def test_attribute_values_cover_every_writable_attribute(kind, data):
    vbus, device = typed_device(kind)
    table = attribute_values(kind)
    writable = {n for n, a in vbus.attributes(device).items() if a.writable}
    assert set(table) == writable
    iface = {a.name for a in vbus.classes[kind].interface_attributes if a.writable}
    assert set(interface_attribute_values(kind)) == iface
    for name, spec in sorted(table.items()):
        value = data.draw(spec.valid)
        vbus.store_attribute(device, name, value)
        assert vbus.show_attribute(device, name) == spec.shows(value)
        bad = data.draw(spec.invalid)
        with pytest.raises(VbusError) as refused:
            vbus.store_attribute(device, name, bad)
        assert refused.value.errno == errno.EINVAL


@given(plan=topology_plans())
def test_topology_plans_apply_step_by_step(plan):
    vbus = apply_plan(host_free_model(), plan)
    snapshot = vbus.snapshot()
    assert set(snapshot["buses"]) == {s.name for s in plan if isinstance(s, CreateBus)}
    assert set(snapshot["devices"]) == {s.name for s in plan if isinstance(s, CreateDevice)}
    for step in plan:
        if isinstance(step, SetType):
            assert snapshot["devices"][step.device]["type"] == step.deviceclass
        elif isinstance(step, Link):
            links = snapshot["buses"][step.bus]["links"]
            assert links[step.link] == (step.device, step.interface_id)


@given(vbus=topologies(max_devices=3, max_buses=2))
def test_topologies_draw_populated_models(vbus):
    for interface in vbus.iter_interfaces():
        assert interface.device.name in vbus.devices
        assert interface.bus.interfaces[interface.id] is interface


def test_topology_plans_take_other_classes_and_skip_host_attributes():
    @given(plan=topology_plans(classes=[cls for cls in BUILTIN_CLASSES if cls.multi_bus]))
    @settings(max_examples=10)
    def check(plan):
        kinds = {s.deviceclass for s in plan if isinstance(s, SetType)}
        assert kinds <= {"venet-switch"}

    check()

    @given(plan=topology_plans())
    @settings(max_examples=30)
    def no_tap_enable(plan):
        kinds = {s.device: s.deviceclass for s in plan if isinstance(s, SetType)}
        for step in plan:
            if isinstance(step, StoreAttribute) and step.attribute == "enabled":
                assert kinds[step.device] == "venet-loopback"  # never a host TAP

    no_tap_enable()


@pytest.mark.mount
@given(plan=topology_plans(max_devices=4, max_buses=3))
@settings(max_examples=3, deadline=None)
def test_a_plan_builds_the_same_trees_on_a_mount(plan):
    from vbusfs import views

    with (
        tempfile.TemporaryDirectory() as tmp,
        LiveMount(tmp, private_netns=netns_available()) as mount,
    ):
        apply_plan_to_mount(mount.path, plan)
        model = apply_plan(host_free_model(), plan)
        for parent in (views.CONFIG_DEVICES, views.CONFIG_INSTANCES):
            assert sorted(os.listdir(mount.join(*parent))) == sorted(views.children(model, parent))
        for step in plan:
            if isinstance(step, StoreAttribute):
                path = mount.join("sys/vbus/devices", step.device, step.attribute)
                device = model.devices[step.device]
                spec = attribute_values(device.deviceclass.name)[step.attribute]
            elif isinstance(step, StoreInterfaceAttribute):
                where = ("sys/vbus/instances", step.bus, "devices", str(step.interface_id))
                path = mount.join(*where, step.attribute)
                device = model.buses[step.bus].interfaces[step.interface_id].device
                spec = interface_attribute_values(device.deviceclass.name)[step.attribute]
            else:
                continue
            with open(path) as f:
                assert f.read() == spec.shows(step.value) + "\n"


def test_example_tables_give_readouts_and_errnos_beside_the_strategies():
    values = AttributeValues(
        valid=st.just("7"),
        valid_examples={"007": "7", "8": None},
        invalid_examples={"/missing": errno.ENOENT},
        shows=lambda text: str(int(text)),
    )
    assert values.readout("007") == "7" and values.readout("8") == "8"
    assert values.readout("9") == "9"  # not in the table: shows()
    assert values.refusal("/missing") == errno.ENOENT and values.refusal("x") == errno.EINVAL
    assert find(values.valid_values(), lambda v: v == "007") == "007"  # the table is drawn
    assert find(values.valid_values(), lambda v: v == "7") == "7"  # and the strategy
    assert find(values.invalid_values(), lambda v: True) == "/missing"


def test_example_tables_may_be_lists_and_stand_without_strategies():
    values = AttributeValues(valid_examples=["a", "b"], invalid_examples=["c"])
    assert values.valid_examples == {"a": None, "b": None}
    assert values.invalid_examples == {"c": errno.EINVAL}
    assert AttributeValues().valid_values() is None
    assert AttributeValues().invalid_values() is None
    drawn = set()
    find(values.valid_values(), lambda v: drawn.add(v) or drawn == {"a", "b"})
    assert drawn == {"a", "b"}
