"""The vdisk client, sync face: `VdiskClient` over vbusfs's `RequestResponseClient`.

The request bookkeeping is the pure `Pipeline` (`_pipeline`), shared with the
trio face; here every method that talks to the device blocks the calling
thread (the GIL released while it waits in C). `vbusfs_vdisk.AsyncVdiskClient`
is the trio face.
"""

from __future__ import annotations

from types import TracebackType

from vbusfs.client import Client, OpenInterface, RequestResponseClient

from ._pipeline import Completion, Pipeline
from .protocol import (
    CAPACITY_CALL,
    FLUSH,
    FLUSH_CALL,
    READ,
    REQUEST_SIZE,
    RESPONSE_SIZE,
    VERSION,
    WRITE,
    Capacity,
    parse_capacity,
)

#: what a client may read or write in one request unless it asks for more
DEFAULT_MAX_TRANSFER = 64 << 10


def slot_sizes(max_transfer: int) -> tuple[int, int]:
    """Request and response slot sizes for transfers of up to `max_transfer` bytes."""
    if max_transfer < 0:
        raise ValueError(f"max_transfer must be >= 0, not {max_transfer}")
    return REQUEST_SIZE + max_transfer, RESPONSE_SIZE + max_transfer


class VdiskClient:
    """A vdisk opened by this process: reads, writes, flushes; one or many in flight.

    `read`, `write` and `flush` send one request and block for its answer,
    raising OSError with the device's errno (EROFS, EINVAL, ENOSPC ...) when it
    is refused. `submit_read`, `submit_write` and `submit_flush` send without
    waiting for the answer (blocking only while `window` requests are in
    flight), and `complete` returns the oldest `Completion`. `capacity` is what
    the device said at open. Transfers are at most `max_transfer` bytes (the
    size of the ring slots this client makes); `spin_us` polls the rings that
    long before sleeping ("adaptive": the ring learns how long). `driver` is the
    `vbusfs.client.RequestResponseClient` underneath, for requests made by hand
    (`vbusfs_vdisk.protocol.pack_request`).
    """

    def __init__(
        self,
        interface: OpenInterface,
        *,
        count: int = 64,
        window: int | None = None,
        max_transfer: int = DEFAULT_MAX_TRANSFER,
        spin_us: int | str = 0,
    ) -> None:
        request_slot, response_slot = slot_sizes(max_transfer)
        self.interface = interface
        self.max_transfer = max_transfer
        self.capacity: Capacity = parse_capacity(interface.call(CAPACITY_CALL))
        self.driver = RequestResponseClient(
            interface,
            count=count,
            slot_size=request_slot,
            response_slot_size=response_slot,
            window=window,
            spin_us=spin_us,
        )
        self._pipeline = Pipeline()

    @classmethod
    def open(cls, client: Client, interface_id: int, **options: int | str | None) -> VdiskClient:
        """Open interface `interface_id` of the client's bus as a vdisk (blocks for the
        daemon). `options` are the constructor's."""
        interface = client.open(interface_id, VERSION)
        try:
            return cls(interface, **options)  # type: ignore[arg-type]
        except BaseException:
            interface.close()
            raise

    # -- one at a time ---------------------------------------------------------------

    def read(self, offset: int, length: int, timeout: float | None = None) -> bytes:
        """The `length` bytes at `offset`; blocks for them."""
        self._pipeline.require_idle()
        self.submit_read(offset, length, timeout)
        return bytes(self.complete(timeout).check().data)

    def write(self, offset: int, data: bytes, timeout: float | None = None) -> None:
        """Write `data` at `offset`; blocks until the device has."""
        self._pipeline.require_idle()
        self.submit_write(offset, data, timeout)
        self.complete(timeout).check()

    def flush(self, timeout: float | None = None) -> None:
        """Every write before it is durable once this returns (the FLUSH op)."""
        self._pipeline.require_idle()
        self.submit_flush(timeout)
        self.complete(timeout).check()

    def sync(self) -> None:
        """The FLUSH device call: the same as `flush`, through the daemon's connector."""
        self.interface.call(FLUSH_CALL)

    # -- many in flight ------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests submitted whose completion `complete` has not returned yet."""
        return len(self._pipeline)

    def submit_read(self, offset: int, length: int, timeout: float | None = None) -> int:
        """Ask for `length` bytes at `offset`; returns the request's tag."""
        return self._submit(self._pipeline.request(READ, offset, length), timeout)

    def submit_write(self, offset: int, data: bytes, timeout: float | None = None) -> int:
        return self._submit(self._pipeline.request(WRITE, offset, len(data), data), timeout)

    def submit_flush(self, timeout: float | None = None) -> int:
        return self._submit(self._pipeline.request(FLUSH), timeout)

    def _submit(self, message: bytes, timeout: float | None) -> int:
        try:
            self.driver.submit(message, timeout)
        except BaseException:
            self._pipeline.forget_last()
            raise
        return self._pipeline.last_tag

    def submit_reads(self, offsets: list[int], length: int, timeout: float | None = None) -> None:
        """`submit_read` for each offset, batched into as few ring calls as the window
        allows. If it raises, the client is of no further use: close it."""
        requests = [self._pipeline.request(READ, offset, length) for offset in offsets]
        self.driver.submit_batch(requests, timeout)

    def complete(self, timeout: float | None = None) -> Completion:
        """The oldest request's completion; blocks for it."""
        return self._pipeline.response(self.driver.complete(timeout))

    def complete_batch(
        self, max_completions: int = 64, timeout: float | None = None
    ) -> list[Completion]:
        """Between 1 and `max_completions` of the oldest completions; blocks for the first."""
        return [
            self._pipeline.response(m) for m in self.driver.complete_batch(max_completions, timeout)
        ]

    # -- the device ----------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """The device's counters (reads, writes, flushes, errors, read_bytes, written_bytes)."""
        return self.interface.stats()

    def close(self) -> None:
        """Close the interface and the rings (requests still in flight are abandoned)."""
        self.driver.close()

    def __enter__(self) -> VdiskClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
