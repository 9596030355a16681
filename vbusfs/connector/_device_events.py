"""Device events: what a device connection tells its own client (behaviour §7.1).

The connector gives every connection it opens an `event_sink` (see
`DeviceConnection.send_event`); a device calls it on the daemon's loop, never
waiting. Each client session has one queue and one task sending its device
events in the order the devices sent them. A client that lets more than
`MAX_WAITING` pile up loses the newest (logged once per session), so a device
never waits for a client that does not read.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ._datapath import Open
    from ._session import Session

log = logging.getLogger("vbusfs.connector")

MAX_WAITING = 256

# session -> the sending end of its device-event queue (the task holds the other)
_queues: weakref.WeakKeyDictionary[Session, trio.MemorySendChannel[bytes]] = (
    weakref.WeakKeyDictionary()
)


def hook_device_events(session: Session, opened: Open) -> None:
    """Let `opened`'s connection send device events to `session`'s client."""

    def sink(kind: str, data: dict[str, Any]) -> None:
        if session.revoked is not None or opened.dropped or opened.failed is not None:
            return
        if not any(o is opened for o in session.opens.values()):
            return  # closed: its client no longer hears about it
        queue = _queue_of(session)
        message = session.protocol.device_event(
            opened.interface_id, opened.interface_type, kind, data
        )
        try:
            queue.send_nowait(message)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("client %d reads no device events: one dropped", session.pid)

    opened.connection.event_sink = sink


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
