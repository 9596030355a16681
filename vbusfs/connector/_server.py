"""The daemon side of the connector: member processes open their bus's devices.

Each peer is identified by the kernel (SO_PEERCRED), never by what it says,
and mapped to its bus through the membership model; a process on no bus is
refused. A client sees only its own bus. Everything runs in the daemon's
trio loop beside the FUSE handlers, and no handler waits on a client.

When a client closes, dies (even by SIGKILL: its socket closes), or breaks
the ring protocol, everything it opened is closed and its devices can be
opened again at once. When an interface a client has open is unlinked, the
client hears a `drop` event and its next operation on it fails with ENODEV.

This is the I/O shell: what a datagram means and what a reply or an event
looks like on the wire is `_protocol`'s business (`DaemonConnection`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from vbusfs.ioq import IoqError, IoqFault
from vbusfs.model import DeviceClass, DeviceConnection, Event, Vbus, VbusError, dump_config

from ._protocol import (
    Closed,
    DaemonConnection,
    Request,
    WireError,
    error_fields,
    pack_bytes,
)
from ._rights import RECEIVE, received, rights

# a deviceclass by registered name or `module:Class` spec (raises ImportError, ...)
FindClass = Callable[[str], type[DeviceClass]]

log = logging.getLogger("vbusfs.connector")

_CREDS = struct.Struct("3i")


class ClientFault(Exception):
    """The client broke the protocol: it is disconnected."""


@dataclass(eq=False)
class _Open:
    """One interface a client has open."""

    interface_id: int
    connection: DeviceConnection
    # our end of a socketpair whose other end the client's rings watch: closing it
    # wakes every wait on this device's queues, so a drop or a release never hangs them
    hangup: socket.socket | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    dropped: bool = False


class Connector:
    """Listens on a Unix socket and serves member processes."""

    def __init__(self, vbus: Vbus, path: str, find_class: FindClass) -> None:
        self.vbus = vbus
        self.path = path
        # modprobe's lookup of a class by name or import spec, given by the daemon: the
        # connector knows no deviceclass of its own
        self.find_class = find_class
        self.clients = 0
        # the daemon's owner (and root) may administer it: save, modprobe, rmmod
        self.owner = os.getuid()

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            await listener.bind(self.path)
            # Any user may connect; membership, checked per peer, is the authority.
            os.chmod(self.path, 0o666)
            listener.listen(128)
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    sock, _ = await listener.accept()
                    nursery.start_soon(self._client, sock)
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _client(self, sock: trio.socket.SocketType) -> None:
        with sock:
            pid, uid, _gid = _CREDS.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
            )
            try:
                bus = self.vbus.bus_of(pid)
            except VbusError:
                bus = None
            admin = uid in (0, self.owner)
            if bus is None and not admin:
                why = f"process {pid} is not a member of any bus"
                await sock.send(DaemonConnection().refuse(errno.EACCES, why))
                return
            self.clients += 1
            try:
                await _Session(self, sock, pid, bus, admin).run()
            except Exception:
                # A bug serving one client ends that client, never the daemon.
                log.exception("internal error serving client %d", pid)
            finally:
                self.clients -= 1


class _Session:
    def __init__(
        self,
        connector: Connector,
        sock: trio.socket.SocketType,
        pid: int,
        bus: str | None,
        admin: bool,
    ) -> None:
        self.vbus = connector.vbus
        self.find_class = connector.find_class
        self.sock = sock
        self.pid = pid
        self.bus = bus
        self.admin = admin
        self.protocol = DaemonConnection()
        self.opens: dict[int, _Open] = {}
        self.next_handle = 1
        self.send_lock = trio.Lock()
        self.events_in, self.events_out = trio.open_memory_channel[Event](math.inf)

    async def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        async with self.send_lock:
            await self.sock.sendmsg([data], rights(fds))

    def _heard(self, event: Event) -> None:
        if event.bus == self.bus:
            self.events_in.send_nowait(event)

    async def run(self) -> None:
        unsubscribe = self.vbus.subscribe(self._heard)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._forward_events)
                await self.send(self.protocol.hello(self.bus, self.pid, self.admin))
                try:
                    await self._requests()
                except ClientFault as exc:
                    log.warning("dropping client %d: %s", self.pid, exc)
                nursery.cancel_scope.cancel()
        finally:
            unsubscribe()
            for handle in list(self.opens):
                self._close(handle)

    async def _forward_events(self) -> None:
        async for event in self.events_out:
            if event.kind == "drop":
                for opened in self.opens.values():
                    if opened.interface_id == event.interface_id and not opened.dropped:
                        opened.dropped = True
                        _release(opened)
            await self.send(
                self.protocol.event(event.kind, event.interface_id, event.interface_type)
            )

    async def _requests(self) -> None:
        while True:
            try:
                datagram = received(await self.sock.recvmsg(*RECEIVE))
            except OSError:
                return
            out_fds: list[int] = []
            try:
                request = self.protocol.receive(datagram)
                if isinstance(request, Closed):
                    return  # the client closed or died
                try:
                    fields, out_fds = self._dispatch(request)
                except VbusError as exc:
                    fields = error_fields(exc.errno, exc.args[0] if exc.args else "")
            except WireError as exc:
                raise ClientFault(str(exc)) from None
            finally:
                for fd in datagram.fds:
                    os.close(fd)
            try:
                await self.send(self.protocol.reply(request, fields), out_fds)
            finally:
                for fd in out_fds:
                    os.close(fd)

    def _dispatch(self, request: Request) -> tuple[dict[str, Any], list[int]]:
        """The reply to one request, and file descriptors to send beside it."""
        if request.op == "open":
            return self._open(request)
        return self._reply(request), []

    def _open(self, request: Request) -> tuple[dict[str, Any], list[int]]:
        if self.bus is None:
            raise VbusError(f"process {self.pid} is not a member of any bus", errno=errno.EACCES)
        interface_id, version = request.integer("id"), request.integer("version")
        connection = self.vbus.open_interface(self.bus, interface_id, version)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handle = self.next_handle
        self.next_handle += 1
        opened = _Open(interface_id, connection, hangup=ours)
        self.opens[handle] = opened
        self.nursery.start_soon(self._run_device, handle, opened)
        return {"handle": handle}, [theirs.detach()]

    def _reply(self, request: Request) -> dict[str, Any]:
        op = request.op
        if op in _ADMIN_OPS:
            if not self.admin:
                raise VbusError("only root or the daemon's owner may do that", errno=errno.EPERM)
            return _ADMIN_OPS[op](self.vbus, request, self.find_class)
        if self.bus is None:
            raise VbusError(f"process {self.pid} is not a member of any bus", errno=errno.EACCES)
        if op == "list":
            bus = self.vbus.bus(self.bus)
            return {"interfaces": [{"id": i.id, "type": i.type} for i in bus.interfaces.values()]}
        opened, handle = self._handle(request)
        if op == "call":
            function = request.integer("function")
            out = opened.connection.call(function, request.data())
            return {"data": pack_bytes(out)}
        if op == "queue":
            if len(request.fds) != 4:
                raise VbusError("a queue takes 4 file descriptors", errno=errno.EINVAL)
            opened.connection.attach_queue(request.integer("index"), list(request.fds))
            return {}
        if op == "stats":
            return {"stats": opened.connection.stats()}
        if op == "close":
            self._close(handle)
            return {}
        raise WireError(f"unknown operation {op!r}")

    def _handle(self, request: Request) -> tuple[_Open, int]:
        handle = request.integer("handle")
        opened = self.opens.get(handle)
        if opened is None:
            raise VbusError(f"no open handle {handle}", errno=errno.EBADF)
        if opened.dropped:
            raise VbusError("the interface was dropped from the bus", errno=errno.ENODEV)
        return opened, handle

    async def _run_device(self, handle: int, opened: _Open) -> None:
        with opened.scope:
            try:
                await opened.connection.run()
            except IoqFault as exc:
                # A broken ring is the client's doing: it goes, the daemon stays.
                log.warning("client %d broke queue protocol: %s", self.pid, exc)
                self.nursery.cancel_scope.cancel()
            except IoqError as exc:
                log.info("client %d: interface %d stopped: %s", self.pid, opened.interface_id, exc)
            except Exception:
                log.exception("internal error in a device of client %d", self.pid)

    def _close(self, handle: int) -> None:
        opened = self.opens.pop(handle)
        if not opened.dropped:
            _release(opened)


def _release(opened: _Open) -> None:
    opened.scope.cancel()
    opened.connection.close()
    if opened.hangup is not None:
        opened.hangup.close()


def _save(vbus: Vbus, request: Request, find_class: FindClass) -> dict[str, Any]:
    return {"config": dump_config(vbus)}


def _modprobe(vbus: Vbus, request: Request, find_class: FindClass) -> dict[str, Any]:
    name = request.text("deviceclass", "modprobe needs a class name")
    try:
        cls = find_class(name)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise VbusError(f"no deviceclass {name!r}: {exc}", errno=errno.ENOENT) from None
    vbus.load_class(cls())
    return {"deviceclass": cls.name}


def _rmmod(vbus: Vbus, request: Request, find_class: FindClass) -> dict[str, Any]:
    name = request.text("deviceclass", "rmmod needs a class name")
    vbus.unload_class(name)
    return {}


_ADMIN_OPS = {"save": _save, "modprobe": _modprobe, "rmmod": _rmmod}
