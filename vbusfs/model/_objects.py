"""The model's nouns: device, bus, interface. Plain state, no behaviour of note.

Devices and interfaces are both attribute owners: their deviceclass declares
a table of attributes for each, whose show and store receive the owner's
`state`. The root model (`Vbus`) is the only code that changes these
objects; views and adapters read them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._attributes import AttributeTable
from ._deviceclass import DeviceClass
from ._names import DEVICE_ENTRIES, INTERFACE_ENTRIES, qualified_interface_name
from ._perms import BusPerms


class AttributeOwner:
    """What attribute files hang off (a configfs item): a `Device` or an `Interface`.

    `Vbus.attributes(owner)`, `Vbus.show_attribute(owner, name)` and
    `Vbus.store_attribute(owner, name, value)` serve both alike.
    """

    #: "device" or "interface": the owner's noun in messages and indexes
    noun: ClassVar[str]
    #: the entries the sys view gives the owner's directory; no attribute may take them
    entries: ClassVar[tuple[str, ...]]
    #: what the deviceclass's show and store steps receive
    state: Any
    #: False once the owner is removed: its open attribute files answer ENODEV
    alive: bool

    @property
    def owner_class(self) -> DeviceClass | None:
        """The deviceclass that declares the owner's attributes (None: untyped)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """How messages name the owner: `device D` or `interface B/id`."""
        raise NotImplementedError

    @staticmethod
    def declared_attributes(deviceclass: DeviceClass) -> AttributeTable:
        """The table of `deviceclass` that declares attributes of this kind of owner."""
        raise NotImplementedError


@dataclass(eq=False)
class Device(AttributeOwner):
    """A root-level device: untyped until a deviceclass name is stored in `type`."""

    noun: ClassVar[str] = "device"
    entries: ClassVar[tuple[str, ...]] = DEVICE_ENTRIES

    name: str
    deviceclass: DeviceClass | None = None
    state: Any = None
    # interface name -> interface, in order of registration
    interfaces: dict[str, Interface] = field(default_factory=dict)
    alive: bool = True

    @property
    def typed(self) -> bool:
        return self.deviceclass is not None

    @property
    def owner_class(self) -> DeviceClass | None:
        return self.deviceclass

    @property
    def label(self) -> str:
        return f"{self.noun} {self.name}"

    @staticmethod
    def declared_attributes(deviceclass: DeviceClass) -> AttributeTable:
        return deviceclass.attributes

    def __repr__(self) -> str:
        kind = self.deviceclass.name if self.deviceclass else "untyped"
        return f"<device {self.name} ({kind})>"


@dataclass(eq=False)
class Bus:
    """A bus instance: a container of interfaces, seen only by its members."""

    name: str
    # next interface id to hand out; ids are never reused in a bus's life
    next_id: int = 0
    # link name (the entry in config/vbus/instances/<bus>/) -> interface
    links: dict[str, Interface] = field(default_factory=dict)
    # interface id -> interface, in order of registration
    interfaces: dict[int, Interface] = field(default_factory=dict)
    alive: bool = True
    # who may join it (behaviour §6); the state of the perms/ attribute table
    perms: BusPerms = field(default_factory=BusPerms)

    def may_join(self, uid: int, gids: Collection[int]) -> bool:
        """May a process with effective `uid` and groups `gids` join this bus and use it?"""
        return self.perms.may_join(uid, gids)

    def __repr__(self) -> str:
        return f"<bus {self.name}>"


@dataclass(eq=False)
class Interface(AttributeOwner):
    """The presence of one device on one bus, created by a link."""

    noun: ClassVar[str] = "interface"
    entries: ClassVar[tuple[str, ...]] = INTERFACE_ENTRIES

    bus: Bus
    device: Device
    id: int
    link_name: str
    state: Any = None
    alive: bool = True

    @property
    def type(self) -> str:
        assert self.device.deviceclass is not None
        return self.device.deviceclass.interface_type

    @property
    def name(self) -> str:
        """The entry name under the device's `interfaces/`."""
        return interface_name(self.device, self.bus.name, self.id)

    @property
    def owner_class(self) -> DeviceClass | None:
        return self.device.deviceclass

    @property
    def label(self) -> str:
        return f"{self.noun} {self.bus.name}/{self.id}"

    @staticmethod
    def declared_attributes(deviceclass: DeviceClass) -> AttributeTable:
        return deviceclass.interface_attributes

    def __repr__(self) -> str:
        return f"<interface {self.bus.name}/{self.id} -> {self.device.name}>"


def interface_name(device: Device, bus_name: str, interface_id: int) -> str:
    # Single-bus classes use the bus-local id, as the original did; classes on
    # several buses qualify it so names under interfaces/ never collide.
    if device.deviceclass is not None and device.deviceclass.multi_bus:
        return qualified_interface_name(bus_name, interface_id)
    return str(interface_id)
