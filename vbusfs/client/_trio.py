"""The client's trio face: the same protocol core on a trio socket.

Imported on first use (`vbusfs.client.connect_async`), so a member process
that never uses trio never loads it.
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections import deque
from collections.abc import Mapping
from typing import Any

import trio

from vbusfs._unixaddr import unix_address
from vbusfs.connector import (
    CLOSED,
    DEFAULT_TIMEOUT,
    RECEIVE,
    ClientConnection,
    Closed,
    ConnectorError,
    ConnectorTimeout,
    Datagram,
    Event,
    Heard,
    InterfaceEntry,
    Reply,
    Stray,
    interface_entries,
    pack_bytes,
    received,
    rights,
    unpack_bytes,
)
from vbusfs.connector import venet as abi
from vbusfs.ioq import AsyncIoq, Ioq, IoqEmpty

from ._common import close_fds, find_connector, hangup_of


async def connect_async(mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> AsyncClient:
    """`connect` for trio programs: the same protocol on a trio socket.

    Waits for the daemon's hello at most `timeout` seconds (None: without end), and
    each request then waits for its reply as long (ConnectorTimeout).
    """
    path = await trio.to_thread.run_sync(find_connector, mountpoint, timeout)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with trio.move_on_after(math.inf if timeout is None else timeout) as waited:
            with unix_address(path) as address:
                await sock.connect(address)
            protocol = ClientConnection()
            protocol.receive_welcome(received(await sock.recvmsg(*RECEIVE)))
            return AsyncClient(sock, protocol, timeout=timeout)
        assert waited.cancelled_caught and timeout is not None
        raise ConnectorTimeout("a connection", timeout)
    except BaseException:
        sock.close()
        raise


class AsyncClient:
    """`Client` for trio: requests await their reply; events queue up meanwhile.

    One task at a time may make requests on one AsyncClient; each waits for its reply
    at most `timeout` seconds (ConnectorTimeout).
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        protocol: ClientConnection,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        assert protocol.welcome is not None
        self._sock = sock
        self._protocol = protocol
        self.name: str | None = protocol.welcome.bus
        #: how long a request waits for its reply (None: without end)
        self.timeout = timeout

    async def request(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> dict[str, Any]:
        return (await self._exchange(op, fds, **fields)).result()

    async def _exchange(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> Reply:
        timeout = self.timeout
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self._send(self._protocol.send_request(op, fds, **fields))
            while not isinstance(heard := await self._receive(), Reply):
                pass
            return heard
        assert timeout is not None
        raise ConnectorTimeout(repr(op), timeout)

    async def _send(self, datagram: Datagram) -> None:
        await self._sock.sendmsg([datagram.data], rights(datagram.fds))

    async def _receive(self) -> Heard:
        heard = self._protocol.receive(received(await self._sock.recvmsg(*RECEIVE)))
        if isinstance(heard, Stray | Closed):
            close_fds(heard.fds)  # nobody waits for them
        if isinstance(heard, Closed):
            raise ConnectorError(0, CLOSED)
        return heard

    async def interfaces(self) -> list[InterfaceEntry]:
        return interface_entries(await self.request("list"))

    async def open(self, interface_id: int, version: int) -> AsyncOpenInterface:
        """`Client.open` for trio: open interface `interface_id` at `version`."""
        reply = await self._exchange("open", id=interface_id, version=version)
        handle = reply.result()["handle"]
        return AsyncOpenInterface(self, handle, interface_id, hangup_of(reply))

    async def open_venet(
        self,
        interface_id: int,
        *,
        slots: int = 256,
        capabilities: Mapping[int, int] | None = None,
        link_up: bool = True,
        slot_size: int | None = None,
    ) -> AsyncVenet:
        """`Client.open_venet` for trio: negotiate `capabilities`, make and attach the
        rings (sized for SG when granted), and bring the link up unless told not to."""
        reply = await self._exchange("open", id=interface_id, version=abi.VERSION)
        handle, hangup = reply.result()["handle"], hangup_of(reply)
        granted: dict[int, int] = {}
        try:
            for gid, bits in (capabilities or {}).items():
                data = pack_bytes(abi.negcap_request(gid, bits))
                answer = await self.request("call", handle=handle, function=abi.NEGCAP, data=data)
                granted[gid] = abi.negcap_reply(unpack_bytes(answer["data"]))[1]
            size = abi.ring_slot_size(granted, slot_size)
            venet = AsyncVenet(self, handle, slots, hangup, slot_size=size, granted=granted)
        except BaseException:
            with contextlib.suppress(ConnectorError, OSError):
                await self.request("close", handle=handle)
            hangup.close()
            raise
        try:
            await self.request("queue", tuple(venet.rx.fds), handle=handle, index=abi.RX_QUEUE)
            await self.request("queue", tuple(venet.tx.fds), handle=handle, index=abi.TX_QUEUE)
            if link_up:
                await venet.link_up()
        except BaseException:
            await venet.aclose()
            raise
        return venet

    async def wait_event(self) -> Event:
        """The next add or drop event (call it while no request is under way)."""
        while (event := self._protocol.next_event_nowait()) is None:
            await self._receive()
        return event

    async def aclose(self) -> None:
        self._sock.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncOpenInterface:
    """`OpenInterface` for trio: one interface this client has open; its calls await
    the reply. Every queue attached watches `hangup`, so ring waits end with IoqClosed
    once the daemon lets go of the interface."""

    def __init__(
        self, client: AsyncClient, handle: int, interface_id: int, hangup: socket.socket
    ) -> None:
        self.client = client
        self.handle = handle
        self.id = interface_id
        self.hangup = hangup
        self._open = True

    async def call(self, function: int, data: bytes = b"") -> bytes:
        """A device call: function number and bytes in, bytes out (ConnectorError)."""
        reply = await self.client.request(
            "call", handle=self.handle, function=function, data=pack_bytes(data)
        )
        return unpack_bytes(reply["data"])

    async def attach_queue(self, index: int, ioq: AsyncIoq | Ioq) -> None:
        """Hand the north side of `ioq` to the device as queue `index` (it then watches
        the hang-up socket)."""
        ioq.watch_peer(self.hangup)
        await self.client.request(
            "queue", tuple(ioq.fds), handle=self.handle, index=index, direction=ioq.direction
        )

    async def stats(self) -> dict[str, int]:
        """The device's counters."""
        stats: dict[str, int] = (await self.client.request("stats", handle=self.handle))["stats"]
        return stats

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(ConnectorError, OSError):
                await self.client.request("close", handle=self.handle)
            self.hangup.close()

    async def __aenter__(self) -> AsyncOpenInterface:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncVenet:
    """`Venet` for trio: sends and receives wait on the ring's wake-up fd; `recv` skips
    the empty buffers FLUSHRX hands back."""

    def __init__(
        self,
        client: AsyncClient,
        handle: int,
        slots: int,
        hangup: socket.socket,
        *,
        slot_size: int = abi.SLOT_SIZE,
        granted: dict[int, int] | None = None,
    ) -> None:
        self.client = client
        self.handle = handle
        self.hangup = hangup
        #: capability group -> the bits the device granted
        self.granted: dict[int, int] = dict(granted or {})
        self._pending: deque[bytes] = deque()
        self.rx = AsyncIoq.create(slots, slot_size, direction="to_north")
        try:
            self.tx = AsyncIoq.create(slots, slot_size, direction="to_south")
        except BaseException:
            self.rx.close()
            raise
        for ioq in (self.rx, self.tx):
            ioq.watch_peer(hangup)

    @property
    def sg(self) -> bool:
        return abi.sg_granted(self.granted)

    async def call(self, function: int, data: bytes = b"") -> bytes:
        reply = await self.client.request(
            "call", handle=self.handle, function=function, data=pack_bytes(data)
        )
        return unpack_bytes(reply["data"])

    async def negotiate(self, gid: int, bits: int) -> int:
        """NEGCAP (link down): the bits of group `gid` granted."""
        _, granted = abi.negcap_reply(await self.call(abi.NEGCAP, abi.negcap_request(gid, bits)))
        self.granted[gid] = granted
        return granted

    async def link_up(self) -> None:
        await self.call(abi.LINKUP)

    async def link_down(self) -> None:
        await self.call(abi.LINKDOWN)

    async def flush_rx(self) -> int:
        """`Venet.flush_rx`: FLUSHRX, repost the empty buffers, keep earlier frames."""
        await self.call(abi.FLUSHRX)
        empty = 0
        while True:
            try:
                got = self.rx.receive_batch_nowait(64)
            except IoqEmpty:
                return empty
            empty += sum(1 for frame in got if not frame)
            self._pending.extend(frame for frame in got if frame)

    async def send(self, frame: bytes) -> None:
        await self.tx.send(frame)

    async def recv(self) -> bytes:
        if self._pending:
            return self._pending.popleft()
        while not (frame := await self.rx.receive()):
            pass  # a flushed buffer: reposted, skipped
        return frame

    async def recv_batch(self, max_frames: int = 64) -> list[bytes]:
        if self._pending:
            return [self._pending.popleft() for _ in range(min(max_frames, len(self._pending)))]
        while not (frames := [f for f in await self.rx.receive_batch(max_frames) if f]):
            pass
        return frames

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
