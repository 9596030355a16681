"""The blink deviceclass: the conformance machine, properties, and a live mount."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vbus_blink import COLORS, Blink

from vbusfs.model import Vbus, VbusError
from vbusfs.testing import (
    AttributeValues,
    DeviceClassConformance,
    LiveMount,
    apply_plan,
    choice_values,
    host_free_model,
    integer_values,
    names,
    topology_plans,
)

BLINK_VALUES = {
    "color": choice_values(COLORS),
    "period_ms": integer_values(10, 10_000),
    "brightness": integer_values(0, 255),
}
LABELS = AttributeValues(
    valid=st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=32),
    invalid=st.one_of(
        st.text("ABC_ .", min_size=1, max_size=8),
        st.text("abc", min_size=33, max_size=40),
    ),
)


class BlinkConformance(DeviceClassConformance):
    deviceclass = Blink
    values = BLINK_VALUES
    interface_values = {"label": LABELS}

    def class_state(self) -> object:
        # the registry of live devices must empty out with the model
        return sorted(self.instance.live)  # type: ignore[attr-defined]

    def check_device(self, device) -> None:
        assert device.state.clients == 0  # every open was closed
        assert set(device.state.labels) == set(device.interfaces)


TestBlinkConformance = BlinkConformance.TestCase
TestBlinkConformance.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)


def test_blink_is_loaded_in_the_model(vbus_model: Vbus):
    assert "blink" in vbus_model.classes
    vbus_model.create_device("led")
    vbus_model.set_device_type("led", "blink")
    device = vbus_model.devices["led"]
    assert vbus_model.show_attribute(device, "color") == "green"
    with pytest.raises(VbusError) as refused:
        vbus_model.store_attribute(device, "color", "purple")
    assert refused.value.errno == errno.EINVAL


def model() -> Vbus:
    return host_free_model(("vbus_blink:Blink",))


@given(
    topology_plans(
        classes=[Blink],
        values={"blink": BLINK_VALUES},
        interface_values={"blink": {"label": LABELS}},
    )
)
@settings(max_examples=25, deadline=None)
def test_every_blink_device_has_its_own_serial(plan):
    vbus = apply_plan(model(), plan)
    serials = [vbus.show_attribute(d, "serial") for d in vbus.devices.values() if d.typed]
    assert len(set(serials)) == len(serials)


@given(name=names("device"))
@settings(max_examples=25, deadline=None)
def test_any_device_name_can_be_a_blink(name):
    vbus = model()
    vbus.create_device(name)
    vbus.set_device_type(name, "blink")
    assert vbus.show_attribute(vbus.devices[name], "serial") == "blink-1"


def test_blink_through_a_mount(vbus_mount: LiveMount):
    assert "blink" in vbus_mount.sh("ls sys/vbus/deviceclass").stdout.split()
    vbus_mount.sh(
        "mkdir config/vbus/devices/led config/vbus/instances/desk"
        " && echo blink > config/vbus/devices/led/type"
        " && ln -s $PWD/config/vbus/devices/led config/vbus/instances/desk/"
        " && echo amber > sys/vbus/devices/led/color",
        check=True,
    )
    shown = vbus_mount.sh(
        "cat sys/vbus/devices/led/color sys/vbus/instances/desk/devices/0/type", check=True
    )
    assert shown.stdout == "amber\nblink-led\n"
    refused = vbus_mount.sh("echo purple > sys/vbus/devices/led/color")
    assert refused.returncode != 0 and "Invalid argument" in refused.stderr
    readonly = vbus_mount.sh("echo blink-9 > sys/vbus/devices/led/serial")
    assert "Permission denied" in readonly.stderr
    vbus_mount.sh("rm config/vbus/instances/desk/led && rmdir config/vbus/devices/led", check=True)
