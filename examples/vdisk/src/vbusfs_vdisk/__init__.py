"""vbusfs_vdisk: a virtual block device for vbusfs, written as a third party would.

The device (`Vdisk`, class name `vdisk`, interface type `virtual-disk`) keeps
its bytes in memory or in a file (`backing`), `size` bytes of them, read-only
or not (`readonly`), and serves a client's READ, WRITE and FLUSH requests over
two rings (`vbusfs.device.RequestResponseConnection`) plus two device calls,
CAPACITY and FLUSH. The wire format is `vbusfs_vdisk.protocol`; `Disk` is the
whole data path (a backing and the request handler), shared by the device and
anything else that speaks the protocol.

A member process of the device's bus uses `VdiskClient` (sync) or
`AsyncVdiskClient` (trio)::

    from vbusfs import client
    from vbusfs_vdisk import VdiskClient

    with client.connect(mnt) as bus, VdiskClient.open(bus, 0) as disk:
        disk.write(0, b"x" * 512)
        assert disk.read(0, 512) == b"x" * 512

Importing this package loads only the protocol: `Vdisk` (the daemon's side,
vbusfs.device), `VdiskClient` (vbusfs.client) and `AsyncVdiskClient` (trio)
are imported on first use, so a client never loads the daemon's model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import protocol
from ._backing import MAX_MEMORY_SIZE, Backing, FileBacking, MemoryBacking
from ._disk import Disk
from ._pipeline import Completion, Pipeline
from .protocol import SECTOR, VERSION, Capacity, ProtocolError

if TYPE_CHECKING:
    from ._client import VdiskClient
    from ._deviceclass import MAX_TRANSFER, ThreadVdisk, Vdisk, VdiskConnection, VdiskState
    from ._trio_client import AsyncVdiskClient

_LAZY = {
    "Vdisk": "_deviceclass",
    "ThreadVdisk": "_deviceclass",
    "VdiskConnection": "_deviceclass",
    "VdiskState": "_deviceclass",
    "MAX_TRANSFER": "_deviceclass",
    "VdiskClient": "_client",
    "AsyncVdiskClient": "_trio_client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "MAX_MEMORY_SIZE",
    "MAX_TRANSFER",
    "SECTOR",
    "VERSION",
    "AsyncVdiskClient",
    "Backing",
    "Capacity",
    "Completion",
    "Disk",
    "FileBacking",
    "MemoryBacking",
    "Pipeline",
    "ProtocolError",
    "ThreadVdisk",
    "Vdisk",
    "VdiskClient",
    "VdiskConnection",
    "VdiskState",
    "protocol",
]
