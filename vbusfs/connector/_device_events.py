"""Device events: what a device connection tells its own client (behaviour §7.1).

The connector gives every connection it opens an `event_sink` (see
`DeviceConnection.send_event`) and a `notice_sink` (`DeviceConnection.notify`); a
device calls them from any thread, never waiting: an event sent from another
thread than the daemon's loop (a `serve` thread) is encoded there and handed to
the loop in order (`run_sync_soon`). A worker's events and notices come over its
control channel (`_workers`) and reach these same sinks on the loop. Each client
session has one queue and one task sending its device events in the order the
devices sent them. A client that lets more than `MAX_WAITING` pile up loses the
newest (logged once per session), so a device never waits for a client that
does not read.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from vbusfs.model import Interface

    from ._datapath import Open
    from ._session import Session

log = logging.getLogger("vbusfs.connector")

MAX_WAITING = 256

# session -> the sending end of its device-event queue (the task holds the other)
_queues: weakref.WeakKeyDictionary[Session, trio.MemorySendChannel[bytes]] = (
    weakref.WeakKeyDictionary()
)


def hook_device_events(session: Session, opened: Open, interface: Interface) -> None:
    """Let `opened`'s connection send device events to `session`'s client and mark the
    attributes of `interface` and its device changed."""
    token = trio.lowlevel.current_trio_token()
    loop_thread = threading.get_ident()
    handed = [0]  # events handed to the loop from other threads, not delivered yet
    lock = threading.Lock()

    def deliver_handed(message: bytes) -> None:
        with lock:
            handed[0] -= 1
        deliver(message)

    def deliver(message: bytes) -> None:
        if session.revoked is not None or opened.dropped or opened.failed is not None:
            return
        if not any(o is opened for o in session.opens.values()):
            return  # closed: its client no longer hears about it
        queue = _queue_of(session)
        try:
            queue.send_nowait(message)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("client %d reads no device events: one dropped", session.pid)

    def sink(kind: str, data: dict[str, Any]) -> None:
        # encoded by the caller, so data JSON cannot hold fails there (TypeError)
        message = session.protocol.device_event(
            opened.interface_id, opened.interface_type, kind, data
        )
        if threading.get_ident() == loop_thread:
            deliver(message)
            return
        # a serve thread: the loop delivers it, in the order of the calls; a loop that
        # has not taken the last MAX_WAITING yet loses this one rather than pile them up
        with lock:
            if handed[0] >= MAX_WAITING:
                return
            handed[0] += 1
        try:
            token.run_sync_soon(deliver_handed, message)
        except trio.RunFinishedError:
            with lock:
                handed[0] -= 1

    # the open device's class cannot change while it is open (a type store is EBUSY)
    deviceclass = interface.device.deviceclass
    owners = (
        ()
        if deviceclass is None
        else (
            (interface.device.state, frozenset(a.name for a in deviceclass.attributes)),
            (interface.state, frozenset(a.name for a in deviceclass.interface_attributes)),
        )
    )

    def notice(attribute: str) -> None:
        if deviceclass is None:
            return
        declared = [state for state, names in owners if attribute in names]
        if not declared:
            raise ValueError(f"deviceclass {deviceclass.name} declares no attribute {attribute!r}")
        for state in declared:
            deviceclass.notify(state, attribute)

    opened.connection.event_sink = sink
    opened.connection.notice_sink = notice


def _queue_of(session: Session) -> trio.MemorySendChannel[bytes]:
    queue = _queues.get(session)
    if queue is None:
        queue, out = trio.open_memory_channel[bytes](MAX_WAITING)
        _queues[session] = queue
        session.nursery.start_soon(_forward, session, out)
    return queue


async def _forward(session: Session, out: trio.MemoryReceiveChannel[bytes]) -> None:
    async for message in out:
        await session._tell(message)
