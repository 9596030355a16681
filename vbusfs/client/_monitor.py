"""Watching a mount: every change on it as records, as `vbusfs monitor` prints them.

`monitor(mountpoint)` connects to the daemon and asks `monitor`; the daemon's owner and
root hear everything, a member process the records of its own bus, anyone else is
refused (EACCES). `Monitor.records()` yields records as they come, in order, and ends
after the last one (`unmounted`, or `revoked` when a member's process leaves its bus) or
when the daemon goes. A reader that falls behind gets a `dropped` record counting what it
lost, where it lost it (behaviour §9).

`MonitorStream` is what both faces share, with no I/O: the daemon's answer to `monitor`
goes in, then each datagram the socket gave; records come out, and it knows when the
monitor has ended. `Monitor` (here, blocking) and `AsyncMonitor` (the trio face) only move
the bytes; what they show of the stream (`bus`, `buffer`, `ended`) is `MonitorFace`'s.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from vbusfs.connector import (
    CLOSED,
    DEFAULT_TIMEOUT,
    RECEIVE,
    ConnectorError,
    Datagram,
    Record,
    decode_records,
    received,
)

from ._common import close_fds
from ._sync import connect


class MonitorStream:
    """A monitor's records with no I/O: `feed` each datagram, get the records it carries.

    `bus` is what the monitor watches (None: everything), `buffer` the records the daemon
    holds for it before it counts them as dropped, both from the daemon's answer."""

    def __init__(self, answer: Mapping[str, Any]) -> None:
        bus = answer.get("bus")
        self.bus: str | None = None if bus is None else str(bus)
        self.buffer = int(answer.get("buffer", 0))
        #: the monitor's last record has come (or the daemon went): nothing more will
        self.ended = False

    def expect(self) -> None:
        """Before waiting for a datagram: ConnectorError if none can come any more."""
        if self.ended:
            raise ConnectorError(0, "the monitor has ended")

    def feed(self, datagram: Datagram) -> list[Record]:
        """The records one datagram carries (WireError if it is not a batch of them).
        An empty one is the daemon closing the connection: ConnectorError, and ended.
        The fds beside it (a monitor is sent none) are closed, never kept."""
        close_fds(datagram.fds)
        if not datagram.data:
            self.ended = True
            raise ConnectorError(0, CLOSED)
        batch = decode_records(datagram.data)
        if any(record.final for record in batch):
            self.ended = True
        return batch


class MonitorFace:
    """What both faces show of their `MonitorStream`: `bus`, `buffer` and `ended`."""

    _stream: MonitorStream

    @property
    def bus(self) -> str | None:
        """What the monitor watches (None: everything)."""
        return self._stream.bus

    @property
    def buffer(self) -> int:
        """The records the daemon holds for this monitor before it counts them as dropped."""
        return self._stream.buffer

    @property
    def ended(self) -> bool:
        """The monitor's last record has come (or the daemon went): nothing more will."""
        return self._stream.ended


def monitor(mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> Monitor:
    """Start monitoring `mountpoint`; blocks for the daemon's answer, at most `timeout`."""
    client = connect(mountpoint, timeout=timeout)
    try:
        answer = client.request("monitor")["monitor"]
    except BaseException:
        client.close()
        raise
    return Monitor(client._sock, MonitorStream(answer))


class Monitor(MonitorFace):
    """A monitoring connection: `bus` is what it watches (None: everything)."""

    def __init__(self, sock: socket.socket, stream: MonitorStream) -> None:
        self._sock = sock
        self._stream = stream

    def fileno(self) -> int:
        return self._sock.fileno()

    def receive(self, timeout: float | None = None) -> list[Record]:
        """The next batch of records; blocks until one comes (TimeoutError after
        `timeout`). ConnectorError once the daemon has closed the connection."""
        self._stream.expect()
        if not select.select([self._sock], [], [], timeout)[0]:
            raise TimeoutError("no record from the daemon")
        self._sock.settimeout(None)
        return self._stream.feed(received(self._sock.recvmsg(*RECEIVE)))

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
