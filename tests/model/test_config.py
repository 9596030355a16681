"""Saving and restoring a configuration loses nothing, interface ids included."""

from __future__ import annotations

import copy
import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vbusfs.classes import VenetLoopback, VenetSwitch, VenetTap
from vbusfs.model import ConfigError, Vbus, dump_config, restore_config


class NoTap:
    """The host TAP is not what these model tests are about (mount tests use real ones)."""

    def __init__(self, mac: bytes) -> None:
        self.name = "none"

    def close(self) -> None:
        pass


def model() -> Vbus:
    vbus = Vbus()
    vbus.load_class(VenetTap(rng=random.Random(1), open_tap=NoTap))
    vbus.load_class(VenetLoopback(rng=random.Random(2)))
    vbus.load_class(VenetSwitch(rng=random.Random(3)))
    return vbus


NAMES = st.sampled_from([f"n{i}" for i in range(6)])
CLASSES = st.sampled_from([None, "venet-tap", "venet-loopback", "venet-switch"])
MACS = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))


@st.composite
def topologies(draw: st.DrawFn) -> Vbus:
    vbus = model()
    for name in draw(st.sets(NAMES, max_size=5)):
        vbus.create_device(name)
        kind = draw(CLASSES)
        if kind is not None:
            vbus.set_device_type(name, kind)
            device = vbus.devices[name]
            if kind != "venet-switch":
                vbus.store_attribute(device, "client_mac", draw(MACS))
                vbus.store_attribute(device, "enabled", draw(st.sampled_from(["0", "1"])))
            if kind == "venet-tap":
                vbus.store_attribute(device, "burstthresh", str(draw(st.integers(0, 999))))
    for bus in draw(st.sets(NAMES, max_size=4)):
        vbus.create_bus(bus)
    steps = draw(st.lists(st.tuples(NAMES, NAMES, st.booleans()), max_size=15))
    for bus, device, unlink_after in steps:
        if bus not in vbus.buses or device not in vbus.devices:
            continue
        try:
            interface = vbus.link(bus, device, device)
        except Exception:
            continue
        if interface.device.deviceclass.name == "venet-switch":
            vbus.store_attribute(interface, "client_mac", draw(MACS))
        if unlink_after:
            vbus.unlink(bus, device)  # leaves a gap in the ids
    return vbus


@given(topologies())
def test_dump_restore_round_trip(vbus):
    saved = json.loads(json.dumps(dump_config(vbus)))
    rebuilt = model()
    restore_config(rebuilt, saved)
    again = dump_config(rebuilt)
    # host MACs are not writable, so they are chosen anew; all else is equal
    assert again == dump_config(vbus)
    assert rebuilt.snapshot() == vbus.snapshot()


def test_restored_buses_keep_counting_from_their_saved_ids():
    vbus = model()
    vbus.create_bus("b")
    for name in ("x", "y", "z"):
        vbus.create_device(name)
        vbus.set_device_type(name, "venet-loopback")
        vbus.link("b", name, name)
    vbus.unlink("b", "y")
    rebuilt = model()
    restore_config(rebuilt, dump_config(vbus))
    assert sorted(rebuilt.buses["b"].interfaces) == [0, 2]
    assert rebuilt.link("b", "y", "y").id == 3


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="other"), "not a vbusfs-config file"),
        (lambda d: d.update(version=9), "unsupported version"),
        (lambda d: d.update(devices={}), "'devices' must be a list"),
        (lambda d: d["buses"][0].update(next_id=0), "must be below the bus's next_id"),
        (lambda d: d["devices"][0].update(type="no-such-class"), "cannot restore"),
        (lambda d: d["classes"].append("missing-class"), "not loaded here: missing-class"),
        (lambda d: d["buses"][0]["links"][0].update(device="ghost"), "cannot restore"),
        (lambda d: d["devices"][0]["attributes"].update(enabled="7"), "cannot restore"),
    ],
)
def test_a_bad_configuration_is_refused_and_leaves_the_model_empty(mutate, message):
    vbus = model()
    vbus.create_device("d")
    vbus.set_device_type("d", "venet-loopback")
    vbus.create_bus("b")
    vbus.link("b", "d", "d")
    data = copy.deepcopy(dump_config(vbus))
    mutate(data)
    fresh = model()
    with pytest.raises(ConfigError) as info:
        restore_config(fresh, data)
    assert message in str(info.value)
    assert not fresh.devices and not fresh.buses
