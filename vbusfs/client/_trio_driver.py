"""The client side of a request/response device, trio face: `AsyncRequestResponseClient`.

The same queues, window and order as `RequestResponseClient` (``_driver``); its
waits are trio waits on the rings' wake-up fds, ended by a cancel scope.
Imported on first use, with trio.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from vbusfs.ioq import AsyncIoq, IoqEmpty, IoqFull

from ._driver import REQUESTS, RESPONSES, check_window, make_rings, set_aside_ready, spin_of

if TYPE_CHECKING:
    from ._trio import AsyncOpenInterface


class AsyncRequestResponseClient:
    """`RequestResponseClient` for trio. Make one with `await AsyncRequestResponseClient.open(...)`.

    One task at a time may use it.
    """

    def __init__(
        self,
        interface: AsyncOpenInterface,
        *,
        count: int = 64,
        slot_size: int = 4096,
        response_slot_size: int | None = None,
        window: int | None = None,
        spin_us: int | str = 0,
    ) -> None:
        # private: `open` also attaches the queues, which needs to await
        self.interface = interface
        self.window = check_window(count, window)
        self.spin_us = spin_of(spin_us)
        self.requests, self.responses = make_rings(AsyncIoq, count, slot_size, response_slot_size)
        self.in_flight = 0
        self._aside: deque[bytes] = deque()

    @classmethod
    async def open(
        cls,
        interface: AsyncOpenInterface,
        *,
        count: int = 64,
        slot_size: int = 4096,
        response_slot_size: int | None = None,
        window: int | None = None,
        spin_us: int | str = 0,
    ) -> AsyncRequestResponseClient:
        """Make both queues and attach them to `interface`."""
        self = cls(
            interface,
            count=count,
            slot_size=slot_size,
            response_slot_size=response_slot_size,
            window=window,
            spin_us=spin_us,
        )
        try:
            await interface.attach_queue(REQUESTS, self.requests)
            await interface.attach_queue(RESPONSES, self.responses)
        except BaseException:
            self._close_rings()
            raise
        return self

    @property
    def pending(self) -> int:
        return self.in_flight + len(self._aside)

    async def submit(self, request: bytes | bytearray | memoryview) -> None:
        """Send one request, waiting while `window` are in flight."""
        while self.in_flight >= self.window:
            self._aside.append(await self.responses.receive(spin_us=self.spin_us))
            self.in_flight -= 1
        await self.requests.send(request, spin_us=self.spin_us)
        self.in_flight += 1

    async def submit_batch(self, requests: list[bytes]) -> None:
        """Send every request in order, as many per call into C (and per signal to the
        device) as the window and the ring allow."""
        done = 0
        while done < len(requests):
            room = self.window - self.in_flight
            if room <= 0:
                self._aside.append(await self.responses.receive(spin_us=self.spin_us))
                self.in_flight -= 1
                self.in_flight -= set_aside_ready(self.responses, self._aside, self.in_flight)
                continue
            try:
                sent = self.requests.send_batch_nowait(requests[done : done + room])
            except IoqFull:
                await self.requests.wait_sendable(spin_us=self.spin_us)
                continue
            self.in_flight += sent
            done += sent

    async def complete(self) -> bytes:
        """The oldest response, waiting for it."""
        if self._aside:
            return self._aside.popleft()
        self._need_pending()
        got = await self.responses.receive(spin_us=self.spin_us)
        self.in_flight -= 1
        return got

    async def complete_batch(self, max_responses: int = 64) -> list[bytes]:
        """Between 1 and `max_responses` of the oldest responses, waiting for the first."""
        if self._aside:
            n = min(max_responses, len(self._aside))
            return [self._aside.popleft() for _ in range(n)]
        self._need_pending()
        got = await self.responses.receive_batch(
            min(max_responses, self.in_flight), spin_us=self.spin_us
        )
        self.in_flight -= len(got)
        return got

    async def complete_into(self, buffer: bytearray | memoryview) -> int:
        """The oldest response copied into `buffer`; its length."""
        if self._aside:
            data = self._aside.popleft()
            buffer[: len(data)] = data
            return len(data)
        self._need_pending()
        while True:
            try:
                (n,) = self.responses.receive_into_nowait(buffer, 1)
            except IoqEmpty:
                await self.responses.wait_receivable(spin_us=self.spin_us)
                continue
            self.in_flight -= 1
            return n

    async def request(self, request: bytes | bytearray | memoryview) -> bytes:
        """Send one request and wait for its response (nothing else may be pending)."""
        if self.pending:
            raise ValueError("request() needs nothing else pending: use submit/complete")
        await self.submit(request)
        return await self.complete()

    def _need_pending(self) -> None:
        if not self.in_flight:
            raise ValueError("no request is pending")

    def _close_rings(self) -> None:
        self.requests.close()
        self.responses.close()

    async def aclose(self) -> None:
        await self.interface.aclose()
        self._close_rings()

    async def __aenter__(self) -> AsyncRequestResponseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
