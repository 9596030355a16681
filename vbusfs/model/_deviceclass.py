"""The deviceclass contract: what a plugin implements to become a kind of device.

A deviceclass is registered once per model. Setting a device's type calls
`create`, which builds the class's private per-device state (or refuses with a
`VbusError`); linking the device into a bus calls `attach` for the new
interface. `destroy` and `detach` are the drop steps and cannot fail, as in
configfs. Attributes live in two tables: `attributes` (owner: the device
state) and `interface_attributes` (owner: the interface state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ._attributes import AttributeTable


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """What a deviceclass learns about an interface being attached."""

    bus: str
    id: int
    name: str


class DeviceClass:
    """Base class of every deviceclass.

    Subclasses set `name`, `interface_type` and the attribute tables, and
    override the steps they need. `multi_bus` classes may sit on several
    buses at once (their interfaces are named `<bus>.<id>`); the others are
    refused a second link with EBUSY.
    """

    name: ClassVar[str] = ""
    interface_type: ClassVar[str] = ""
    multi_bus: ClassVar[bool] = False
    attributes: ClassVar[AttributeTable] = ()
    interface_attributes: ClassVar[AttributeTable] = ()

    def create(self, device_name: str) -> Any:
        """Build the per-device state; raise a VbusError to refuse the type."""
        return None

    def destroy(self, state: Any) -> None:
        """Release the per-device state. Must not fail."""

    def attach(self, state: Any, interface: InterfaceInfo) -> Any:
        """Build the per-interface state; raise a VbusError to refuse the link."""
        return None

    def detach(self, state: Any, interface_state: Any) -> None:
        """Release the per-interface state. Must not fail."""

    def __repr__(self) -> str:
        return f"<deviceclass {self.name}>"
