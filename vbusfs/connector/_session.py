"""One member process's connection: its requests, its opens, its events.

A session speaks for the process that connected (`PeerPin`) and for its bus, re-checked on
every request and twice a second; everything it opened is closed when it ends, whatever the
ending. The listener, admission and limits are `_server`'s.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from vbusfs.ioq import IoqError, IoqFault
from vbusfs.model import Event, InterfaceClosed, InterfaceOpened, VbusError

from ._admin import ADMIN_OPS, administer
from ._datapath import DataPath, Open, Outcome, data_path_of, release
from ._device_events import hook_device_events
from ._monitor import Monitor, reply_of
from ._pin import PeerPin
from ._protocol import Closed, DaemonConnection, Request, WireError, pack_bytes
from ._records import Scope
from ._refusals import EXHAUSTED, attach_queue, out_of
from ._rights import RECEIVE, received, rights
from ._workers import WorkerDataPath

if TYPE_CHECKING:
    from ._server import Connector

log = logging.getLogger("vbusfs.connector")


class Session:
    def __init__(
        self,
        connector: Connector,
        sock: trio.socket.SocketType,
        pid: int,
        bus: str | None,
        admin: bool,
        pin: PeerPin,
        credentials: tuple[int, frozenset[int]] = (0, frozenset()),
    ) -> None:
        self.connector = connector
        self.vbus = connector.vbus
        self.sock = sock
        self.pid = pid
        self.bus = bus
        # the process this connection speaks for, whatever its pid comes to name
        self.pin = pin
        self.uid, self.gids = credentials  # checked against its bus's perms
        # why this connection no longer speaks for its bus (its process left, moved or
        # exited, or the bus's perms shut its user out), and the errno that refuses its
        # requests (EACCES, ESRCH)
        self.revoked: str | None = None
        self.revoked_errno = errno.EACCES
        self.admin = admin
        self.protocol = DaemonConnection()
        self.opens: dict[int, Open] = {}
        # set once the connection asked `monitor`: from then on it only hears records
        self.monitor: Monitor | None = None
        self.next_handle = 1
        self.send_lock = trio.Lock()
        # bounded: a client that reads no events while its bus changes is dropped
        self.events_in, self.events_out = trio.open_memory_channel[Event](1024)

    async def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        async with self.send_lock:
            await self.sock.sendmsg([data], rights(fds))

    def _heard(self, event: Event) -> None:
        if event.bus == self.bus and self.revoked is None and self.monitor is None:
            try:
                self.events_in.send_nowait(event)
            except trio.WouldBlock:
                self.connector.complain(
                    self.pid, logging.INFO, "client %d reads no events: dropped", self.pid
                )
                self.nursery.cancel_scope.cancel()

    async def run(self) -> None:
        unsubscribe = self.vbus.subscribe(self._heard)
        self.connector.sessions.add(self)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._forward_events)
                nursery.start_soon(self._watch_authority)
                try:
                    await self.send(self.protocol.hello(self.bus, self.pid, self.admin))
                    await self._requests()
                except OSError as exc:
                    # it closed, shut its reading side or died: nothing to tell it
                    log.debug("client %d went away: %s", self.pid, exc)
                nursery.cancel_scope.cancel()
        finally:
            unsubscribe()
            self.connector.sessions.discard(self)
            if self.monitor is not None:
                self.connector.monitors.discard(self.monitor)
            for handle in list(self.opens):
                self._close(handle)

    async def _forward_events(self) -> None:
        async for event in self.events_out:
            if event.kind == "drop":
                for opened in self.opens.values():
                    if opened.interface_id == event.interface_id and not opened.dropped:
                        opened.dropped = True
                        release(opened, self.connector.closer)
                        self._published_close(opened)
            try:
                await self.send(
                    self.protocol.event(event.kind, event.interface_id, event.interface_type)
                )
            except OSError as exc:
                log.debug("client %d hears no events: %s", self.pid, exc)
                self.nursery.cancel_scope.cancel()
                return

    async def _watch_authority(self) -> None:
        """Between requests too: a process that left its bus (or exited) keeps nothing
        open on it."""
        while self.revoked is None:
            await trio.sleep(self.connector.limits.recheck_interval)
            # no descriptor to read /proc with: the verdict waits for the next round
            with contextlib.suppress(OSError):
                self._recheck()

    def _recheck(self) -> None:
        """Is the connected process alive, on the bus it connected for, and do the bus's
        perms still let its user in? If not, revoke."""
        if self.revoked is not None:
            return
        # before the bus: its pid may name another process now, a member of the bus
        if self.pin.exited():
            self._revoke(
                errno.ESRCH,
                f"process {self.pid} has exited: its connection speaks for no other process",
            )
            return
        if self.bus is None:
            return
        try:
            now = self.vbus.bus_of(self.pid)
        except VbusError:
            now = None  # the process is gone
        # an OSError (no descriptor to read /proc with) goes to the caller: no verdict
        if now != self.bus:
            where = "left it" if now is None else f"moved to {now!r}"
            why = f"process {self.pid} is no longer a member of bus {self.bus!r} ({where})"
        elif not self.vbus.may_use(now, self.uid, self.gids):
            why = f"bus {now!r}'s perms no longer let uid {self.uid} use it"
        else:
            return
        self._revoke(errno.EACCES, why)

    def _revoke(self, code: int, why: str) -> None:
        self.revoked, self.revoked_errno = why, code
        log.info("client %d: %s; what it had open is closed", self.pid, why)
        if self.monitor is not None and self.monitor.scope.bus is not None:
            self.monitor.revoke(why)
        for handle in list(self.opens):
            self._close(handle)

    async def _requests(self) -> None:
        while True:
            datagram = received(await self.sock.recvmsg(*RECEIVE))
            out_fds: list[int] = []
            seq = None
            try:
                request = self.protocol.receive(datagram)
                if isinstance(request, Closed):
                    return  # the client closed or died
                seq = request.seq
                fields, out_fds = await self._dispatch(request)
                reply = self.protocol.reply(request, fields)
            except VbusError as exc:
                reply = self.protocol.refusal(seq, exc.errno, exc.args[0] if exc.args else "")
            except WireError as exc:
                self.connector.complain(
                    self.pid, logging.WARNING, "bad request from client %d: %s", self.pid, exc
                )
                reply = self.protocol.refusal(seq, exc.errno, str(exc))
            except OSError as exc:
                # the daemon ran out of something (descriptors, memory) serving it
                code = exc.errno or errno.EIO
                self.connector.complain(
                    self.pid, logging.WARNING, "refused client %d: %s", self.pid, exc
                )
                why = out_of(exc) if code in EXHAUSTED else f"{os.strerror(code)}: {exc}"
                reply = self.protocol.refusal(seq, code, why)
            finally:
                for fd in datagram.fds:
                    os.close(fd)
            try:
                await self.send(reply, out_fds)
            finally:
                for fd in out_fds:
                    os.close(fd)
            if self.monitor is not None:
                await self.monitor.serve(self)  # its connection hears records to its end
                return

    async def _dispatch(self, request: Request) -> tuple[dict[str, Any], list[int]]:
        """The reply to one request, and file descriptors to send beside it."""
        op = request.op
        if op == "open":
            return self._open(request)
        if op == "monitor":
            return self._monitor(), []
        if op in ADMIN_OPS:
            return await self._administer(request), []
        bus = self._bus()
        if op == "list":
            found = self.vbus.bus(bus).interfaces.values()
            return {"interfaces": [{"id": i.id, "type": i.type} for i in found]}, []
        opened, handle = self._handle(request)
        return await self._on_handle(request, opened, handle), []

    async def _close_in_order(self, handle: int, path: DataPath) -> dict[str, Any]:
        """A client's close of a data path, answered once its close order has run (or, for
        a loop that ignores the stop, once the bound let its client go)."""
        self._close(handle)
        with trio.move_on_after(self.connector.closer.bound + 0.5):
            await path.finished.wait()
        return {}

    def _monitor(self) -> dict[str, Any]:
        """Make this connection a monitor: the daemon's owner and root hear everything,
        a member its own bus (behaviour §9)."""
        if self.monitor is not None:
            raise VbusError("this connection is a monitor already", errno=errno.EALREADY)
        if self.opens:
            raise VbusError("a connection with devices open cannot monitor", errno=errno.EBUSY)
        scope = Scope(None) if self.admin else Scope(self._bus())
        self.monitor = Monitor(scope)
        self.connector.monitors.add(self.monitor)
        return reply_of(self.monitor)

    def _bus(self) -> str:
        """The caller's bus, re-checked now: EACCES if it is on none or left it, ESRCH if
        its process exited."""
        self._recheck()
        if self.revoked is not None:
            raise VbusError(self.revoked, errno=self.revoked_errno)
        if self.bus is None:
            raise VbusError(f"process {self.pid} is not a member of any bus", errno=errno.EACCES)
        return self.bus

    def _open(self, request: Request) -> tuple[dict[str, Any], list[int]]:
        bus = self._bus()
        interface_id, version = request.integer("id"), request.integer("version")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection = self.vbus.open_interface(bus, interface_id, version)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        handle = self.next_handle
        self.next_handle += 1
        opened = Open(interface_id, connection, hangup=ours)
        try:
            opened.datapath = data_path_of(
                self.vbus,
                bus,
                interface_id,
                opened,
                self._loop_ended,
                self.connector.workers,
                self.connector.closer.bound,
            )
        except BaseException:
            connection.close()
            ours.close()
            theirs.close()
            raise
        interface = opened.interface
        assert interface is not None  # data_path_of looked it up
        hook_device_events(self, opened, interface)
        self.opens[handle] = opened
        self.vbus.changes.publish(InterfaceOpened(interface, self.pid))
        if opened.datapath is None:  # legacy: run() on this loop, from the open on
            self.nursery.start_soon(self._run_device, handle, opened)
        return {"handle": handle}, [theirs.detach()]

    async def _administer(self, request: Request) -> dict[str, Any]:
        if not self.admin:
            raise VbusError("only root or the daemon's owner may do that", errno=errno.EPERM)
        self._recheck()  # an administrator's authority, too, ends with its process
        if self.revoked is not None and self.revoked_errno == errno.ESRCH:
            raise VbusError(self.revoked, errno=errno.ESRCH)
        return await administer(request.op, self.vbus, request, self.connector)

    async def _on_handle(self, request: Request, opened: Open, handle: int) -> dict[str, Any]:
        """An operation on an open handle: a worker answers its calls and stats, and a
        data path's close is answered once its close order has run."""
        op, path = request.op, opened.datapath
        if op == "call":
            function = request.integer("function")
            if isinstance(path, WorkerDataPath):
                return {"data": pack_bytes(await path.call(function, request.data()))}
            return {"data": pack_bytes(opened.connection.call(function, request.data()))}
        if op == "queue":
            if len(request.fds) != 4:
                raise VbusError("a queue takes 4 file descriptors", errno=errno.EINVAL)
            if path is not None:
                path.attach(request.integer("index"), request.fds, request.fields.get("direction"))
            else:
                attach_queue(opened.connection, request.integer("index"), request.fds)
            return {}
        if op == "stats":
            if isinstance(path, WorkerDataPath):
                return {"stats": await path.stats()}
            return {"stats": opened.connection.stats()}
        if op == "close":
            if path is not None:
                return await self._close_in_order(handle, path)
            self._close(handle)
            return {}
        raise WireError(f"unknown operation {op[:64]!r}")

    def _handle(self, request: Request) -> tuple[Open, int]:
        handle = request.integer("handle")
        opened = self.opens.get(handle)
        if opened is None:
            raise VbusError(f"no open handle {handle}", errno=errno.EBADF)
        if opened.dropped:
            raise VbusError("the interface was dropped from the bus", errno=errno.ENODEV)
        if opened.failed is not None:
            raise VbusError(opened.failed, errno=errno.EIO)
        return opened, handle

    def _loop_ended(self, path: DataPath, outcome: Outcome) -> None:
        """A device loop ended before it was stopped (on this loop's thread)."""
        opened = next((o for o in self.opens.values() if o.datapath is path), None)
        if isinstance(outcome, IoqFault):
            log.warning("client %d broke queue protocol of %s: %s", self.pid, path.names, outcome)
            self.nursery.cancel_scope.cancel()  # as a legacy device's: the client goes
        elif outcome is None:
            log.info("%s: loop returned before it was stopped", path.names)
        else:
            log.error("%s: device loop failed (client %d)", path.names, self.pid, exc_info=outcome)
            self.connector.closer.close(path)  # its client's waits end (the hang-up closes)
            if opened is None:
                return
            opened.failed = f"device loop failed: {outcome!r}"[:512]
            data = self.protocol.event(
                "fault", opened.interface_id, opened.interface_type, opened.failed
            )
            with contextlib.suppress(RuntimeError):  # the session is ending anyway
                self.nursery.start_soon(self._tell, data)

    async def _tell(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            await self.send(data)

    async def _run_device(self, handle: int, opened: Open) -> None:
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
            release(opened, self.connector.closer)
        self._published_close(opened)

    def _published_close(self, opened: Open) -> None:
        interface, opened.interface = opened.interface, None
        if interface is not None:
            self.vbus.changes.publish(InterfaceClosed(interface, self.pid))
