"""The venet protocol (SPEC 7.4) on the device side: calls and the two ioqs.

Queue 0 carries frames device -> client (into buffers the client posted),
queue 1 client -> device. Frames are bare Ethernet frames of 14 to MTU + 14
bytes; anything else is dropped and counted. Frames move a batch per call
into C; nothing here touches a frame per frame in a system call.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import trio

from vbusfs.connector.venet import (
    FLUSHRX,
    HEADER,
    LINKDOWN,
    LINKUP,
    MACQUERY,
    MAX_FRAME,
    NEGCAP,
    RX_QUEUE,
    TX_QUEUE,
)
from vbusfs.ioq import Ioq, IoqEmpty, IoqError, IoqFault, IoqFull, Switch
from vbusfs.model import Busy, DeviceConnection, InvalidValue

BATCH = 64
# Poll a ring this long before sleeping on its eventfd: a wake-up across the
# two vCPUs costs about 20 us each way (FIELD-NOTES), more than a short poll.
SPIN_US = 20


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
                await self.rx.wait_sendable_async(spin_us=SPIN_US)
                continue
            self.counters["rx_frames"] += sent
            frames = frames[sent:]

    async def transmitted(self) -> list[bytes]:
        """The next batch of frames the client sent."""
        assert self.tx is not None
        while True:
            await self.tx.wait_receivable_async(spin_us=SPIN_US)
            try:
                frames = self.tx.receive_batch_nowait(BATCH)
            except IoqEmpty:
                continue
            self.counters["tx_frames"] += len(frames)
            return self._take(frames)

    async def transmitted_packed(self, buffer: bytearray) -> list[int]:
        """The next batch the client sent, back to back in `buffer`: one copy, no object
        per frame. Returns the frames' lengths."""
        assert self.tx is not None
        while True:
            await self.tx.wait_receivable_async(spin_us=SPIN_US)
            try:
                lengths = self.tx.receive_into_nowait(buffer, BATCH)
            except IoqEmpty:
                continue
            self.counters["tx_frames"] += len(lengths)
            return lengths

    async def deliver_packed(self, buffer: bytearray, lengths: list[int]) -> None:
        """`deliver` for a packed batch: the frames stay in one buffer, a batch per call."""
        assert self.rx is not None
        view = memoryview(buffer)
        offset, first = 0, 0
        end = sum(lengths)
        while first < len(lengths):
            try:
                # one copy of the whole batch (the ring API takes bytes), none per frame
                packed = bytes(view[offset:end])
                sent = self.rx.send_packed_nowait(packed, lengths[first:])
            except IoqFull:
                await self.rx.wait_sendable_async(spin_us=SPIN_US)
                continue
            offset += sum(lengths[first : first + sent])
            first += sent
            self.counters["rx_frames"] += sent

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
        assert self.tx is not None
        buffer = bytearray(BATCH * self.tx.max_message)
        while True:
            lengths = await self.transmitted_packed(buffer)
            if not self.owner.enabled:
                self.counters["dropped"] += len(lengths)
                continue
            if min(lengths) < HEADER or max(lengths) > MAX_FRAME:
                # a rare batch with a frame to drop: take the per-frame path
                frames, offset = [], 0
                for size in lengths:
                    frames.append(bytes(buffer[offset : offset + size]))
                    offset += size
                await self.deliver(self._take(frames))
                continue
            await self.deliver_packed(buffer, lengths)


