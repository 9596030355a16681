"""The connector: how member processes reach the devices on their bus.

`Connector` is the daemon side; the client side is `vbusfs.client`.
"""

from ._server import ClientFault, Connector
from ._wire import MAX_MESSAGE, PROTOCOL, XATTR, WireError

__all__ = ["MAX_MESSAGE", "PROTOCOL", "XATTR", "ClientFault", "Connector", "WireError"]
