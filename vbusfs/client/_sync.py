"""The client's sync face: a blocking socket over the protocol core.

Every method that talks to the daemon may block until it answers, at most the
client's `timeout` (ConnectorTimeout after that); `events()` never blocks,
`wait_event()` blocks until an event or its own timeout.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any

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


def connect(mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> Client:
    """Connect the calling process to the devices of its bus.

    Blocks for the daemon's hello, at most `timeout` seconds (None: without end);
    the client's requests then wait for their replies as long.
    """
    path = find_connector(mountpoint, timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        # a socket timeout bounds connect, sends and receives alike (socket.timeout)
        sock.settimeout(timeout)
        try:
            with unix_address(path) as address:
                sock.connect(address)
            protocol = ClientConnection()
            protocol.receive_welcome(received(sock.recvmsg(*RECEIVE)))
        except TimeoutError:
            assert timeout is not None
            raise ConnectorTimeout("a connection", timeout) from None
        return Client(sock, protocol, timeout=timeout)
    except BaseException:
        sock.close()
        raise


class Client:
    """A connection to the daemon on behalf of this process's bus.

    Requests block until their reply, at most `timeout` seconds each (ConnectorTimeout,
    whose errno is ETIMEDOUT; a late reply is then ignored); add and drop events heard
    meanwhile queue up.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: ClientConnection,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        assert protocol.welcome is not None
        self._sock = sock
        self._protocol = protocol
        #: how long a request waits for its reply (None: without end)
        self.timeout = timeout
        #: the bus this process is a member of (None: an administrator on no bus)
        self.name: str | None = protocol.welcome.bus
        self.admin: bool = protocol.welcome.admin

    # -- requests (each blocks until the daemon answers) ---------------------

    def request(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> dict[str, Any]:
        """Ask the daemon `op`; its reply, or ConnectorError with its errno."""
        return self._exchange(op, fds, **fields).result()

    def _exchange(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> Reply:
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._send(self._protocol.send_request(op, fds, **fields))
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                heard = self._receive(left)
                if isinstance(heard, Reply):
                    return heard
                if isinstance(heard, Closed):
                    raise ConnectorError(0, CLOSED)
        except TimeoutError as exc:
            if isinstance(exc, ConnectorTimeout):
                raise
            assert timeout is not None
            raise ConnectorTimeout(repr(op), timeout) from None

    def _send(self, datagram: Datagram) -> None:
        self._sock.settimeout(self.timeout)
        self._sock.sendmsg([datagram.data], rights(datagram.fds))

    def _receive(self, timeout: float | None) -> Heard:
        """What the next datagram means (waiting at most `timeout`); fds of a stray are closed."""
        if timeout is not None and not select.select([self._sock], [], [], timeout)[0]:
            raise TimeoutError("no message from the daemon")
        heard = self._protocol.receive(received(self._sock.recvmsg(*RECEIVE)))
        if isinstance(heard, Stray | Closed):
            close_fds(heard.fds)  # nobody waits for them
        return heard

    # -- the bus -----------------------------------------------------------

    def interfaces(self) -> list[InterfaceEntry]:
        return interface_entries(self.request("list"))

    def open(self, interface_id: int, version: int) -> OpenInterface:
        """Open interface `interface_id` of this bus at interface `version` (its class's
        number); blocks for the reply. ENOENT: no such interface; EINVAL: a version the
        class does not speak; EBUSY: the device refuses another client."""
        reply = self._exchange("open", id=interface_id, version=version)
        handle = reply.result()["handle"]
        return OpenInterface(self, handle, interface_id, hangup_of(reply))

    def open_venet(
        self,
        interface_id: int,
        *,
        slots: int = 256,
        capabilities: Mapping[int, int] | None = None,
        link_up: bool = True,
        slot_size: int | None = None,
    ) -> Venet:
        """Open a venet interface as a `Venet` (negotiating `capabilities` first)."""
        interface = self.open(interface_id, abi.VERSION)
        return Venet(
            interface,
            slots=slots,
            capabilities=capabilities,
            link_up=link_up,
            slot_size=slot_size,
        )

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

    # -- events --------------------------------------------------------------

    def events(self) -> list[Event]:
        """The add and drop events heard so far (without waiting)."""
        while select.select([self._sock], [], [], 0)[0]:
            if isinstance(self._receive(0), Closed):
                break
        return self._protocol.events_nowait()

    def wait_event(self, timeout: float | None = None) -> Event:
        """The next add or drop event; blocks until one comes (TimeoutError after `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (event := self._protocol.next_event_nowait()) is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if isinstance(self._receive(left if left is not None else 3600.0), Closed):
                raise ConnectorError(0, CLOSED)
        return event

    def fileno(self) -> int:
        """The connection's socket: readable when an event (or the connection's end) is
        there to read, for a caller that sleeps elsewhere, then calls `events()`."""
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class OpenInterface:
    """One interface this client has open (`Client.open`); its calls block for the reply.

    `hangup` is a socket the daemon closes when it lets go of the interface (a drop,
    a close, a device loop that failed, or the daemon going away): every queue
    attached with `attach_queue` watches it, so no wait on them can hang once the
    interface is gone (it ends with IoqClosed). After a drop, calls fail with ENODEV;
    after the device's loop failed, with EIO.
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
        """A device call: function number and bytes in, bytes out (ConnectorError)."""
        reply = self.client.request(
            "call", handle=self.handle, function=function, data=pack_bytes(data)
        )
        return unpack_bytes(reply["data"])

    def attach_queue(self, index: int, ioq: Ioq | AsyncIoq) -> None:
        """Hand the north side of `ioq` to the device as queue `index`; from now on its
        waits end with IoqClosed once the daemon lets go of the interface."""
        ioq.watch_peer(self.hangup)
        self.client.request(
            "queue", tuple(ioq.fds), handle=self.handle, index=index, direction=ioq.direction
        )

    def stats(self) -> dict[str, int]:
        """The device's counters."""
        stats: dict[str, int] = self.client.request("stats", handle=self.handle)["stats"]
        return stats

    def close(self) -> None:
        if self._open:
            self._open = False
            # dropped or disconnected: nothing is left to release
            with contextlib.suppress(ConnectorError, OSError):
                self.client.request("close", handle=self.handle)
            self.hangup.close()

    def __enter__(self) -> OpenInterface:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Venet:
    """A virtual-ethernet driver over an open interface: two ioqs and the venet calls.

    `capabilities` ({group: bits}) are negotiated (NEGCAP) before the rings are made:
    with SG granted, frames carry a 10-byte virtio-net header and the rings' buffers
    take the largest segment (`abi.MAX_SG_MESSAGE`). `link_up=False` leaves the link
    down (call `negotiate`, then `link_up`; the rings are then sized at the default
    `slot_size`, `abi.SLOT_SIZE` (2048), unless given). `send` and `recv` block (at most `timeout`
    seconds) on the rings; `*_nowait` forms are on the rings themselves (`rx`, `tx`);
    `recv` skips the empty buffers FLUSHRX hands back.
    """

    def __init__(
        self,
        interface: OpenInterface,
        *,
        slots: int = 256,
        capabilities: Mapping[int, int] | None = None,
        link_up: bool = True,
        slot_size: int | None = None,
    ) -> None:
        self.interface = interface
        #: capability group -> the bits the device granted
        self.granted: dict[int, int] = {}
        self._pending: deque[bytes] = deque()
        self._rings: list[Ioq] = []
        try:
            for gid, bits in (capabilities or {}).items():
                self.negotiate(gid, bits)
            size = abi.ring_slot_size(self.granted, slot_size)
            self.rx = Ioq.create(slots, size, direction="to_north")
            self._rings.append(self.rx)
            self.tx = Ioq.create(slots, size, direction="to_south")
            self._rings.append(self.tx)
            interface.attach_queue(abi.RX_QUEUE, self.rx)
            interface.attach_queue(abi.TX_QUEUE, self.tx)
            if link_up:
                self.link_up()
        except BaseException:
            self.close()
            raise

    @property
    def mac(self) -> bytes:
        return self.interface.call(abi.MACQUERY)

    @property
    def sg(self) -> bool:
        """Frames carry a virtio-net header (SG granted)."""
        return abi.sg_granted(self.granted)

    def negotiate(self, gid: int, bits: int) -> int:
        """NEGCAP: ask for `bits` of group `gid` (link down); returns the bits granted."""
        _, granted = abi.negcap_reply(
            self.interface.call(abi.NEGCAP, abi.negcap_request(gid, bits))
        )
        self.granted[gid] = granted
        return granted

    def link_up(self) -> None:
        self.interface.call(abi.LINKUP)

    def link_down(self) -> None:
        self.interface.call(abi.LINKDOWN)

    def flush_rx(self) -> int:
        """FLUSHRX: the device hands back every posted receive buffer empty; they are
        reposted here. Frames that had arrived before are kept for `recv`. Returns how
        many buffers came back empty."""
        self.interface.call(abi.FLUSHRX)
        empty = 0
        while True:
            try:
                got = self.rx.receive_batch_nowait(64)
            except IoqEmpty:
                return empty
            empty += sum(1 for frame in got if not frame)
            self._pending.extend(frame for frame in got if frame)

    # spin_us: poll this long before sleeping (lower latency, at the price of CPU)

    def send(self, frame: bytes, timeout: float | None = None, *, spin_us: int = 0) -> None:
        self.tx.send(frame, timeout, spin_us=spin_us)

    def send_batch(
        self, frames: list[bytes], timeout: float | None = None, *, spin_us: int = 0
    ) -> None:
        self.tx.send_batch(frames, timeout, spin_us=spin_us)

    def recv(self, timeout: float | None = None, *, spin_us: int = 0) -> bytes:
        if self._pending:
            return self._pending.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            frame = self.rx.receive(left, spin_us=spin_us)
            if frame:
                return frame  # an empty one is a flushed buffer: reposted, skipped

    def recv_batch(
        self, max_frames: int = 64, timeout: float | None = None, *, spin_us: int = 0
    ) -> list[bytes]:
        if self._pending:
            return [self._pending.popleft() for _ in range(min(max_frames, len(self._pending)))]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            frames = [f for f in self.rx.receive_batch(max_frames, left, spin_us=spin_us) if f]
            if frames:
                return frames

    def stats(self) -> dict[str, int]:
        return self.interface.stats()

    def close(self) -> None:
        self.interface.close()
        for ring in self._rings:
            ring.close()

    def __enter__(self) -> Venet:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
