"""What the venet deviceclasses share: values, the MAC attributes, the client connection.

venet-tap, venet-loopback and venet-switch all present the `virtual-ethernet`
interface type and speak the venet protocol (behaviour §7.4) to their clients. Their
values are parsed strictly (EINVAL on junk, and a refused value changes
nothing); a class's own state, attribute table and data path live in its own
module (``_venet_tap``, ``_venet_loopback``, ``_venet_switch``).

A connection is one client of one venet interface. Queue 0 carries frames
device -> client (into buffers the client posted), queue 1 client -> device.
Frames are bare Ethernet frames of 14 to MTU + 14 bytes; anything else is
dropped and counted. Frames move a batch per call into C; nothing here touches
a frame per frame in a system call.
"""

from __future__ import annotations

import errno
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

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
    VERSION,
)
from vbusfs.connector.venet import INTERFACE_TYPE as VIRTUAL_ETHERNET
from vbusfs.ioq import AsyncIoq, IoqEmpty, IoqError, IoqFull
from vbusfs.model import Attribute, Busy, DeviceClass, DeviceConnection, InvalidValue

BATCH = 64
# Poll a ring this long before sleeping on its eventfd: a wake-up across the
# two vCPUs costs about 20 us each way (FIELD-NOTES), more than a short poll.
SPIN_US = 20

# ---- values ------------------------------------------------------------------

_MAC = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")
_UINT = re.compile(r"[0-9]+")
U32_MAX = (1 << 32) - 1


def parse_mac(text: str) -> bytes:
    if not _MAC.fullmatch(text):
        raise InvalidValue(f"{text!r} is not a MAC address (six hex octets separated by ':')")
    return bytes(int(part, 16) for part in text.split(":"))


def format_mac(mac: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in mac)


def random_mac(rng: random.Random) -> bytes:
    """A random locally administered unicast address."""
    octets = bytearray(rng.getrandbits(8) for _ in range(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return bytes(octets)


def parse_bool(text: str) -> bool:
    if text == "1":
        return True
    if text == "0":
        return False
    raise InvalidValue(f"{text!r} is neither 0 nor 1")


def parse_u32(text: str) -> int:
    if not _UINT.fullmatch(text) or int(text) > U32_MAX:
        raise InvalidValue(f"{text!r} is not a non-negative integer below 2^32")
    return int(text)


# ---- state and the common attributes --------------------------------------------


class ClientEnd(Protocol):
    """What one client connects to: a device (tap, loopback) or a switch port.

    `clients` is kept by :class:`VenetConnection` itself: it counts in when
    made and out when closed, so at most one client holds an end at a time.
    """

    name: str
    client_mac: bytes
    clients: int


@dataclass(eq=False)
class VenetState:
    """Per-device state of a single-bus venet device (venet-tap, venet-loopback)."""

    name: str
    host_mac: bytes
    client_mac: bytes
    enabled: bool = False
    # clients holding the device open (their connections count themselves in and out)
    clients: int = 0


def _store_client_mac(end: ClientEnd, text: str) -> None:
    mac = parse_mac(text)
    if end.clients:
        raise Busy("client_mac cannot change while a client has the device open")
    end.client_mac = mac


def _show_client_mac(end: ClientEnd) -> str:
    return format_mac(end.client_mac)


def _show_host_mac(state: VenetState) -> str:
    return format_mac(state.host_mac)


def show_enabled(state: VenetState) -> str:
    return "1" if state.enabled else "0"


HOST_MAC = Attribute("host_mac", _show_host_mac, None, "MAC address of the host side.")
CLIENT_MAC = Attribute(
    "client_mac",
    _show_client_mac,
    _store_client_mac,
    "MAC address the client side uses; EBUSY while a client has the device open.",
)


class VenetClass(DeviceClass):
    """Base of the venet deviceclasses: the interface type, its version, the MAC source."""

    interface_type = VIRTUAL_ETHERNET
    versions = frozenset({VERSION})

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()


# ---- the connection ------------------------------------------------------------

End = TypeVar("End", bound=ClientEnd)


class VenetConnection(DeviceConnection, Generic[End]):
    """One client of one venet end; `owner` is the end it holds (`clients`, `client_mac`)."""

    def __init__(self, owner: End) -> None:
        if owner.clients:
            raise Busy("the device is open by another client")
        owner.clients += 1
        self.owner: End = owner
        self.link_up = False
        self.rx: AsyncIoq | None = None  # device -> client
        self.tx: AsyncIoq | None = None  # client -> device
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
            ioq = AsyncIoq.attach(fds, direction="to_north" if index == RX_QUEUE else "to_south")
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
                await self.rx.wait_sendable(spin_us=SPIN_US)
                continue
            self.counters["rx_frames"] += sent
            frames = frames[sent:]

    async def transmitted(self) -> list[bytes]:
        """The next batch of frames the client sent."""
        assert self.tx is not None
        while True:
            await self.tx.wait_receivable(spin_us=SPIN_US)
            try:
                # longer frames come back empty (and are counted by _take): a batch
                # costs at most BATCH * MAX_FRAME bytes whatever the descriptors say
                frames = self.tx.receive_batch_nowait(BATCH, max_length=MAX_FRAME)
            except IoqEmpty:
                continue
            self.counters["tx_frames"] += len(frames)
            return self._take(frames)

    async def transmitted_packed(self, buffer: bytearray) -> list[int]:
        """The next batch the client sent, back to back in `buffer`: one copy, no object
        per frame. Returns the frames' lengths."""
        assert self.tx is not None
        while True:
            await self.tx.wait_receivable(spin_us=SPIN_US)
            try:
                lengths = self.tx.receive_into_nowait(buffer, BATCH)
            except IoqEmpty:
                continue
            except IoqError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                # the first message is longer than the whole buffer: no frame,
                # dropped uncopied (the buffer never grows with the client's segment)
                self.tx.discard_nowait(1)
                self.counters["tx_frames"] += 1
                self.counters["oversize"] += 1
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
                await self.rx.wait_sendable(spin_us=SPIN_US)
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
