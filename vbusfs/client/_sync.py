"""The client side of the connector: open the devices on your bus and move frames.

A process that is a member of a bus (see `proc/<pid>/vbus`) connects with
nothing but the mount point::

    from vbusfs import client

    with client.connect("/mnt/vbus") as bus:
        print(bus.name, bus.interfaces())
        with bus.open_venet(0) as nic:
            nic.send(frame)
            reply = nic.recv(timeout=1.0)

The daemon learns who is calling from the kernel, so a process that is on no
bus is refused (`PermissionError`), and a client sees only its own bus. Device
add and drop events arrive as they happen (`Client.events()`,
`Client.wait_event()`). Everything is released when the client closes or
exits, however it exits.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import socket
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from vbusfs.connector._wire import (
    MAX_MESSAGE,
    XATTR,
    WireError,
    decode,
    encode,
    pack_bytes,
    unpack_bytes,
)
from vbusfs.ioq import Ioq

LINKUP, LINKDOWN, MACQUERY, NEGCAP, FLUSHRX = range(5)
RX_QUEUE, TX_QUEUE = 0, 1
VENET_VERSION = 1
MAX_FRAME = 1514


class ConnectorError(OSError):
    """The daemon refused a request; `errno` says why."""


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    id: int
    type: str


@dataclass(frozen=True, slots=True)
class BusEvent:
    kind: str  # "add" or "drop"
    id: int
    type: str


def connector_path(mountpoint: str) -> str:
    """Where the daemon serving `mountpoint` listens (read from the mount's root)."""
    try:
        return os.fsdecode(os.getxattr(mountpoint, XATTR))
    except OSError as exc:
        raise ConnectorError(
            exc.errno, f"{mountpoint} is not a live vbusfs mount with a connector"
        ) from None


def connect(mountpoint: str) -> Client:
    """Connect the calling process to the devices of its bus."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(connector_path(mountpoint))
        return Client(sock, _welcome(sock.recv(MAX_MESSAGE)))
    except BaseException:
        sock.close()
        raise


_ANCILLARY = socket.CMSG_SPACE(4 * 4)


def _receive(received: tuple[bytes, list[Any], int, Any]) -> tuple[bytes, list[int]]:
    """A message and the file descriptors that came with it."""
    data, ancillary, _flags, _address = received
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds.extend(got)
    return data, fds


def _hangup(reply: dict[str, Any]) -> socket.socket:
    """The hang-up socket an `open` reply carries."""
    fds = reply.pop("_fds", [])
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ConnectorError(0, "the daemon's open reply carried no hang-up socket")
    return socket.socket(fileno=fds[0])


def _welcome(data: bytes) -> dict[str, Any]:
    """The daemon's first message: who we are to it, or why it refuses us."""
    hello = decode(data)
    if "errno" in hello:
        raise ConnectorError(hello["errno"], hello.get("message", "refused"))
    welcome: dict[str, Any] = hello["hello"]
    return welcome


class Client:
    """A connection to the daemon on behalf of this process's bus."""

    def __init__(self, sock: socket.socket, hello: dict[str, Any]) -> None:
        self._sock = sock
        #: the bus this process is a member of (None: an administrator on no bus)
        self.name: str | None = hello["bus"]
        self.admin: bool = hello.get("admin", False)
        self._seq = 0
        self._events: deque[BusEvent] = deque()

    # -- requests ----------------------------------------------------------

    def request(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> dict[str, Any]:
        self._seq += 1
        seq = self._seq
        data = encode({"op": op, "seq": seq, **fields})
        if fds:
            socket.send_fds(self._sock, [data], list(fds))
        else:
            self._sock.send(data)
        while True:
            message = self._read(None)
            if message is None:
                raise ConnectorError(0, "the daemon closed the connection")
            if message.get("seq") == seq:
                if "errno" in message:
                    raise ConnectorError(message["errno"], message.get("message", ""))
                return message

    def _read(self, timeout: float | None) -> dict[str, Any] | None:
        """The next reply; events met on the way are queued. None on hang-up."""
        while True:
            if timeout is not None and not select.select([self._sock], [], [], timeout)[0]:
                raise TimeoutError("no message from the daemon")
            data, fds = _receive(self._sock.recvmsg(MAX_MESSAGE, _ANCILLARY))
            if not data:
                return None
            message = decode(data)
            if fds:
                message["_fds"] = fds
            if "event" in message:
                self._events.append(BusEvent(message["event"], message["id"], message["type"]))
                if timeout is not None:
                    return message
                continue
            return message

    # -- the bus -----------------------------------------------------------

    def interfaces(self) -> list[InterfaceInfo]:
        return [InterfaceInfo(i["id"], i["type"]) for i in self.request("list")["interfaces"]]

    def open(self, interface_id: int, version: int) -> Device:
        reply = self.request("open", id=interface_id, version=version)
        return Device(self, reply["handle"], interface_id, _hangup(reply))

    def open_venet(self, interface_id: int, *, slots: int = 256) -> Venet:
        return Venet(self.open(interface_id, VENET_VERSION), slots=slots)

    # -- administration (root or the daemon's owner) -------------------------

    def save(self) -> dict[str, Any]:
        """The whole configuration, as `vbusfs save` writes it."""
        config: dict[str, Any] = self.request("save")["config"]
        return config

    def modprobe(self, deviceclass: str) -> str:
        """Load a deviceclass by name (or `module:Class`); returns its name."""
        name: str = self.request("modprobe", deviceclass=deviceclass)["deviceclass"]
        return name

    def rmmod(self, deviceclass: str) -> None:
        """Unload a deviceclass (EBUSY while devices of it exist)."""
        self.request("rmmod", deviceclass=deviceclass)

    def events(self) -> list[BusEvent]:
        """The add and drop events heard so far (without waiting)."""
        while select.select([self._sock], [], [], 0)[0]:
            if self._read(0) is None:
                break
        taken = list(self._events)
        self._events.clear()
        return taken

    def wait_event(self, timeout: float | None = None) -> BusEvent:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._read(left if left is not None else 3600.0) is None:
                raise ConnectorError(0, "the daemon closed the connection")
        return self._events.popleft()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Device:
    """One open interface.

    `hangup` is a socket the daemon closes when it lets go of the device (a drop, a
    close, or the daemon going away): the device's rings watch it, so no wait on them
    can hang once the device is gone.
    """

    def __init__(
        self, client: Client, handle: int, interface_id: int, hangup: socket.socket
    ) -> None:
        self.client = client
        self.handle = handle
        self.id = interface_id
        self.hangup = hangup
        self._open = True

    def call(self, function: int, data: bytes = b"") -> bytes:
        reply = self.client.request(
            "call", handle=self.handle, function=function, data=pack_bytes(data)
        )
        return unpack_bytes(reply["data"])

    def attach_queue(self, index: int, ioq: Ioq) -> None:
        self.client.request("queue", tuple(ioq.fds), handle=self.handle, index=index)

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.client.request("stats", handle=self.handle)["stats"]
        return stats

    def close(self) -> None:
        if self._open:
            self._open = False
            # dropped or disconnected: nothing is left to release
            with contextlib.suppress(ConnectorError, OSError):
                self.client.request("close", handle=self.handle)
            self.hangup.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Venet:
    """A virtual-ethernet driver: two ioqs and the venet calls."""

    def __init__(self, device: Device, *, slots: int = 256) -> None:
        self.device = device
        self.rx = Ioq.create(slots, 2048, direction="to_north")
        self.tx = Ioq.create(slots, 2048, direction="to_south")
        for ioq in (self.rx, self.tx):
            ioq.watch_peer(device.hangup)  # a dropped device ends waits with IoqClosed
        try:
            device.attach_queue(RX_QUEUE, self.rx)
            device.attach_queue(TX_QUEUE, self.tx)
            device.call(LINKUP)
        except BaseException:
            self.close()
            raise

    @property
    def mac(self) -> bytes:
        return self.device.call(MACQUERY)

    # spin_us: poll this long before sleeping (lower latency, at the price of CPU)

    def send(self, frame: bytes, timeout: float | None = None, *, spin_us: int = 0) -> None:
        self.tx.send(frame, timeout, spin_us=spin_us)

    def send_batch(
        self, frames: list[bytes], timeout: float | None = None, *, spin_us: int = 0
    ) -> None:
        self.tx.send_batch(frames, timeout, spin_us=spin_us)

    def recv(self, timeout: float | None = None, *, spin_us: int = 0) -> bytes:
        return self.rx.receive(timeout, spin_us=spin_us)

    def recv_batch(
        self, max_frames: int = 64, timeout: float | None = None, *, spin_us: int = 0
    ) -> list[bytes]:
        return self.rx.receive_batch(max_frames, timeout, spin_us=spin_us)

    def stats(self) -> dict[str, int]:
        return self.device.stats()

    def close(self) -> None:
        self.device.close()
        self.rx.close()
        self.tx.close()

    def __enter__(self) -> Venet:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- trio ------------------------------------------------------------------


async def connect_async(mountpoint: str) -> AsyncClient:
    """`connect` for trio programs: the same protocol on a trio socket."""
    import trio

    path = connector_path(mountpoint)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        await sock.connect(path)
        return AsyncClient(sock, _welcome(await sock.recv(MAX_MESSAGE)))
    except BaseException:
        sock.close()
        raise


class AsyncClient:
    """`Client` for trio: requests await their reply; events queue up meanwhile.

    One task at a time may make requests on one AsyncClient.
    """

    def __init__(self, sock: Any, hello: dict[str, Any]) -> None:
        self._sock = sock
        self.name: str | None = hello["bus"]
        self._seq = 0
        self._events: deque[BusEvent] = deque()

    async def request(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> dict[str, Any]:
        self._seq += 1
        seq = self._seq
        data = encode({"op": op, "seq": seq, **fields})
        if fds:
            await self._sock.sendmsg(
                [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            )
        else:
            await self._sock.send(data)
        while True:
            message = await self._next()
            if message.get("seq") == seq:
                if "errno" in message:
                    raise ConnectorError(message["errno"], message.get("message", ""))
                return message

    async def _next(self) -> dict[str, Any]:
        while True:
            data, fds = _receive(await self._sock.recvmsg(MAX_MESSAGE, _ANCILLARY))
            if not data:
                raise ConnectorError(0, "the daemon closed the connection")
            message = decode(data)
            if fds:
                message["_fds"] = fds
            if "event" not in message:
                return message
            self._events.append(BusEvent(message["event"], message["id"], message["type"]))

    async def interfaces(self) -> list[InterfaceInfo]:
        reply = await self.request("list")
        return [InterfaceInfo(i["id"], i["type"]) for i in reply["interfaces"]]

    async def open_venet(self, interface_id: int, *, slots: int = 256) -> AsyncVenet:
        reply = await self.request("open", id=interface_id, version=VENET_VERSION)
        handle = reply["handle"]
        venet = AsyncVenet(self, handle, slots, _hangup(reply))
        try:
            await self.request("queue", tuple(venet.rx.fds), handle=handle, index=RX_QUEUE)
            await self.request("queue", tuple(venet.tx.fds), handle=handle, index=TX_QUEUE)
            await self.request("call", handle=handle, function=LINKUP, data="")
        except BaseException:
            await venet.aclose()
            raise
        return venet

    async def wait_event(self) -> BusEvent:
        """The next add or drop event (call it while no request is under way)."""
        while not self._events:
            data = await self._sock.recv(MAX_MESSAGE)
            if not data:
                raise ConnectorError(0, "the daemon closed the connection")
            message = decode(data)
            if "event" in message:
                self._events.append(BusEvent(message["event"], message["id"], message["type"]))
        return self._events.popleft()

    async def aclose(self) -> None:
        self._sock.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncVenet:
    """`Venet` for trio: sends and receives wait on the ring's eventfd."""

    def __init__(self, client: AsyncClient, handle: int, slots: int, hangup: socket.socket) -> None:
        self.client = client
        self.handle = handle
        self.hangup = hangup
        self.rx = Ioq.create(slots, 2048, direction="to_north")
        self.tx = Ioq.create(slots, 2048, direction="to_south")
        for ioq in (self.rx, self.tx):
            ioq.watch_peer(hangup)

    async def call(self, function: int, data: bytes = b"") -> bytes:
        reply = await self.client.request(
            "call", handle=self.handle, function=function, data=pack_bytes(data)
        )
        return unpack_bytes(reply["data"])

    async def send(self, frame: bytes) -> None:
        await self.tx.send_async(frame)

    async def recv(self) -> bytes:
        return await self.rx.receive_async()

    async def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        return await self.rx.receive_batch_async(max_frames)

    async def aclose(self) -> None:
        with contextlib.suppress(ConnectorError, OSError):
            await self.client.request("close", handle=self.handle)
        self.rx.close()
        self.tx.close()
        self.hangup.close()

    async def __aenter__(self) -> AsyncVenet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = [
    "AsyncClient",
    "AsyncVenet",
    "BusEvent",
    "Client",
    "ConnectorError",
    "Device",
    "InterfaceInfo",
    "Venet",
    "WireError",
    "connect",
    "connect_async",
    "connector_path",
]
