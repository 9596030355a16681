"""The monitor's trio face: `monitor_async(mountpoint)`, the same records on a trio socket.

Imported on first use, with trio, as the rest of the trio face is. What a datagram means
is `MonitorStream`'s, shared with the blocking face: this module only awaits the bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType

import trio

from vbusfs.connector import DEFAULT_TIMEOUT, RECEIVE, Record, received

from ._monitor import MonitorFace, MonitorStream
from ._trio import connect_async


async def monitor_async(
    mountpoint: str, *, timeout: float | None = DEFAULT_TIMEOUT
) -> AsyncMonitor:
    """`monitor` for trio programs: waits for the daemon's answer at most `timeout`."""
    client = await connect_async(mountpoint, timeout=timeout)
    try:
        answer = (await client.request("monitor"))["monitor"]
    except BaseException:
        client._sock.close()
        raise
    return AsyncMonitor(client._sock, MonitorStream(answer))


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


class AsyncMonitor(MonitorFace):
    """`Monitor` for trio: `receive()` awaits the next batch, `records()` iterates them."""

    def __init__(self, sock: trio.socket.SocketType, stream: MonitorStream) -> None:
        self._sock = sock
        self._stream = stream

    async def receive(self) -> list[Record]:
        """The next batch of records; ConnectorError once the daemon has closed."""
        self._stream.expect()
        return self._stream.feed(received(await self._sock.recvmsg(*RECEIVE)))

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
