"""The connector: how member processes reach the devices on their bus.

`_protocol` is the pure protocol core both roles share (no I/O), `_records` the
monitor's records (no I/O either); `_rights`
builds and parses the fds beside a datagram; `venet` holds the venet ABI
numbers. `Connector`, the daemon side, is loaded only when asked for, so
`vbusfs.client` (the client side) can import this package without the
daemon's trio, deviceclasses and model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._limits import Limits
from ._protocol import (
    CLOSED,
    DEFAULT_TIMEOUT,
    MAX_FDS,
    MAX_MESSAGE,
    PROTOCOL,
    XATTR,
    ClientConnection,
    Closed,
    ConnectorError,
    ConnectorTimeout,
    DaemonConnection,
    Datagram,
    Event,
    Heard,
    InterfaceEntry,
    Reply,
    Request,
    Stray,
    Welcome,
    WireError,
    error_fields,
    interface_entries,
    pack_bytes,
    unpack_bytes,
)
from ._records import BUFFER as MONITOR_BUFFER
from ._records import Backlog, Record, Scope, decode_records, lost_between
from ._rights import RECEIVE, received, rights

if TYPE_CHECKING:
    from ._server import ClientFault, Connector


def __getattr__(name: str) -> Any:
    if name in ("ClientFault", "Connector"):
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLOSED",
    "DEFAULT_TIMEOUT",
    "MAX_FDS",
    "MAX_MESSAGE",
    "MONITOR_BUFFER",
    "PROTOCOL",
    "RECEIVE",
    "XATTR",
    "Backlog",
    "ClientConnection",
    "ClientFault",
    "Closed",
    "Connector",
    "ConnectorError",
    "ConnectorTimeout",
    "DaemonConnection",
    "Datagram",
    "Event",
    "Heard",
    "InterfaceEntry",
    "Limits",
    "Record",
    "Reply",
    "Request",
    "Scope",
    "Stray",
    "Welcome",
    "WireError",
    "decode_records",
    "error_fields",
    "interface_entries",
    "lost_between",
    "pack_bytes",
    "received",
    "rights",
    "unpack_bytes",
]
