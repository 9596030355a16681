"""The client side of the connector: open the devices on your bus and move frames.

A process that is a member of a bus (see `proc/<pid>/vbus`) connects with
nothing but the mount point::

    from vbusfs import client

    with client.connect("/mnt/vbus") as bus:
        print(bus.name, bus.interfaces())
        with bus.open_venet(0) as nic:
            nic.send(frame)
            reply = nic.recv(timeout=1.0)

A venet interface negotiates the original's capabilities before its link comes up
(behaviour §7.4): with SG granted, frames carry a 10-byte virtio-net header and may be
large segments; with EVQ_LINKSTATE, carrier changes arrive as `device` events::

    from vbusfs.connector import venet
    caps = {venet.CAP_GROUP_SG: venet.CAP_SG | venet.CAP_TSO4,
            venet.CAP_GROUP_EVENTQ: venet.CAP_EVQ_LINKSTATE}
    with bus.open_venet(0, capabilities=caps) as nic:   # nic.granted: what was granted
        nic.send(venet.vnet_header() + frame)
        up = client.linkstate(bus.wait_event())           # True / False
        nic.flush_rx()                                     # FLUSHRX: buffers back, reposted

Any device on the bus opens the same way, with its class's interface version;
`find_mounts()` lists the vbusfs mounts this process sees::

    mnt = client.find_mounts()[0]
    with client.connect(mnt) as bus, bus.open(0, 1) as dev:
        dev.call(0, b"...")                       # a device call
        dev.attach_queue(0, ring)                 # the ring now watches dev.hangup

A request/response device (vbusfs.device.RequestResponseConnection) has a driver:
`RequestResponseClient(dev, count=64, slot_size=4096, window=32)` with
`submit`, `complete`, `complete_into`, `request` (and the trio face,
`AsyncRequestResponseClient`).

The daemon learns who is calling from the kernel, so a process that is on no
bus is refused (`PermissionError`), and a client sees only its own bus. Every
request waits for the daemon at most `timeout` seconds (`connect(..., timeout=)`,
5 by default): a stopped or wedged daemon raises `ConnectorTimeout` (ETIMEDOUT). Device
add and drop events arrive as they happen (`Client.events()`,
`Client.wait_event()`). Everything is released when the client closes or
exits, however it exits.

`monitor(mountpoint)` watches the mount instead (what `vbusfs monitor` prints): every
change as a `Record`, for the daemon's owner and root; a member hears its own bus::

    with client.monitor("/mnt/vbus") as watch:
        for record in watch.records():   # ends at the unmount
            print(record.line())

(`monitor_async` and `AsyncMonitor` are its trio face.)

Two faces over one protocol core (`vbusfs.connector`): the sync face here, and
a trio face (`connect_async`, `AsyncClient`, `AsyncVenet`) imported on first
use. Importing this package must never load trio, pyfuse3, the daemon's
connector server, the deviceclasses or the model: every member process pays
for what it imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vbusfs.connector import (
    DEFAULT_TIMEOUT,
    ConnectorError,
    ConnectorTimeout,
    Event,
    InterfaceEntry,
    Record,
    WireError,
)
from vbusfs.connector.venet import (
    EVENT_LINKSTATE,
    FLUSHRX,
    LINKDOWN,
    LINKUP,
    MACQUERY,
    MAX_FRAME,
    NEGCAP,
    RX_QUEUE,
    TX_QUEUE,
)
from vbusfs.connector.venet import VERSION as VENET_VERSION

from ._common import find_connector, find_mounts
from ._driver import RequestResponseClient
from ._monitor import Monitor, monitor
from ._sync import Client, OpenInterface, Venet, connect


def linkstate(event: Event) -> bool | None:
    """A venet's carrier from a `device` event (EVQ_LINKSTATE granted): True up, False
    down; None for any other event."""
    if event.kind != "device" or event.device_kind != EVENT_LINKSTATE:
        return None
    return bool(event.data.get("up"))


if TYPE_CHECKING:
    from ._trio import AsyncClient, AsyncOpenInterface, AsyncVenet
    from ._trio_driver import AsyncRequestResponseClient
    from ._trio_monitor import AsyncMonitor


async def connect_async(mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> AsyncClient:
    """`connect` for trio programs: the same protocol on a trio socket."""
    from ._trio import connect_async

    return await connect_async(mountpoint, timeout=timeout)


async def monitor_async(
    mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT
) -> AsyncMonitor:
    """`monitor` for trio programs: records on a trio socket."""
    from ._trio_monitor import monitor_async

    return await monitor_async(mountpoint, timeout=timeout)


def __getattr__(name: str) -> Any:
    # the trio face, loaded (with trio) only when a program asks for it
    if name in ("AsyncClient", "AsyncOpenInterface", "AsyncVenet"):
        from . import _trio

        return getattr(_trio, name)
    if name == "AsyncMonitor":
        from . import _trio_monitor

        return _trio_monitor.AsyncMonitor
    if name == "AsyncRequestResponseClient":
        from . import _trio_driver

        return _trio_driver.AsyncRequestResponseClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TIMEOUT",
    "EVENT_LINKSTATE",
    "FLUSHRX",
    "LINKDOWN",
    "LINKUP",
    "MACQUERY",
    "MAX_FRAME",
    "NEGCAP",
    "RX_QUEUE",
    "TX_QUEUE",
    "VENET_VERSION",
    "AsyncClient",
    "AsyncMonitor",
    "AsyncOpenInterface",
    "AsyncRequestResponseClient",
    "AsyncVenet",
    "Client",
    "ConnectorError",
    "ConnectorTimeout",
    "Event",
    "InterfaceEntry",
    "Monitor",
    "OpenInterface",
    "Record",
    "RequestResponseClient",
    "Venet",
    "WireError",
    "connect",
    "connect_async",
    "find_connector",
    "find_mounts",
    "linkstate",
    "monitor",
    "monitor_async",
]
