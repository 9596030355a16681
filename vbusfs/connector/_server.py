"""The daemon side of the connector: member processes open their bus's devices.

Each peer is identified by the kernel (SO_PEERCRED), never by what it says, and
mapped to its bus through the membership model; a process on no bus is refused. A
client sees only its own bus. Everything runs in the daemon's trio loop beside the
FUSE handlers, and no handler waits on a client.

When a client closes, dies (even by SIGKILL: its socket closes), or breaks the ring
protocol, everything it opened is closed and its devices can be opened again at once. When
an interface a client has open is unlinked, the client hears a `drop` event and its next
operation on it fails with ENODEV. A deviceclass that declares queues has its data path run
by `_datapath` (its loop in a thread of its own, one close order for every ending); when its
loop fails, the client hears a `fault` event and its next operation fails with EIO.

A client never takes the daemon with it: connections are capped per uid and in
total (`Limits`), running out of file descriptors refuses that connection or
request (EMFILE), a bad request is refused with an errno and logged at most a
few times a second per client, and the caller's bus is re-checked on every
request and twice a second: a process that left or moved, or whose bus's perms
no longer let it in (behaviour §6), loses what it had open and is refused (EACCES).
A connection speaks for the process that made it and for no other (`PeerPin`): once
that process has exited, a recycled pid changes nothing; the connection is refused (ESRCH).

The I/O shell only: the wire format is `_protocol`'s business (`DaemonConnection`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
from typing import Any

import trio

from vbusfs._unixaddr import unix_address
from vbusfs.model import Vbus, VbusError

from ._admin import Catalog, FindClass, as_catalog
from ._datapath import Closer
from ._forks import Workers
from ._limits import Limits, LogBudgets
from ._monitor import Monitors
from ._pin import PeerPin
from ._protocol import DaemonConnection
from ._refusals import EXHAUSTED, out_of, refuse_exhausted, spare_fd
from ._session import Session

log = logging.getLogger("vbusfs.connector")

_CREDS = struct.Struct("3i")


class ClientFault(Exception):
    """Kept for importers; nothing raises it (a bad request is refused, the client kept)."""


class Connector:
    """Listens on a Unix socket and serves member processes."""

    def __init__(
        self,
        vbus: Vbus,
        path: str,
        catalog: Catalog | FindClass,
        limits: Limits | None = None,
        *,
        process_workers: bool = True,
    ) -> None:
        self.vbus = vbus
        self.path = path
        # the deviceclasses modprobe, reload and reset reach, given by the daemon (a lookup
        # function alone allows modprobe): the connector knows none of its own
        self.catalog = as_catalog(catalog)
        self.sessions: set[Session] = set()
        self.limits = limits if limits is not None else Limits()
        self.clients = 0
        self.by_uid: dict[int, int] = {}
        self.log_budgets = LogBudgets(self.limits)
        # the daemon's owner (and root) may administer it: save, modprobe, reload, rmmod, reset
        self.owner = os.getuid()
        # ends the data paths of classes that declare queues, in the one close order
        self.closer = Closer(self.limits.join_bound)
        # the worker processes of classes whose loops run in one (isolation "process");
        # without them (an in-process test harness) every loop runs in a thread
        self.workers = Workers(vbus) if process_workers else None
        # connections that asked to hear every change (`vbusfs monitor`)
        self.monitors = Monitors(vbus)

    def release_all(self) -> int:
        """Close every interface any client has open, as its close would; how many."""
        handles = [(session, handle) for session in self.sessions for handle in session.opens]
        for session, handle in handles:
            session._close(handle)
        return len(handles)

    def complain(self, pid: int, level: int, text: str, *args: object) -> None:
        """Log a client's fault, at most a few times a second per client and in total."""
        held = self.log_budgets.take(pid, trio.current_time())
        if held is None:
            return
        mine, total = held
        if mine or total:
            text += " (held back since the last line: %d from this client, %d in all)"
            args = (*args, mine, total)
        log.log(level, text, *args)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # one descriptor kept in reserve: with none left, it is let go for the moment
        # it takes to accept the waiting connection and tell it why it is refused
        spare: int | None = spare_fd()
        try:
            with unix_address(self.path) as address:
                await listener.bind(address)
            # Any user may connect; membership, checked per peer, is the authority.
            os.chmod(self.path, 0o666)
            listener.listen(128)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.closer.run)
                if self.workers is not None:
                    await nursery.start(self.workers.run)
                task_status.started()
                while True:
                    try:
                        sock, _ = await listener.accept()
                    except OSError as exc:
                        if exc.errno in EXHAUSTED:
                            spare = await refuse_exhausted(self.complain, listener, spare, exc)
                        else:  # a peer gone before it was accepted, say: never the end
                            self.complain(0, logging.WARNING, "accept failed: %s", exc)
                            await trio.sleep(0.01)
                        continue
                    nursery.start_soon(self._client, sock)
        finally:
            # the daemon stops: every device loop stopped meanwhile gets the bound to end
            await self.closer.drain()
            listener.close()
            if spare is not None:
                os.close(spare)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _client(self, sock: trio.socket.SocketType) -> None:
        with sock:
            try:
                # first, before anything awaits: the nearer to accept, the narrower
                # the race of pidfd_open's fallback (see PeerPin)
                pin = PeerPin.of(sock)
            except OSError as exc:  # no descriptor for the pidfd, say: a refusal
                await self._refuse(sock, 0, exc)
                return
            try:
                with pin:
                    await self._admit(sock, pin)
            except Exception:
                # A bug serving one client ends that client, never the daemon.
                log.exception("internal error serving a client")

    async def _refuse(self, sock: trio.socket.SocketType, pid: int, exc: OSError) -> None:
        code = exc.errno or errno.EIO
        why = out_of(exc) if code in EXHAUSTED else f"{os.strerror(code)}: {exc}"
        self.complain(pid, logging.WARNING, "refusing a connection: %s", why)
        with contextlib.suppress(OSError):
            await sock.send(DaemonConnection().refuse(code, why))

    async def _admit(self, sock: trio.socket.SocketType, pin: PeerPin) -> None:
        pid, uid, gid = _CREDS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
        )
        limits = self.limits
        refusal: tuple[int, str] | None = None
        bus: str | None = None
        gids = frozenset({gid})
        if self.clients >= limits.connections:
            refusal = errno.EAGAIN, f"too many connections (at most {limits.connections})"
        elif self.by_uid.get(uid, 0) >= limits.connections_per_uid:
            refusal = (
                errno.EAGAIN,
                (f"too many connections for uid {uid} (at most {limits.connections_per_uid})"),
            )
        else:
            try:
                bus = self.vbus.bus_of(pid)
                gids |= self.vbus.groups_of(pid) if uid and bus is not None else frozenset()
            except VbusError:
                bus = None
            except OSError as exc:  # no descriptor left to read /proc with, say
                refusal = (
                    exc.errno or errno.EIO,
                    f"cannot tell the bus of process {pid}: "
                    + (out_of(exc) if exc.errno in EXHAUSTED else str(exc)),
                )
        if refusal is None and bus is not None and not self.vbus.may_use(bus, uid, gids):
            refusal = errno.EACCES, f"bus {bus!r}'s perms do not let uid {uid} use it"
        admin = uid in (0, self.owner)
        if refusal is None and bus is None and not admin:
            refusal = errno.EACCES, f"process {pid} is not a member of any bus"
        if refusal is not None:
            if refusal[0] != errno.EACCES:
                self.complain(pid, logging.WARNING, "refusing process %d: %s", pid, refusal[1])
            with contextlib.suppress(OSError):
                await sock.send(DaemonConnection().refuse(*refusal))
            return
        self.clients += 1
        self.by_uid[uid] = self.by_uid.get(uid, 0) + 1
        try:
            await Session(self, sock, pid, bus, admin, pin, (uid, gids)).run()
        except Exception:
            log.exception("internal error serving client %d", pid)
        finally:
            self.clients -= 1
            self.by_uid[uid] -= 1
            if not self.by_uid[uid]:
                del self.by_uid[uid]
