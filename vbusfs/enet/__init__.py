"""A userspace vbus-enet driver: a venet interface of the caller's bus as a TAP interface.

In the original vbus, a guest's `vbus-enet` driver made each venet interface of its bus
an ordinary network interface, so every unmodified program used the bus. Here a member
process does the same from userspace::

    with Enet("/tmp/vbus", interface_id=0, ifname="venet%d") as nic:
        print(nic.ifname)            # configure it with ip(8), then
        nic.run()                    # frames move (in C) until nic.stop()

`vbusfs enet` is this, run until killed. What it does is in docs/enet.md.
"""

from ._enet import (
    BARE_RING_BYTES,
    DEFAULT_SLOTS,
    DEFAULT_SPIN_US,
    OFFLOADS,
    Enet,
    default_mountpoint,
)
from ._tap import EnetError, Tap

__all__ = [
    "BARE_RING_BYTES",
    "DEFAULT_SLOTS",
    "DEFAULT_SPIN_US",
    "OFFLOADS",
    "Enet",
    "EnetError",
    "Tap",
    "default_mountpoint",
]
