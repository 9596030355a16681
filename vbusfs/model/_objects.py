"""The model's nouns: device, bus, interface. Plain state, no behaviour of note.

The root model (`Vbus`) is the only code that changes these objects; views
and adapters read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._deviceclass import DeviceClass


@dataclass(eq=False)
class Device:
    """A root-level device: untyped until a deviceclass name is stored in `type`."""

    name: str
    deviceclass: DeviceClass | None = None
    state: Any = None
    # interface name -> interface, in order of registration
    interfaces: dict[str, Interface] = field(default_factory=dict)
    alive: bool = True

    @property
    def typed(self) -> bool:
        return self.deviceclass is not None

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

    def __repr__(self) -> str:
        return f"<bus {self.name}>"


@dataclass(eq=False)
class Interface:
    """The presence of one device on one bus, created by a link."""

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

    def __repr__(self) -> str:
        return f"<interface {self.bus.name}/{self.id} -> {self.device.name}>"


def interface_name(device: Device, bus_name: str, interface_id: int) -> str:
    # Single-bus classes use the bus-local id, as the original did; classes on
    # several buses qualify it so names under interfaces/ never collide.
    if device.deviceclass is not None and device.deviceclass.multi_bus:
        return f"{bus_name}.{interface_id}"
    return str(interface_id)
