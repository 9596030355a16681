"""What the venet deviceclasses share: values, the common attributes, the client connection.

venet-tap, venet-loopback and venet-switch all present the `virtual-ethernet`
interface type and speak the venet protocol (behaviour §7.4) to their clients. Their
values are parsed strictly (EINVAL on junk, and a refused value changes
nothing); a class's own state, attribute table and data path live in its own
module (``_venet_tap``, ``_venet_loopback``, ``_venet_switch``).

A connection is one client of one venet interface. Queue 0 carries frames
device -> client (into buffers the client posted), queue 1 client -> device.
The device calls are the original's: LINKUP (EINVAL without both queues, EEXIST
when up), LINKDOWN (ENOENT when down), MACQUERY, NEGCAP (8 bytes, EINVAL while
up, the intersection of asked and supported bits), FLUSHRX (EINVAL while down;
every posted receive buffer back with length 0). Frames are bare Ethernet
frames of 14 to mtu + 14 bytes, or, with SG granted (fixed at LINKUP), a 10-byte
virtio-net header and up to MAX_GSO_FRAME bytes; anything else is dropped and
counted. Frames move on C threads (venet-tap and venet-loopback: ``_venet_thread``;
venet-switch: its own), never on the daemon's event loop.
"""

from __future__ import annotations

import contextlib
import errno
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import trio

from vbusfs.connector import venet as abi
from vbusfs.connector.venet import (
    FLUSHRX,
    HEADER,
    LINKDOWN,
    LINKUP,
    MACQUERY,
    NEGCAP,
    RX_QUEUE,
    TX_QUEUE,
    VERSION,
)
from vbusfs.connector.venet import INTERFACE_TYPE as VIRTUAL_ETHERNET
from vbusfs.ioq import AsyncIoq, IoqError, IoqFault, IoqFull
from vbusfs.model import (
    AlreadyExists,
    Attribute,
    Busy,
    DeviceClass,
    DeviceConnection,
    InvalidValue,
    NotFound,
)

BATCH = 64
#: burstthresh's default (µs): a wake-up across the two vCPUs costs about 20 µs each
#: way (FIELD-NOTES), more than a short poll
DEFAULT_BURSTTHRESH_US = 20
#: the longest a wait polls whatever burstthresh says (a CPU spent per idle spell)
MAX_POLL_US = 1000
#: txmitigation's default (frames), the original's
DEFAULT_TXMITIGATION = 10

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


@dataclass(eq=False)
class Tuning:
    """A venet device's data-path settings, shared by all its connections.

    `clients` counts the device's open connections (on any port of a switch):
    `mtu` cannot change while it is not 0. burstthresh and txmitigation take
    effect at the next wait and the next batch.
    """

    mtu: int = abi.MTU
    burstthresh: int = DEFAULT_BURSTTHRESH_US
    txmitigation: int = DEFAULT_TXMITIGATION
    clients: int = 0
    #: called after burstthresh or txmitigation changed (venet-switch: its thread's copy)
    listeners: list[Callable[[], None]] = field(default_factory=list)

    def changed(self) -> None:
        for listener in self.listeners:
            listener()


class TunedState(Protocol):
    tuning: Tuning


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
    tuning: Tuning = field(default_factory=Tuning)


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


def _store_mtu(state: TunedState, text: str) -> None:
    mtu = parse_u32(text)
    if not abi.MIN_MTU <= mtu <= abi.MAX_MTU:
        raise InvalidValue(f"mtu is {abi.MIN_MTU} to {abi.MAX_MTU}, not {mtu}")
    if state.tuning.clients:
        raise Busy("mtu cannot change while a client has the device open")
    state.tuning.mtu = mtu


def _store_burstthresh(state: TunedState, text: str) -> None:
    state.tuning.burstthresh = parse_u32(text)
    state.tuning.changed()


def _store_txmitigation(state: TunedState, text: str) -> None:
    state.tuning.txmitigation = parse_u32(text)
    state.tuning.changed()


HOST_MAC = Attribute("host_mac", _show_host_mac, None, "MAC address of the host side.")
CLIENT_MAC = Attribute(
    "client_mac",
    _show_client_mac,
    _store_client_mac,
    "MAC address the client side uses; EBUSY while a client has the device open.",
)
MTU = Attribute(
    "mtu",
    lambda state: str(state.tuning.mtu),
    _store_mtu,
    f"Largest bare frame's payload, {abi.MIN_MTU} to {abi.MAX_MTU}; EBUSY while open.",
)
BURSTTHRESH = Attribute(
    "burstthresh",
    lambda state: str(state.tuning.burstthresh),
    _store_burstthresh,
    f"Microseconds a wait polls its ring before sleeping (0: sleep at once; "
    f"at most {MAX_POLL_US} take effect).",
)
TXMITIGATION = Attribute(
    "txmitigation",
    lambda state: str(state.tuning.txmitigation),
    _store_txmitigation,
    "Transmitted frames per completion signal (0: one per frame; at most 64 take effect).",
)


class VenetClass(DeviceClass):
    """Base of the venet deviceclasses: the interface type, its version, the MAC source."""

    interface_type = VIRTUAL_ETHERNET
    versions = frozenset({VERSION})

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()


# ---- a ring broken on a C thread --------------------------------------------------


