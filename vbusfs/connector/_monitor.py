"""Monitors: connector connections that hear every change on the mount as it happens.

A connection becomes a monitor by asking `monitor`; from then on it sends nothing the
daemon heeds (anything it sends is ignored; its hang-up ends it) and hears records
(`_records`). One subscription to the model's changes feeds every monitor: each change
is turned into records once, in the model's thread, and pushed into the `Backlog` of
each monitor whose scope hears it. Pushing never waits: a monitor whose reader falls
behind loses records, counted, never the daemon's time. Each monitor's sender task moves
its backlog to its socket, a batch per datagram.

A monitor ends after its last record (`unmounted`; `revoked` for a member's monitor
whose process left its bus), when its peer hangs up, or when the daemon stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import termios
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from vbusfs.model import (
    AttributeChanged,
    AttributeOwner,
    AttributeStored,
    BusCreated,
    BusRemoved,
    Change,
    ClassLoaded,
    ClassUnloaded,
    Device,
    DeviceCreated,
    DeviceRemoved,
    Interface,
    InterfaceClosed,
    InterfaceOpened,
    Linked,
    MembershipChanged,
    PermStored,
    TypeSet,
    Unlinked,
    Unmounted,
    Vbus,
)

from ._records import BUFFER, EVERYONE, Audience, Backlog, Body, Scope, body
from ._rights import RECEIVE, received

if TYPE_CHECKING:
    from ._session import Session

log = logging.getLogger("vbusfs.connector")

# while its reader has not read what was sent, a monitor gathers records this many seconds
# at a time, up to this many
GATHER = 0.001
GATHER_RECORDS = 256
_OUTQ = struct.Struct("i")


def _unread(sock: trio.socket.SocketType) -> int:
    """Bytes sent on `sock` that its peer has not read yet (0 if that cannot be told)."""
    try:
        found = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(_OUTQ.size))
    except OSError:
        return 0
    unread: int = _OUTQ.unpack(found)[0]
    return unread


def _interface(interface: Interface) -> dict[str, Any]:
    return {"bus": interface.bus.name, "interface": interface.id, "device": interface.device.name}


def _buses_of(device: Device) -> frozenset[str]:
    return frozenset(interface.bus.name for interface in device.interfaces.values())


def _owner(owner: AttributeOwner) -> tuple[dict[str, Any], Audience]:
    if isinstance(owner, Interface):
        return {"bus": owner.bus.name, "interface": owner.id}, frozenset({owner.bus.name})
    assert isinstance(owner, Device)
    return {"device": owner.name}, _buses_of(owner)


def records_of(change: Change) -> list[tuple[dict[str, Any], Audience]]:
    """The records (without seq and time) a change makes, each with its audience; none
    for a change a monitor does not show."""
    record: dict[str, Any]
    kind = type(change)
    if kind is AttributeStored or kind is AttributeChanged:  # the common case, first
        assert isinstance(change, AttributeStored | AttributeChanged)
        event = "stored" if kind is AttributeStored else "changed"
        where, audience = _owner(change.owner)
        return [({"event": event, **where, "attribute": change.name}, audience)]
    match change:
        case DeviceCreated(device) | DeviceRemoved(device):
            event = "created" if isinstance(change, DeviceCreated) else "removed"
            return [({"event": event, "object": "device", "name": device.name}, None)]
        case BusCreated(bus) | BusRemoved(bus):
            event = "created" if isinstance(change, BusCreated) else "removed"
            record = {"event": event, "object": "bus", "name": bus.name}
            return [(record, frozenset({bus.name}))]
        case TypeSet(device):
            name = device.deviceclass.name if device.deviceclass is not None else ""
            return [({"event": "type", "device": device.name, "class": name}, None)]
        case Linked(interface) | Unlinked(interface):
            event = "linked" if isinstance(change, Linked) else "unlinked"
            record = {"event": event, **_interface(interface), "link": interface.link_name}
            return [(record, frozenset({interface.bus.name}))]
        case PermStored(bus, name):
            return [({"event": "perm", "bus": bus.name, "attribute": name}, frozenset({bus.name}))]
        case MembershipChanged(pid, left, joined, how):
            made = []
            if left is not None and left != joined:
                made.append(({"event": "left", "bus": left, "pid": pid, "how": how}, left))
            if joined is not None and joined != left:
                made.append(({"event": "joined", "bus": joined, "pid": pid, "how": how}, joined))
            return [(record, frozenset({bus})) for record, bus in made]
        case InterfaceOpened(interface, pid) | InterfaceClosed(interface, pid):
            event = "opened" if isinstance(change, InterfaceOpened) else "closed"
            record = {"event": event, **_interface(interface), "pid": pid}
            return [(record, frozenset({interface.bus.name}))]
        case ClassLoaded(name) | ClassUnloaded(name):
            event = "loaded" if isinstance(change, ClassLoaded) else "unloaded"
            return [({"event": event, "class": name}, None)]
        case Unmounted(mountpoint):
            return [({"event": "unmounted", "mountpoint": mountpoint}, EVERYONE)]
    return []


class Monitor:
    """One monitor: its scope, its backlog and the wake-up of its sender."""

    def __init__(self, scope: Scope, capacity: int = BUFFER) -> None:
        self.scope = scope
        self.backlog = Backlog(capacity)
        self._wake = trio.Event()
        self.finished = False  # its last record is in the backlog
        self.done = trio.Event()  # its last record was sent, or it ended otherwise

    def push(self, text: str | Body, *, final: bool = False) -> None:
        """Queue one record's body; never waits (called in the model's thread)."""
        if self.finished:
            return
        self.backlog.push(text, final=final)
        self.finished = final
        self._wake.set()

    def revoke(self, why: str) -> None:
        """End a member's monitor: its process no longer speaks for the bus it watched."""
        self.push(body({"event": "revoked", "why": why}, time.time()), final=True)

    async def serve(self, session: Session) -> None:
        """Send records until the last one has gone or the peer hangs up."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_peer, session, nursery.cancel_scope)
                try:
                    await self._send(session)
                except OSError as exc:  # it closed or died: nothing to tell it
                    # (caught here, inside the nursery, which would wrap it in a group)
                    log.debug("monitor of process %d went away: %s", session.pid, exc)
                nursery.cancel_scope.cancel()
        finally:
            self.done.set()

    async def _send(self, session: Session) -> None:
        while True:
            if not self.backlog.pending:
                if self.finished:
                    return
                self._wake = trio.Event()
                await self._wake.wait()
                # the reader has not read the last datagram yet: sending now would not
                # reach it sooner, so let changes gather into one batch meanwhile (a burst
                # then costs both sides a wake-up per batch, not per record)
                while (
                    not self.finished
                    and len(self.backlog) < GATHER_RECORDS
                    and _unread(session.sock) > 0
                ):
                    await trio.sleep(GATHER)
                continue
            datagram = self.backlog.pack()
            assert datagram is not None
            await session.send(datagram)

    @staticmethod
    async def _watch_peer(session: Session, scope: trio.CancelScope) -> None:
        # a monitor asks nothing more: whatever it sends is read and ignored; its hang-up
        # (an empty datagram) or a broken socket ends it
        with contextlib.suppress(OSError):
            while True:
                datagram = received(await session.sock.recvmsg(*RECEIVE))
                for fd in datagram.fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if not datagram.data and not datagram.truncated:
                    break
        scope.cancel()


class Monitors:
    """Every monitor of one connector, and the one subscription that feeds them."""

    def __init__(self, vbus: Vbus, clock: Callable[[], float] = time.time) -> None:
        self.vbus = vbus
        self.clock = clock
        self._monitors: set[Monitor] = set()
        self._unsubscribe: Callable[[], None] | None = None
        # called when the first monitor arrives (the daemon's membership watch takes its
        # first look then, so what happens from the first record on is reported)
        self.on_first: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return bool(self._monitors)

    def add(self, monitor: Monitor) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.vbus.changes.subscribe(self._heard)
        first = not self._monitors
        self._monitors.add(monitor)
        if first and self.on_first is not None:
            try:
                self.on_first()
            except OSError as exc:  # out of fds, say: the next sweep takes the first look
                log.warning("membership watch not started yet: %s", exc)
            except Exception:  # never the monitor's failure: forks are missed, logged
                log.exception("internal error starting the membership watch")

    def discard(self, monitor: Monitor) -> None:
        self._monitors.discard(monitor)
        if not self._monitors and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _heard(self, change: Change) -> None:
        made = records_of(change)
        if not made:
            return
        now = self.clock()
        for record, audience in made:
            text = Body(record, now)  # encoded when sent: a dropped record costs none
            final = audience is EVERYONE  # the unmount
            for monitor in tuple(self._monitors):
                if monitor.scope.hears(audience):
                    monitor.push(text, final=final)

    async def drained(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until every monitor has sent its last record."""
        with trio.move_on_after(timeout):
            for monitor in tuple(self._monitors):
                await monitor.done.wait()


def reply_of(monitor: Monitor) -> dict[str, object]:
    """What the `monitor` request's reply says: the scope and the buffer."""
    return {"monitor": {"bus": monitor.scope.bus, "buffer": monitor.backlog.capacity}}
