"""The built-in deviceclasses pass the conformance machine, and the machine catches bugs."""

from __future__ import annotations

import errno
import random

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky

from vbusfs.classes import SwitchState, VenetLoopback, VenetSwitch, VenetTap
from vbusfs.model import Attribute, Device, DeviceClass, InvalidValue
from vbusfs.testing import (
    DeviceClassConformance,
    FakeTapFactory,
    attribute_values,
    choice_values,
    interface_attribute_values,
)


class VenetTapConformance(DeviceClassConformance):
    values = attribute_values("venet-tap")
    # enabling names the host interface (a dependency venet-tap does not declare itself)
    affects = {"enabled": ("ifname",)}

    def make_deviceclass(self) -> VenetTap:
        # a host-free factory: the machine must never open /dev/net/tun
        self.taps = FakeTapFactory()
        return VenetTap(rng=random.Random(0), open_tap=self.taps)  # type: ignore[arg-type]

    def class_state(self) -> object:
        return len(self.taps.live)

    def check_device(self, device: Device) -> None:
        state = device.state
        assert (state.tap is not None) == state.enabled
        shown = self.vbus.show_attribute(device, "ifname")
        assert shown == (state.tap.name if state.enabled else "<disabled>")


class VenetLoopbackConformance(DeviceClassConformance):
    deviceclass = VenetLoopback
    values = attribute_values("venet-loopback")


class VenetSwitchConformance(DeviceClassConformance):
    deviceclass = VenetSwitch
    values = attribute_values("venet-switch")
    interface_values = interface_attribute_values("venet-switch")

    def check_device(self, device: Device) -> None:
        state: SwitchState = device.state
        assert set(state.ports) == set(device.interfaces)
        assert self.vbus.show_attribute(device, "ports").split() == list(device.interfaces)
        # the machine closes every connection it opens: no client, no data-path index
        assert not state.connections and not state.indices


# A step of these machines costs well under a millisecond: ask for more than the ci
# profile's 20 programs, never fewer than the loaded profile gives.
DEEPER = settings(
    max_examples=max(settings.default.max_examples, 100),
    stateful_step_count=max(settings.default.stateful_step_count, 30),
)

TestVenetTapConformance = VenetTapConformance.TestCase
TestVenetTapConformance.settings = DEEPER
TestVenetLoopbackConformance = VenetLoopbackConformance.TestCase
TestVenetLoopbackConformance.settings = DEEPER
TestVenetSwitchConformance = VenetSwitchConformance.TestCase
TestVenetSwitchConformance.settings = DEEPER


# -- the machine finds broken classes ------------------------------------------


class _State:
    def __init__(self) -> None:
        self.color = "red"


class _Lenient(DeviceClass):
    """Accepts any color: a store of junk is not refused."""

    name = "lenient"
    interface_type = "test"
    attributes = (Attribute("color", lambda s: s.color, lambda s, v: setattr(s, "color", v)),)

    def create(self, device_name: str) -> _State:
        return _State()


class _HalfStore(DeviceClass):
    """Changes the value before it refuses it: a refusal that changes something."""

    name = "half-store"
    interface_type = "test"

    @staticmethod
    def _store(state: _State, value: str) -> None:
        state.color = value
        if value not in ("red", "green"):
            raise InvalidValue("no such color")

    attributes = (Attribute("color", lambda s: s.color, _store),)

    def create(self, device_name: str) -> _State:
        return _State()


class _Leaky(DeviceClass):
    """Keeps a registry of its devices and never forgets one."""

    name = "leaky"
    interface_type = "test"

    def __init__(self) -> None:
        self.registry: set[str] = set()

    def create(self, device_name: str) -> None:
        self.registry.add(device_name)


class _WrongErrno(DeviceClass):
    """Refuses a bad value with EPERM instead of EINVAL."""

    name = "wrong-errno"
    interface_type = "test"

    @staticmethod
    def _store(state: _State, value: str) -> None:
        if value not in ("red", "green"):
            raise InvalidValue("no such color", errno=errno.EPERM)
        state.color = value

    attributes = (Attribute("color", lambda s: s.color, _store),)

    def create(self, device_name: str) -> _State:
        return _State()


COLORS = {"color": choice_values(["red", "green"])}
QUICK = settings(
    max_examples=200,
    stateful_step_count=20,
    deadline=None,
    database=None,
    phases=[Phase.generate],  # the first failure is enough: no time spent shrinking
    suppress_health_check=list(HealthCheck),
)


def run_machine(machine: type[DeviceClassConformance]) -> None:
    test = machine.TestCase("runTest")
    test.settings = QUICK
    test.runTest()


class LenientConformance(DeviceClassConformance):
    deviceclass = _Lenient
    values = COLORS


class HalfStoreConformance(DeviceClassConformance):
    deviceclass = _HalfStore
    values = COLORS


class LeakyConformance(DeviceClassConformance):
    deviceclass = _Leaky

    def class_state(self) -> object:
        return frozenset(self.instance.registry)  # type: ignore[attr-defined]


class WrongErrnoConformance(DeviceClassConformance):
    deviceclass = _WrongErrno
    values = COLORS


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        (LenientConformance, "must refuse it"),
        (HalfStoreConformance, "changed the model or the class"),
        (LeakyConformance, "kept state after all its devices were removed"),
        (WrongErrnoConformance, "not EINVAL"),
    ],
)
def test_conformance_machine_catches_a_broken_class(machine, message):
    with pytest.raises((AssertionError, Flaky)) as caught:
        run_machine(machine)
    assert message in str(caught.value)


def test_conformance_machine_says_which_writable_attributes_have_no_values():
    class Missing(DeviceClassConformance):
        deviceclass = VenetLoopback

    missing = r"missing \['burstthresh', 'client_mac', 'enabled', 'mtu', 'txmitigation'\]"
    with pytest.raises(TypeError, match=missing):
        Missing()


def test_conformance_machine_needs_a_deviceclass():
    with pytest.raises(TypeError, match="must set `deviceclass`"):
        DeviceClassConformance()
