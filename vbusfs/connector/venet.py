"""The venet ABI (behaviour §7.4): the numbers a venet device and its driver agree on.

Data only, imported by the device side (`vbusfs.classes`) and the driver side
(`vbusfs.client`) alike, so the two cannot drift apart. It must import nothing.
"""

from __future__ import annotations

#: the interface type every venet device offers its buses
INTERFACE_TYPE = "virtual-ethernet"
#: the only venet version there is (`open` takes it)
VERSION = 1

# device calls (function numbers); any other is EINVAL
LINKUP = 0
LINKDOWN = 1
MACQUERY = 2
NEGCAP = 3
FLUSHRX = 4

# queue indices: RX carries frames device -> client, TX client -> device
RX_QUEUE = 0
TX_QUEUE = 1

#: an Ethernet header (destination, source, ethertype): the shortest frame
HEADER = 14
#: the default MTU, and so the longest bare frame
MTU = 1500
MAX_FRAME = MTU + HEADER

__all__ = [
    "FLUSHRX",
    "HEADER",
    "INTERFACE_TYPE",
    "LINKDOWN",
    "LINKUP",
    "MACQUERY",
    "MAX_FRAME",
    "MTU",
    "NEGCAP",
    "RX_QUEUE",
    "TX_QUEUE",
    "VERSION",
]