async def heard(fd: int) -> bool:
    """Wait until the thread writes the fault eventfd `fd`; False if it was closed meanwhile."""
    try:
        await trio.lowlevel.wait_readable(fd)
    except (trio.ClosedResourceError, ValueError):
        return False
    return True


def stop_waiting(fd: int) -> None:
    """Wake a task waiting on `fd` (about to close) with ClosedResourceError."""
    with contextlib.suppress(RuntimeError):  # not on a trio thread: none waits
        trio.lowlevel.notify_closing(fd)


def fault_error(faulted: int) -> IoqFault:
    """What ends a connection whose thread found a ring broken (`faulted`: bit 0 the
    transmit ring, bit 1 the receive ring)."""
    which = "transmit" if faulted & 1 else "receive"
    return IoqFault(errno.EPROTO, f"the {which} queue broke the protocol")


# ---- the connection ------------------------------------------------------------

End = TypeVar("End", bound=ClientEnd)


class VenetConnection(DeviceConnection, Generic[End]):
    """One client of one venet end; `owner` is the end it holds (`clients`, `client_mac`),
    `tuning` its device's settings."""

    def __init__(self, owner: End, tuning: Tuning) -> None:
        if owner.clients:
            raise Busy("the device is open by another client")
        owner.clients += 1
        tuning.clients += 1
        self.owner: End = owner
        self.tuning = tuning
        self.link_up = False
        #: capability group -> bits granted by the last NEGCAP of that group
        self.granted: dict[int, int] = {}
        #: frames carry a virtio-net header (SG granted at LINKUP)
        self.sg = False
        self.min_frame, self.max_frame = HEADER, tuning.mtu + HEADER
        self.rx: AsyncIoq | None = None  # device -> client
        self.tx: AsyncIoq | None = None  # client -> device
        self.counters = {
            "tx_frames": 0,
            "rx_frames": 0,
            "oversize": 0,
            "dropped": 0,
            # transmit-completion signals to the client (txmitigation batches them)
            "tx_signals": 0,
            # waits that found work while polling, and waits that went to sleep
            "polled": 0,
            "slept": 0,
            "flushed": 0,
            # venet-switch: this client's large segments not copied to a bare port, and
            # those cut into frames for one
            "gso_dropped": 0,
            "gso_segmented": 0,
        }
        self._ready = trio.Event()
        self._closed = False

    # -- the calls ----------------------------------------------------------------

    def call(self, function: int, data: bytes) -> bytes:
        if function == LINKUP:
            if self.link_up:
                raise AlreadyExists("the link is already up")
            if self.rx is None or self.tx is None:
                raise InvalidValue("LINKUP needs both queues attached")
            self.sg = abi.sg_granted(self.granted)
            if self.sg:
                self.min_frame = abi.VNET_HDR_LEN + HEADER
                self.max_frame = abi.MAX_SG_MESSAGE
            else:
                self.min_frame, self.max_frame = HEADER, self.tuning.mtu + HEADER
            self.linked()  # may refuse (the class's errno): nothing changed yet
            self.link_up = True
            self.tell_carrier()
            return b""
        if function == LINKDOWN:
            if not self.link_up:
                raise NotFound("the link is already down")
            self.link_up = False
            self.unlinked()
            return b""
        if function == MACQUERY:
            return bytes(self.owner.client_mac)
        if function == NEGCAP:
            if len(data) != abi.CAPS_LEN:
                raise InvalidValue(
                    f"NEGCAP takes {abi.CAPS_LEN} bytes (gid, bits), not {len(data)}"
                )
            if self.link_up:
                raise InvalidValue("capabilities cannot change while the link is up")
            gid, bits = abi.negcap_reply(data)
            granted = bits & abi.SUPPORTED.get(gid, 0)
            self.granted[gid] = granted
            return abi.negcap_request(gid, granted)
        if function == FLUSHRX:
            if not self.link_up:
                raise InvalidValue("FLUSHRX needs the link up")
            self.flush_rx()
            return b""
        raise InvalidValue(f"venet has no function {function}")

    def linked(self) -> None:
        """The class's step at LINKUP (venet-tap: its host interface's header mode)."""

    def unlinked(self) -> None:
        """The class's step at LINKDOWN (venet-switch: its thread lets the port go)."""

    def carrier(self) -> bool:
        """Whether the device's far side is up (venet-tap: `enabled`); loopback and switch
        are always up."""
        return True

    def tell_carrier(self) -> None:
        """A linkstate event to a client that negotiated EVQ_LINKSTATE and is linked."""
        wants = self.granted.get(abi.CAP_GROUP_EVENTQ, 0) & abi.CAP_EVQ_LINKSTATE
        if wants and self.link_up and not self._closed:
            self.send_event(abi.EVENT_LINKSTATE, up=self.carrier())

    def flush_rx(self) -> int:
        """Every buffer the client posted goes back with length 0 (no frame in it)."""
        assert self.rx is not None
        flushed = 0
        while True:
            try:
                sent = self.rx.send_batch_nowait([b""] * BATCH)
            except IoqFull:
                break
            flushed += sent
        self.counters["flushed"] += flushed
        return flushed

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

    def every(self) -> int:
        """Completed transmit frames per signal to the client: txmitigation (0: one
        per frame); a batch (at most BATCH) also signals when it ends."""
        return max(1, self.tuning.txmitigation)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ioq in (self.rx, self.tx):
            if ioq is not None:
                ioq.close()
        self.owner.clients -= 1
        self.tuning.clients -= 1
