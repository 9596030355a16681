"""The daemon side of the connector: member processes open their bus's devices.

Each peer is identified by the kernel (SO_PEERCRED), never by what it says,
and mapped to its bus through the membership model; a process on no bus is
refused. A client sees only its own bus. Everything runs in the daemon's
trio loop beside the FUSE handlers, and no handler waits on a client.

When a client closes, dies (even by SIGKILL: its socket closes), or breaks
the ring protocol, everything it opened is closed and its devices can be
opened again at once. When an interface a client has open is unlinked, the
client hears a `drop` event and its next operation on it fails with ENODEV.
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import math
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import trio

from vbusfs.classes import discover, import_class
from vbusfs.ioq import IoqError, IoqFault
from vbusfs.model import DeviceConnection, Event, Vbus, VbusError, dump_config

from ._wire import (
    MAX_FDS,
    MAX_MESSAGE,
    PROTOCOL,
    WireError,
    decode,
    encode,
    pack_bytes,
    unpack_bytes,
)

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

    def __init__(self, vbus: Vbus, path: str) -> None:
        self.vbus = vbus
        self.path = path
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
                await _send(
                    sock,
                    {"errno": errno.EACCES, "message": f"process {pid} is not a member of any bus"},
                )
                return
            self.clients += 1
            try:
                await _Session(self.vbus, sock, pid, bus, admin).run()
            except Exception:
                # A bug serving one client ends that client, never the daemon.
                log.exception("internal error serving client %d", pid)
            finally:
                self.clients -= 1


class _Session:
    def __init__(
        self, vbus: Vbus, sock: trio.socket.SocketType, pid: int, bus: str | None, admin: bool
    ) -> None:
        self.vbus = vbus
        self.sock = sock
        self.pid = pid
        self.bus = bus
        self.admin = admin
        self.opens: dict[int, _Open] = {}
        self.next_handle = 1
        self.send_lock = trio.Lock()
        self.events_in, self.events_out = trio.open_memory_channel[Event](math.inf)

    async def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        async with self.send_lock:
            await _send(self.sock, message, fds)

    def _heard(self, event: Event) -> None:
        if event.bus == self.bus:
            self.events_in.send_nowait(event)

    async def run(self) -> None:
        unsubscribe = self.vbus.subscribe(self._heard)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._forward_events)
                hello = {"bus": self.bus, "pid": self.pid, "admin": self.admin}
                await self.send({"hello": {**hello, "protocol": PROTOCOL}})
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
                {"event": event.kind, "id": event.interface_id, "type": event.interface_type}
            )

    async def _requests(self) -> None:
        while True:
            try:
                data, fds = await _receive(self.sock)
            except OSError:
                return
            if not data:
                return  # the client closed or died
            try:
                request = decode(data)
                seq = request.get("seq")
                reply, out_fds = self._dispatch(request, fds)
            except WireError as exc:
                raise ClientFault(str(exc)) from None
            except VbusError as exc:
                reply = {"errno": exc.errno, "message": exc.args[0] if exc.args else ""}
                out_fds = []
            finally:
                for fd in fds:
                    os.close(fd)
            reply["seq"] = seq
            try:
                await self.send(reply, out_fds)
            finally:
                for fd in out_fds:
                    os.close(fd)

    def _dispatch(
        self, request: dict[str, Any], fds: list[int]
    ) -> tuple[dict[str, Any], list[int]]:
        """The reply to one request, and file descriptors to send beside it."""
        op = request.get("op")
        if op == "open":
            return self._open(request)
        return self._reply(op, request, fds), []

    def _open(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        if self.bus is None:
            raise VbusError(f"process {self.pid} is not a member of any bus", errno=errno.EACCES)
        interface_id, version = _int(request, "id"), _int(request, "version")
        connection = self.vbus.open_interface(self.bus, interface_id, version)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handle = self.next_handle
        self.next_handle += 1
        opened = _Open(interface_id, connection, hangup=ours)
        self.opens[handle] = opened
        self.nursery.start_soon(self._run_device, handle, opened)
        return {"handle": handle}, [theirs.detach()]

    def _reply(self, op: Any, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if op in _ADMIN_OPS:
            if not self.admin:
                raise VbusError("only root or the daemon's owner may do that", errno=errno.EPERM)
            return _ADMIN_OPS[op](self.vbus, request)
        if self.bus is None:
            raise VbusError(f"process {self.pid} is not a member of any bus", errno=errno.EACCES)
        if op == "list":
            bus = self.vbus.bus(self.bus)
            return {"interfaces": [{"id": i.id, "type": i.type} for i in bus.interfaces.values()]}
        opened, handle = self._handle(request)
        if op == "call":
            function = _int(request, "function")
            out = opened.connection.call(function, unpack_bytes(request.get("data", "")))
            return {"data": pack_bytes(out)}
        if op == "queue":
            if len(fds) != 4:
                raise VbusError("a queue takes 4 file descriptors", errno=errno.EINVAL)
            opened.connection.attach_queue(_int(request, "index"), fds)
            return {}
        if op == "stats":
            return {"stats": opened.connection.stats()}
        if op == "close":
            self._close(handle)
            return {}
        raise WireError(f"unknown operation {op!r}")

    def _handle(self, request: dict[str, Any]) -> tuple[_Open, int]:
        handle = _int(request, "handle")
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


def _save(vbus: Vbus, request: dict[str, Any]) -> dict[str, Any]:
    return {"config": dump_config(vbus)}


def _modprobe(vbus: Vbus, request: dict[str, Any]) -> dict[str, Any]:
    name = request.get("deviceclass")
    if not isinstance(name, str):
        raise WireError("modprobe needs a class name")
    offered = discover()
    try:
        cls = offered[name] if name in offered else import_class(name)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise VbusError(f"no deviceclass {name!r}: {exc}", errno=errno.ENOENT) from None
    vbus.load_class(cls())
    return {"deviceclass": cls.name}


def _rmmod(vbus: Vbus, request: dict[str, Any]) -> dict[str, Any]:
    name = request.get("deviceclass")
    if not isinstance(name, str):
        raise WireError("rmmod needs a class name")
    vbus.unload_class(name)
    return {}


_ADMIN_OPS = {"save": _save, "modprobe": _modprobe, "rmmod": _rmmod}


def _int(request: dict[str, Any], key: str) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"{key} must be an integer")
    return value


async def _send(
    sock: trio.socket.SocketType, message: dict[str, Any], fds: list[int] | None = None
) -> None:
    data = encode(message)
    if fds:
        rights = array.array("i", fds).tobytes()
        await sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    else:
        await sock.send(data)


async def _receive(sock: trio.socket.SocketType) -> tuple[bytes, list[int]]:
    data, ancillary, flags, _ = await sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % 4])
            fds.extend(received)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ClientFault("a message was too long")
    return data, fds
