"""The client side of a request/response device, sync face: `RequestResponseClient`.

It makes queue 0 (requests, to_south) and queue 1 (responses, to_north: every
slot posted as an empty buffer at creation, each reposted as soon as its
response is read), attaches both to an open interface (each then watches the
interface's hang-up socket, so no wait hangs once the device is gone), and
keeps at most `window` requests in flight. Every method that waits blocks the
calling thread in C with the GIL released, at most `timeout` seconds.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar

from vbusfs.ioq import AsyncIoq, Ioq, IoqEmpty

if TYPE_CHECKING:
    from ._sync import OpenInterface

Spin = int | Literal["adaptive"]
#: the queue indexes of a request/response device (as vbusfs.device declares them)
REQUESTS = 0
RESPONSES = 1

R = TypeVar("R", Ioq, AsyncIoq)


def spin_of(spin_us: int | str) -> Spin:
    """A ring wait's spin_us: an int >= 0, or "adaptive" (the ring learns its budget)."""
    if spin_us == "adaptive":
        return "adaptive"
    if isinstance(spin_us, str | bool) or spin_us < 0:
        raise ValueError(f"spin_us must be an int >= 0 or 'adaptive', not {spin_us!r}")
    return spin_us


def make_rings(
    kind: type[R], count: int, slot_size: int, response_slot_size: int | None
) -> tuple[R, R]:
    """The request ring and the response ring of a driver (`Ioq` or `AsyncIoq`), both or none."""
    requests = kind.create(count, slot_size, direction="to_south")
    try:
        responses = kind.create(count, response_slot_size or slot_size, direction="to_north")
    except BaseException:
        requests.close()
        raise
    return requests, responses


def check_window(count: int, window: int | None) -> int:
    window = count if window is None else window
    if not 1 <= window <= count:
        # more in flight than posted response buffers could leave the device with no
        # buffer for a response while this side waits for room to send
        raise ValueError(f"window must be 1..count ({count}), not {window}")
    return window


def set_aside_ready(responses: Ioq | AsyncIoq, aside: deque[bytes], in_flight: int) -> int:
    """Move the responses already waiting on `responses` (at most `in_flight`) to
    `aside`, without waiting; how many. A driver whose window is full reads one response
    (waiting), then these, so its next send has room for a batch, not one request."""
    taken = 0
    while taken < in_flight:
        try:
            aside.append(responses.receive_nowait())
        except IoqEmpty:
            break
        taken += 1
    return taken


class RequestResponseClient:
    """Requests on queue 0, responses on queue 1, at most `window` in flight.

    `submit` sends a request, blocking while `window` are in flight (it then reads
    the oldest response aside for `complete`, so a single thread never deadlocks);
    `complete` returns the oldest response; `request` is both, one in flight.
    Responses come back in request order.
    """

    def __init__(
        self,
        interface: OpenInterface,
        *,
        count: int = 64,
        slot_size: int = 4096,
        response_slot_size: int | None = None,
        window: int | None = None,
        spin_us: int | str = 0,
    ) -> None:
        self.interface = interface
        self.window = check_window(count, window)
        self.spin_us = spin_of(spin_us)
        self.requests, self.responses = make_rings(Ioq, count, slot_size, response_slot_size)
        #: requests sent whose response has not been read from the ring yet
        self.in_flight = 0
        self._aside: deque[bytes] = deque()  # read by submit, not yet completed
        try:
            interface.attach_queue(REQUESTS, self.requests)
            interface.attach_queue(RESPONSES, self.responses)
        except BaseException:
            self._close_rings()
            raise

    @property
    def pending(self) -> int:
        """Requests submitted whose response `complete` has not returned yet."""
        return self.in_flight + len(self._aside)

    def submit(self, request: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Send one request; blocks (GIL released) while `window` are in flight."""
        while self.in_flight >= self.window:
            self._aside.append(self.responses.receive(timeout, spin_us=self.spin_us))
            self.in_flight -= 1
        self.requests.send(request, timeout, spin_us=self.spin_us)
        self.in_flight += 1

    def submit_batch(self, requests: list[bytes], timeout: float | None = None) -> None:
        """Send every request in order, a batch per call into C where the window allows."""
        done = 0
        while done < len(requests):
            room = self.window - self.in_flight
            if room <= 0:
                self._aside.append(self.responses.receive(timeout, spin_us=self.spin_us))
                self.in_flight -= 1
                self.in_flight -= set_aside_ready(self.responses, self._aside, self.in_flight)
                continue
            chunk = requests[done : done + room]
            self.requests.send_batch(chunk, timeout, spin_us=self.spin_us)
            self.in_flight += len(chunk)
            done += len(chunk)

    def complete(self, timeout: float | None = None) -> bytes:
        """The oldest response; blocks (GIL released) until it arrives. ValueError when
        nothing is pending; TimeoutError; IoqClosed once the device is gone."""
        if self._aside:
            return self._aside.popleft()
        self._need_pending()
        got = self.responses.receive(timeout, spin_us=self.spin_us)
        self.in_flight -= 1
        return got

    def complete_batch(self, max_responses: int = 64, timeout: float | None = None) -> list[bytes]:
        """Between 1 and `max_responses` of the oldest responses; blocks for the first."""
        if self._aside:
            n = min(max_responses, len(self._aside))
            return [self._aside.popleft() for _ in range(n)]
        self._need_pending()
        got = self.responses.receive_batch(
            min(max_responses, self.in_flight), timeout, spin_us=self.spin_us
        )
        self.in_flight -= len(got)
        return got

    def complete_into(self, buffer: bytearray | memoryview, timeout: float | None = None) -> int:
        """The oldest response copied into `buffer` (no object per message); its length.

        An IoqError (EMSGSIZE) if it does not fit (it stays queued)."""
        if self._aside:
            data = self._aside.popleft()
            buffer[: len(data)] = data
            return len(data)
        self._need_pending()
        while True:
            try:
                (n,) = self.responses.receive_into_nowait(buffer, 1)
            except IoqEmpty:
                self.responses.wait_receivable(timeout, spin_us=self.spin_us)
                continue
            self.in_flight -= 1
            return n

    def request(
        self, request: bytes | bytearray | memoryview, timeout: float | None = None
    ) -> bytes:
        """Send one request and wait for its response (nothing else may be pending)."""
        if self.pending:
            raise ValueError("request() needs nothing else pending: use submit/complete")
        self.submit(request, timeout)
        return self.complete(timeout)

    def _need_pending(self) -> None:
        if not self.in_flight:
            raise ValueError("no request is pending")

    def _close_rings(self) -> None:
        self.requests.close()
        self.responses.close()

    def close(self) -> None:
        """Close the interface, then the rings."""
        self.interface.close()
        self._close_rings()

    def __enter__(self) -> RequestResponseClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
