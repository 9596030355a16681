"""The monitor's trio face: `monitor_async(mountpoint)`, the same records on a trio socket.

Imported on first use, with trio, as the rest of the trio face is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType

import trio

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
from ._trio import connect_async


async def monitor_async(
    mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT
) -> AsyncMonitor:
    """`monitor` for trio programs: waits for the daemon's answer at most `timeout`."""
    client = await connect_async(mountpoint, timeout=timeout)
    try:
        reply = (await client.request("monitor"))["monitor"]
    except BaseException:
        client._sock.close()
        raise
    return AsyncMonitor(client._sock, reply.get("bus"), int(reply.get("buffer", 0)))


class _Records:
    def __init__(self, monitor: AsyncMonitor) -> None:
        self._monitor = monitor
        self._batch: deque[Record] = deque()

    def __aiter__(self) -> _Records:
        return self

    async def __anext__(self) -> Record:
        while not self._batch:
            if self._monitor.ended:
                raise StopAsyncIteration
            self._batch.extend(await self._monitor.receive())
        return self._batch.popleft()


class AsyncMonitor:
    """`Monitor` for trio: `receive()` awaits the next batch, `records()` iterates them."""

    def __init__(self, sock: trio.socket.SocketType, bus: str | None, buffer: int) -> None:
        self._sock = sock
        self.bus = bus
        self.buffer = buffer
        self.ended = False

    async def receive(self) -> list[Record]:
        """The next batch of records; ConnectorError once the daemon has closed."""
        if self.ended:
            raise ConnectorError(0, "the monitor has ended")
        datagram = received(await self._sock.recvmsg(*RECEIVE))
        close_fds(datagram.fds)
        if not datagram.data:
            self.ended = True
            raise ConnectorError(0, CLOSED)
        batch = decode_records(datagram.data)
        if any(record.final for record in batch):
            self.ended = True
        return batch

    def records(self) -> AsyncIterator[Record]:
        """Every record from now on, to the last (`unmounted` or `revoked`). An iterator,
        not an async generator: leaving the loop early leaves nothing to finalize."""
        return _Records(self)

    def close(self) -> None:
        self._sock.close()

    async def __aenter__(self) -> AsyncMonitor:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
