"""venet-loopback: every frame a client transmits comes back on its receive queue.

Its type, attribute table (behaviour §4, "other built-in classes") and data path sit
here together. It touches nothing on the host; `enabled` only says whether
frames come back (0: they are dropped and counted). With SG granted, a frame
comes back with its virtio-net header unchanged (a large segment stays one frame).
"""

from __future__ import annotations

from vbusfs.connector.venet import MAX_FRAME
from vbusfs.model import Attribute

from ._venet_common import (
    BATCH,
    BURSTTHRESH,
    CLIENT_MAC,
    HOST_MAC,
    MTU,
    SG_BATCH_BYTES,
    TXMITIGATION,
    VenetClass,
    VenetConnection,
    VenetState,
    parse_bool,
    random_mac,
    show_enabled,
)


def _store_enabled(state: VenetState, text: str) -> None:
    state.enabled = parse_bool(text)


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


class LoopbackConnection(VenetConnection[VenetState]):
    """Every frame the client sends comes back on its receive queue (when enabled)."""

    async def move(self) -> None:
        assert self.tx is not None and self.rx is not None
        buffer = bytearray()
        while True:
            # bounded whatever the client's data segment: a batch of the largest
            # frames fits (with SG, a few of them); a longer message is dropped by
            # transmitted_packed. Sized at each batch: LINKUP fixes the frame size.
            size = SG_BATCH_BYTES if self.sg else BATCH * MAX_FRAME
            if len(buffer) != size:
                buffer = bytearray(size)
            lengths = await self.transmitted_packed(buffer)
            if not self.owner.enabled:
                self.counters["dropped"] += len(lengths)
                continue
            if min(lengths) < self.min_frame or max(lengths) > min(
                self.max_frame, self.rx.max_message
            ):
                # a rare batch with a frame to drop: take the per-frame path
                frames, offset = [], 0
                for size in lengths:
                    frames.append(bytes(buffer[offset : offset + size]))
                    offset += size
                await self.deliver(self._take(frames))
                continue
            await self.deliver_packed(buffer, lengths)
