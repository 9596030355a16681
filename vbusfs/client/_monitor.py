"""Watching a mount: every change on it as records, as `vbusfs monitor` prints them.

`monitor(mountpoint)` connects to the daemon and asks `monitor`; the daemon's owner and
root hear everything, a member process the records of its own bus, anyone else is
refused (EACCES). `Monitor.records()` yields records as they come, in order, and ends
after the last one (`unmounted`, or `revoked` when a member's process leaves its bus) or
when the daemon goes. A reader that falls behind gets a `dropped` record counting what it
lost, where it lost it (behaviour §9).
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from types import TracebackType

from vbusfs.connector import (
    CLOSED,
    DEFAULT_TIMEOUT,
    RECEIVE,
    ConnectorError,
    Record,
    decode_records,
    received,
)

from ._common import close_fds
from ._sync import connect


def monitor(mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> Monitor:
    """Start monitoring `mountpoint`; blocks for the daemon's answer, at most `timeout`."""
    client = connect(mountpoint, timeout=timeout)
    try:
        reply = client.request("monitor")["monitor"]
    except BaseException:
        client.close()
        raise
    sock = client._sock
    return Monitor(sock, reply.get("bus"), int(reply.get("buffer", 0)))


class Monitor:
    """A monitoring connection: `bus` is what it watches (None: everything)."""

    def __init__(self, sock: socket.socket, bus: str | None, buffer: int) -> None:
        self._sock = sock
        self.bus = bus
        #: records the daemon holds for this monitor before it counts them as dropped
        self.buffer = buffer
        #: the monitor's last record has come (or the daemon went): nothing more will
        self.ended = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def receive(self, timeout: float | None = None) -> list[Record]:
        """The next batch of records; blocks until one comes (TimeoutError after
        `timeout`). ConnectorError once the daemon has closed the connection."""
        if self.ended:
            raise ConnectorError(0, "the monitor has ended")
        if not select.select([self._sock], [], [], timeout)[0]:
            raise TimeoutError("no record from the daemon")
        self._sock.settimeout(None)
        datagram = received(self._sock.recvmsg(*RECEIVE))
        close_fds(datagram.fds)  # a monitor is sent none: whatever came is not kept
        if not datagram.data:
            self.ended = True
            raise ConnectorError(0, CLOSED)
        batch = decode_records(datagram.data)
        if any(record.final for record in batch):
            self.ended = True
        return batch

    def records(self) -> Iterator[Record]:
        """Every record from now on, blocking for each, to the last (`unmounted` or
        `revoked`); ConnectorError if the daemon goes without one."""
        while not self.ended:
            yield from self.receive()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
