"""The vdisk client, trio face: `AsyncVdiskClient` over `AsyncRequestResponseClient`.

The same requests, tags and checks as `VdiskClient` (the shared `Pipeline`);
its waits are trio waits, ended by a cancel scope. Imported on first use, with trio.
"""

from __future__ import annotations

from vbusfs.client import AsyncClient, AsyncOpenInterface, AsyncRequestResponseClient

from ._client import DEFAULT_MAX_TRANSFER, slot_sizes
from ._pipeline import Completion, Pipeline
from .protocol import (
    CAPACITY_CALL,
    FLUSH,
    FLUSH_CALL,
    READ,
    VERSION,
    WRITE,
    Capacity,
    parse_capacity,
)


class AsyncVdiskClient:
    """`VdiskClient` for trio; make one with `await AsyncVdiskClient.open(client, id)`.

    One task at a time may use it.
    """

    def __init__(
        self,
        interface: AsyncOpenInterface,
        driver: AsyncRequestResponseClient,
        capacity: Capacity,
        max_transfer: int,
    ) -> None:
        # private: `open` makes one (attaching the queues needs to await)
        self.interface = interface
        self.driver = driver
        self.capacity = capacity
        self.max_transfer = max_transfer
        self._pipeline = Pipeline()

    @classmethod
    async def open(
        cls,
        client: AsyncClient,
        interface_id: int,
        *,
        count: int = 64,
        window: int | None = None,
        max_transfer: int = DEFAULT_MAX_TRANSFER,
        spin_us: int | str = 0,
    ) -> AsyncVdiskClient:
        """Open interface `interface_id` of the client's bus as a vdisk."""
        request_slot, response_slot = slot_sizes(max_transfer)
        interface = await client.open(interface_id, VERSION)
        try:
            capacity = parse_capacity(await interface.call(CAPACITY_CALL))
            driver = await AsyncRequestResponseClient.open(
                interface,
                count=count,
                slot_size=request_slot,
                response_slot_size=response_slot,
                window=window,
                spin_us=spin_us,
            )
        except BaseException:
            await interface.aclose()
            raise
        return cls(interface, driver, capacity, max_transfer)

    async def read(self, offset: int, length: int) -> bytes:
        """The `length` bytes at `offset` (OSError with the device's errno if refused)."""
        self._pipeline.require_idle()
        await self.submit_read(offset, length)
        return bytes((await self.complete()).check().data)

    async def write(self, offset: int, data: bytes) -> None:
        self._pipeline.require_idle()
        await self.submit_write(offset, data)
        (await self.complete()).check()

    async def flush(self) -> None:
        self._pipeline.require_idle()
        await self.submit_flush()
        (await self.complete()).check()

    async def sync(self) -> None:
        """The FLUSH device call."""
        await self.interface.call(FLUSH_CALL)

    @property
    def in_flight(self) -> int:
        return len(self._pipeline)

    async def submit_read(self, offset: int, length: int) -> int:
        return await self._submit(self._pipeline.request(READ, offset, length))

    async def submit_write(self, offset: int, data: bytes) -> int:
        return await self._submit(self._pipeline.request(WRITE, offset, len(data), data))

    async def submit_flush(self) -> int:
        return await self._submit(self._pipeline.request(FLUSH))

    async def _submit(self, message: bytes) -> int:
        try:
            await self.driver.submit(message)
        except BaseException:
            self._pipeline.forget_last()
            raise
        return self._pipeline.last_tag

    async def complete(self) -> Completion:
        return self._pipeline.response(await self.driver.complete())

    async def complete_batch(self, max_completions: int = 64) -> list[Completion]:
        got = await self.driver.complete_batch(max_completions)
        return [self._pipeline.response(m) for m in got]

    async def stats(self) -> dict[str, int]:
        return await self.interface.stats()

    async def aclose(self) -> None:
        await self.driver.aclose()

    async def __aenter__(self) -> AsyncVdiskClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
