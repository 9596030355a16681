"""The connector: how member processes reach the devices on their bus.

`_protocol` is the pure protocol core both roles share (no I/O); `_rights`
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
    "PROTOCOL",
    "RECEIVE",
    "XATTR",
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
    "Reply",
    "Request",
    "Stray",
    "Welcome",
    "WireError",
    "error_fields",
    "interface_entries",
    "pack_bytes",
    "received",
    "rights",
    "unpack_bytes",
]
