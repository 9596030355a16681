"""venet-loopback: every frame a client transmits comes back on its receive queue.

Its type, attribute table (behaviour §4, "other built-in classes") and data path sit
here together. It touches nothing on the host; `enabled` only says whether
frames come back (0: they are dropped and counted). With SG granted, a frame
comes back with its virtio-net header unchanged (a large segment stays one frame).
Frames are copied from the transmit ring straight into the buffers the client
posted, on a C thread of the connection's own (``_venet_thread``), never on the
daemon's event loop.
"""

from __future__ import annotations

from vbusfs.model import Attribute

from ._venet_common import (
    BURSTTHRESH,
    CLIENT_MAC,
    HOST_MAC,
    MTU,
    TXMITIGATION,
    VenetClass,
    VenetState,
    parse_bool,
    random_mac,
    show_enabled,
)
from ._venet_thread import ThreadedConnection


def _store_enabled(state: VenetState, text: str) -> None:
    state.enabled = parse_bool(text)
    state.tuning.changed()  # its client's thread hears of it


class VenetLoopback(VenetClass):
    """A virtual Ethernet device that returns every frame to its sender."""

    name = "venet-loopback"
    attributes = (
        CLIENT_MAC,
        Attribute("enabled", show_enabled, _store_enabled, "Whether the device carries frames."),
        HOST_MAC,
        MTU,
        BURSTTHRESH,
        TXMITIGATION,
    )

    def create(self, device_name: str) -> VenetState:
        return VenetState(device_name, random_mac(self._rng), random_mac(self._rng))

    def open(self, state: VenetState, interface_state: None, version: int) -> LoopbackConnection:
        return LoopbackConnection(state, state.tuning)


class LoopbackConnection(ThreadedConnection[VenetState]):
    """Every frame the client sends comes back on its receive queue (when enabled),
    copied ring to ring on the connection's own C thread (:class:`ThreadedConnection`)."""

    def target(self) -> tuple[int, bool]:
        return -1, self.owner.enabled  # disabled: no TAP and no loop, so dropped