class TapConnection(VenetConnection):
    """Frames between the client and the host TAP interface (while `enabled` is 1).

    Frames move between the rings and the TAP's descriptor in C, a batch per
    call (one write or read per frame, straight from or into the data
    segment); Python only waits and counts.
    """

    async def move(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._to_host)
            nursery.start_soon(self._from_host)

    def _tap_fd(self) -> int:
        """The host interface's descriptor, or -1 while there is none (disabled)."""
        tap = self.owner.tap
        return -1 if tap is None else int(tap.fd)

    async def _to_host(self) -> None:
        assert self.tx is not None
        while True:
            await self.tx.wait_receivable_async(spin_us=SPIN_US)
            fd = self._tap_fd()
            try:
                if fd < 0:
                    frames = self.tx.receive_batch_nowait(BATCH)
                    self.counters["tx_frames"] += len(frames)
                    self.counters["dropped"] += len(self._take(frames))
                    continue
                got = self.tx.receive_to_fd_nowait(
                    fd, BATCH, min_length=HEADER, max_length=MAX_FRAME
                )
            except IoqEmpty:
                continue
            self.counters["tx_frames"] += got.messages
            self.counters["oversize"] += got.bad_size
            self.counters["dropped"] += got.dropped

    async def _from_host(self) -> None:
        assert self.rx is not None
        while True:
            tap = self.owner.tap
            fd = self._tap_fd()
            if fd < 0:
                await trio.sleep(0.05)  # disabled: the host side has no interface yet
                continue
            try:
                await trio.lowlevel.wait_readable(fd)
            except (trio.ClosedResourceError, OSError):
                continue  # disabled while waiting
            if self.owner.tap is not tap or tap.fd != fd:
                continue  # disabled or replaced while waiting
            if not self.link_up:
                tap.discard(BATCH)  # the client is not listening: the host's frames go nowhere
                continue
            try:
                got = self.rx.send_from_fd_nowait(fd, BATCH, max_length=MAX_FRAME)
            except IoqFull:
                # no buffer posted: the frames wait in the TAP's queue meanwhile
                await self.rx.wait_sendable_async(spin_us=SPIN_US)
                continue
            except IoqFault:
                raise
            except OSError:
                await trio.sleep(0.05)  # the TAP refused a read (being torn down)
                continue
            self.counters["rx_frames"] += got.messages
            self.counters["oversize"] += got.bad_size


class SwitchConnection(VenetConnection):
    """One port's client: frames are switched to the other ports by learned MAC.

    The switching itself is C's (:class:`vbusfs.ioq.Switch`): a batch per call goes from
    this client's transmit ring straight into the buffers the other clients posted on
    their receive rings. Python only waits, hands over the rings and counts. Each
    connected port has a small index, stable while its client stays (``indices``).
    """

    def __init__(self, switch: Any, port: Any) -> None:
        super().__init__(port)
        used = set(switch.indices.values())
        free = [i for i in range(Switch.MAX_PORTS) if i not in used]
        if not free:
            port.clients -= 1  # undo super().__init__'s claim
            raise Busy(f"the switch has {Switch.MAX_PORTS} clients already")
        self.switch = switch
        self.port = port
        self.index = free[0]
        switch.indices[port.name] = self.index
        switch.connections[port.name] = self
        # set by another port's forward when this client's receive ring is found broken
        self._rx_broken = False
        self._wake = trio.CancelScope()

    def _peers(self) -> list[SwitchConnection | None]:
        """The connected clients, by port index."""
        indices = self.switch.indices
        peers: list[SwitchConnection | None] = [None] * (max(indices.values()) + 1)
        for name, index in indices.items():
            peers[index] = self.switch.connections.get(name)
        return peers

    def _break_rx(self) -> None:
        """This client's receive ring broke the protocol: its own run ends with IoqFault."""
        self._rx_broken = True
        self._wake.cancel()

    async def move(self) -> None:
        assert self.tx is not None
        forward = self.switch.switch.forward
        while True:
            if self._rx_broken:
                raise IoqFault(errno.EPROTO, "the receive queue broke the protocol")
            self._wake = trio.CancelScope()
            with self._wake:
                await self.tx.wait_receivable_async(spin_us=SPIN_US)
            if self._rx_broken:
                continue
            peers = self._peers()
            rings = [
                None if p is None or p.rx is None or p.rx.closed or p.rx.faulted else p.rx
                for p in peers
            ]
            try:
                # IoqFault here is this client's transmit ring: it goes, the others stay
                got = forward(self.index, self.tx, rings, BATCH)
            except IoqEmpty:
                continue
            self.counters["tx_frames"] += got.frames
            self.counters["oversize"] += got.bad_size
            for peer, delivered, dropped in zip(peers, got.delivered, got.dropped, strict=True):
                if peer is not None and (delivered or dropped):
                    peer.counters["rx_frames"] += delivered
                    peer.counters["dropped"] += dropped
            for index in got.faulted:
                peer = peers[index]
                if peer is not None:
                    peer._break_rx()

    def close(self) -> None:
        if self.switch.connections.get(self.port.name) is self:
            del self.switch.connections[self.port.name]
            del self.switch.indices[self.port.name]
            self.switch.switch.forget_port(self.index)
        super().close()
