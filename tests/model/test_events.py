"""The model's change stream (`Vbus.changes`) and `DeviceClass.notify`, with no mount."""

from __future__ import annotations

import queue
import random
import threading

import pytest

from vbusfs.classes import VenetLoopback, VenetSwitch, VenetTap
from vbusfs.model import (
    Attribute,
    AttributeChanged,
    AttributeStored,
    BusCreated,
    BusRemoved,
    Change,
    ClassLoaded,
    ClassUnloaded,
    DeviceClass,
    DeviceCreated,
    DeviceRemoved,
    Linked,
    PermStored,
    TypeSet,
    Unlinked,
    Vbus,
    VbusError,
)


class Counting(DeviceClass):
    """A class whose `count` changes by itself, per device and per interface."""

    name = "counting"
    interface_type = "counting"
    multi_bus = True
    attributes = (Attribute("count", lambda state: str(state["count"])),)
    interface_attributes = (Attribute("seen", lambda state: "0"),)

    def create(self, device_name: str) -> dict[str, int]:
        return {"count": 0}

    def attach(self, state: dict[str, int], interface: object) -> dict[str, int]:
        return {"seen": 0}


@pytest.fixture
def vbus() -> Vbus:
    model = Vbus()
    for cls in (VenetTap, VenetLoopback, VenetSwitch):
        model.load_class(cls(rng=random.Random(1)))
    model.load_class(Counting())
    return model


def heard(vbus: Vbus) -> list[Change]:
    got: list[Change] = []
    vbus.changes.subscribe(got.append)
    return got


def test_every_change_of_the_trees_is_published_once_in_order(vbus):
    got = heard(vbus)
    vbus.create_device("S")
    vbus.set_device_type("S", "venet-switch")
    bus = vbus.create_bus("B")
    interface = vbus.link("B", "S", "S")
    device = vbus.devices["S"]
    vbus.store_attribute(interface, "client_mac", "02:00:00:00:00:01")
    vbus.store_perm(bus, "mode", "0770")
    vbus.unlink("B", "S")
    vbus.remove_device("S")
    vbus.remove_bus("B")
    assert got == [
        DeviceCreated(device),
        TypeSet(device),
        BusCreated(bus),
        Linked(interface),
        AttributeStored(interface, "client_mac"),
        PermStored(bus, "mode"),
        Unlinked(interface),
        DeviceRemoved(device),
        BusRemoved(bus),
    ]


def test_a_refused_change_publishes_nothing(vbus):
    vbus.create_device("T")
    vbus.set_device_type("T", "venet-tap")
    got = heard(vbus)
    device = vbus.devices["T"]
    for call in (
        lambda: vbus.create_device("T"),
        lambda: vbus.set_device_type("T", "venet-tap"),
        lambda: vbus.store_attribute(device, "enabled", "7"),
        lambda: vbus.link("nowhere", "T", "T"),
    ):
        with pytest.raises(VbusError):
            call()
    assert got == []


def test_a_subscriber_that_raises_fails_neither_the_model_nor_the_others(vbus):
    def broken(change: Change) -> None:
        raise RuntimeError("a bug in a subscriber")

    vbus.changes.subscribe(broken)
    got = heard(vbus)
    vbus.create_device("D")  # succeeds, and is published to the others
    assert "D" in vbus.devices and got == [DeviceCreated(vbus.devices["D"])]
    assert [type(exc) for _, exc in vbus.changes.faults] == [RuntimeError]


def test_notify_names_the_owner_of_a_state_and_only_a_live_one(vbus):
    deviceclass = vbus.classes["counting"]
    vbus.create_device("C")
    vbus.set_device_type("C", "counting")
    vbus.create_bus("B")
    interface = vbus.link("B", "C", "C")
    device = vbus.devices["C"]
    got = heard(vbus)
    deviceclass.notify(device.state, "count")
    deviceclass.notify(interface.state, "seen")
    deviceclass.notify(interface.state, "count")  # not an interface attribute: nobody
    with pytest.raises(ValueError):
        deviceclass.notify(device.state, "no-such-attribute")
    vbus.unlink("B", "C")
    got.clear()
    deviceclass.notify(interface.state, "seen")  # its interface is gone
    assert got == []
    deviceclass.notify(device.state, "count")
    assert got == [AttributeChanged(device, "count")]


def test_notify_from_another_thread_reaches_the_model_thread_once_per_burst(vbus):
    calls: queue.SimpleQueue = queue.SimpleQueue()
    vbus.changes.serve_from(calls.put)  # this thread is the model's; calls queue up
    vbus.create_device("C")
    vbus.set_device_type("C", "counting")
    device = vbus.devices["C"]
    got = heard(vbus)
    threads = [
        threading.Thread(target=lambda: vbus.classes["counting"].notify(device.state, "count"))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == []  # nothing ran outside the model's thread
    handed = []
    while not calls.empty():
        handed.append(calls.get())
    assert len(handed) == 1  # one hand-off for the burst
    handed[0]()
    assert got == [AttributeChanged(device, "count")]


def test_a_class_notifies_every_model_that_loaded_it_until_unloaded():
    shared = Counting()
    first, second = Vbus(), Vbus()
    got_loads = heard(first)
    first.load_class(shared)
    second.load_class(shared)
    assert got_loads == [ClassLoaded("counting")]
    got = heard(second)
    second.unload_class("counting")
    assert got == [ClassUnloaded("counting")]
    first.create_device("C")
    first.set_device_type("C", "counting")
    got_first = heard(first)
    shared.notify(first.devices["C"].state, "count")
    assert got_first == [AttributeChanged(first.devices["C"], "count")]
    assert len(got) == 1  # the model that unloaded it hears nothing more
