"""The deviceclass contract: what a plugin implements to become a kind of device.

A deviceclass is registered once per model. Setting a device's type calls
`create`, which builds the class's private per-device state (or refuses with a
`VbusError`); linking the device into a bus calls `attach` for the new
interface. `destroy` and `detach` are the drop steps and cannot fail, as in
configfs. Attributes live in two tables, one per attribute owner:
`attributes` (of the device; show and store receive the device state) and
`interface_attributes` (of each interface; they receive the interface state).
No attribute may take a name the trees reserve (`DEVICE_ENTRIES`,
`INTERFACE_ENTRIES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ._attributes import AttributeTable
from ._errors import InvalidValue, NotPermitted


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """What a deviceclass learns about an interface being attached."""

    bus: str
    id: int
    name: str


class DeviceConnection:
    """One client's open of one interface: device calls, queues, the data mover.

    Made by `DeviceClass.open`; the connector calls `close` exactly once, when
    the client closes it, the client goes away, or the interface is dropped.
    """

    def call(self, function: int, data: bytes) -> bytes:
        """A device call: function number and bytes in, bytes out (VbusError on failure)."""
        raise InvalidValue(f"function {function} is not supported")

    def attach_queue(self, index: int, fds: Sequence[int]) -> None:
        """Take the ring, data segment and wake-up fds the client made for queue `index`.

        The fds stay the caller's: keep duplicates if they must outlive the call.
        """
        raise InvalidValue(f"this device has no queue {index}")

    async def run(self) -> None:
        """Move data until cancelled (runs in the daemon's event loop)."""

    def stats(self) -> dict[str, int]:
        """Counters a client may read (frames moved, dropped, ...)."""
        return {}

    def close(self) -> None:
        """Release everything the connection holds. Must not fail."""


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

    #: interface versions a client may open; empty: devices of this class cannot be opened
    versions: ClassVar[frozenset[int]] = frozenset()

    def open(self, state: Any, interface_state: Any, version: int) -> DeviceConnection:
        """Open the device for one client; raise a VbusError (EBUSY, ...) to refuse."""
        raise NotPermitted(f"devices of class {self.name} cannot be opened")

    def __repr__(self) -> str:
        return f"<deviceclass {self.name}>"
