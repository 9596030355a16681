"""Interface entry names stay within NAME_MAX (behaviour §3): stable, unique, refused
only when a bus is named like another's shortened name."""

from __future__ import annotations

import errno
import random

import pytest

from vbusfs.classes import VenetSwitch
from vbusfs.model import Attribute, DeviceClass, Vbus, VbusError
from vbusfs.model._names import NAME_MAX, qualified_interface_name


def test_long_bus_names_are_cut_with_a_digest_of_the_whole_name():
    assert qualified_interface_name("B", 7) == "B.7"
    exact = "x" * (NAME_MAX - 2)
    assert qualified_interface_name(exact, 1) == exact + ".1"  # 255 bytes: as it is
    names = {qualified_interface_name("é" * 120 + tail, 12) for tail in ("a", "b", "é")}
    assert len(names) == 3  # one prefix, three digests
    for name in names:
        raw = name.encode()
        assert len(raw) <= NAME_MAX and raw.endswith(b".12")
        raw.decode("utf-8")  # cut between characters, never inside one
    # stable: the same bus and id always give the same name
    assert qualified_interface_name("é" * 120 + "a", 12) in names


def test_a_bus_named_like_another_buses_shortened_name_is_refused_changing_nothing():
    vbus = Vbus()
    vbus.load_class(VenetSwitch(rng=random.Random(1)))
    long_name = "b" * NAME_MAX
    short = qualified_interface_name(long_name, 0).rsplit(".", 1)[0]
    for bus in (long_name, short):
        vbus.create_bus(bus)
    vbus.create_device("S")
    vbus.set_device_type("S", "venet-switch")
    vbus.link(long_name, "S", "S")
    before = vbus.snapshot()
    with pytest.raises(VbusError) as info:
        vbus.link(short, "S", "S")
    assert info.value.errno == errno.EEXIST
    assert vbus.snapshot() == before


@pytest.mark.parametrize(
    ("attribute", "code"), [("a" * 256, errno.ENAMETOOLONG), ("a/b", errno.EINVAL)]
)
def test_a_class_whose_attribute_names_no_entry_could_carry_is_refused(attribute, code):
    class Wide(DeviceClass):
        name = "wide"
        interface_type = "wide-interface"
        attributes = (Attribute(attribute, lambda state: "x"),)

    vbus = Vbus()
    with pytest.raises(VbusError) as info:
        vbus.load_class(Wide())
    assert info.value.errno == code and vbus.classes == {}
