"""The venet protocol (SPEC 7.4) on the device side: calls and the two ioqs.

Queue 0 carries frames device -> client (into buffers the client posted),
queue 1 client -> device. Frames are bare Ethernet frames of 14 to MTU + 14
bytes; anything else is dropped and counted. Frames move a batch per call
into C; nothing here touches a frame per frame in a system call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from vbusfs.ioq import Ioq, IoqEmpty, IoqError, IoqFull
from vbusfs.model import Busy, DeviceConnection, InvalidValue

LINKUP, LINKDOWN, MACQUERY, NEGCAP, FLUSHRX = range(5)
RX_QUEUE, TX_QUEUE = 0, 1
MTU = 1500
HEADER = 14
MAX_FRAME = MTU + HEADER
BATCH = 64
VERSION = 1


class VenetConnection(DeviceConnection):
    """One client of one venet interface. `owner` holds `clients` and `client_mac`."""

    def __init__(self, owner: Any) -> None:
        if owner.clients:
            raise Busy("the device is open by another client")
        owner.clients += 1
        self.owner = owner
        self.link_up = False
        self.rx: Ioq | None = None  # device -> client
        self.tx: Ioq | None = None  # client -> device
        self.counters = {"tx_frames": 0, "rx_frames": 0, "oversize": 0, "dropped": 0}
        self._ready = trio.Event()
        self._closed = False

    def call(self, function: int, data: bytes) -> bytes:
        if function == LINKUP:
            self.link_up = True
            return b""
        if function == LINKDOWN:
            self.link_up = False
            return b""
        if function == MACQUERY:
            return bytes(self.owner.client_mac)
        if function == NEGCAP:
            if len(data) != 4:
                raise InvalidValue("NEGCAP takes a 4-byte capability mask")
            return (0).to_bytes(4, "little")  # no optional capabilities
        if function == FLUSHRX:
            return b""  # the device holds no frames back: nothing to flush
        raise InvalidValue(f"venet has no function {function}")

    def attach_queue(self, index: int, fds: Sequence[int]) -> None:
        if index not in (RX_QUEUE, TX_QUEUE):
            raise InvalidValue(f"venet has no queue {index}")
        if (self.rx if index == RX_QUEUE else self.tx) is not None:
            raise Busy(f"queue {index} is already attached")
        try:
            ioq = Ioq.attach(fds, direction="to_north" if index == RX_QUEUE else "to_south")
        except (IoqError, ValueError) as exc:
            raise InvalidValue(f"queue {index}: {exc}") from None
        if index == RX_QUEUE:
            self.rx = ioq
        else:
            self.tx = ioq
        if self.rx is not None and self.tx is not None:
            self._ready.set()

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    async def run(self) -> None:
        await self._ready.wait()
        await self.move()

    async def move(self) -> None:
        """Carry frames; the deviceclass decides where they go."""

    def _take(self, frames: list[bytes]) -> list[bytes]:
        """The frames a client sent that are Ethernet frames; the rest are counted."""
        good = [f for f in frames if HEADER <= len(f) <= MAX_FRAME]
        self.counters["oversize"] += len(frames) - len(good)
        return good

    async def deliver(self, frames: list[bytes]) -> None:
        """Put frames on the client's receive queue, waiting for it to post buffers."""
        assert self.rx is not None
        while frames:
            try:
                sent = self.rx.send_batch_nowait(frames)
            except IoqFull:
                await self.rx.wait_sendable_async()
                continue
            self.counters["rx_frames"] += sent
            frames = frames[sent:]

    async def transmitted(self) -> list[bytes]:
        """The next batch of frames the client sent."""
        assert self.tx is not None
        while True:
            await self.tx.wait_receivable_async()
            try:
                frames = self.tx.receive_batch_nowait(BATCH)
            except IoqEmpty:
                continue
            self.counters["tx_frames"] += len(frames)
            return self._take(frames)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ioq in (self.rx, self.tx):
            if ioq is not None:
                ioq.close()
        self.owner.clients -= 1


class LoopbackConnection(VenetConnection):
    """Every frame the client sends comes back on its receive queue (when enabled)."""

    async def move(self) -> None:
        while True:
            frames = await self.transmitted()
            if not self.owner.enabled:
                self.counters["dropped"] += len(frames)
                continue
            await self.deliver(frames)
