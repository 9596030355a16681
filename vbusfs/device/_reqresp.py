"""Request/response devices: the device side of the commonest data path.

Queue 0 carries requests client -> device; queue 1 carries responses device ->
client, into buffers the client posted. An author subclasses
`RequestResponseConnection`, declares the two queues with
`request_response_queues` on the class, and writes `handle(request, response)`;
the loop here does the rest: it takes a batch of requests, pairs each with a
posted response buffer, handles them in order, hands responses back in
sub-batches (`commit_every`), waits for buffers when the client has none
posted (it never drops a response), and stops when the framework says so.
Responses go back in request order (FIFO).

It runs in the loop's own thread (`serve`) and waits in C with the GIL released.

A block device can hand its common requests to C: `block_server` returns a
`vbusfs.ioq.BlockServer` over its backing, and the loop lets it serve every READ
and WRITE it takes (a batch per step, without returning to Python); each request
it leaves (another op, a refusal, an I/O error) is answered by `handle`, in order,
and C serves on.
"""

from __future__ import annotations

import errno
from typing import ClassVar

from vbusfs.ioq import BlockServer, Ioq, IoqEmpty, IoqFault, IoqFull
from vbusfs.model import DeviceConnection, QueueSpec, VbusError

from ._queues import Queues, Spin, slot_size, spin_value

#: the queue indexes of a request/response device
REQUESTS = 0
RESPONSES = 1


def request_response_queues(
    max_request: int,
    max_response: int,
    *,
    min_response: int | None = None,
    max_count: int = 4096,
    min_count: int = 1,
) -> tuple[QueueSpec, QueueSpec]:
    """The two QueueSpecs of a request/response device.

    Requests (queue 0, to_south): slots of at most `max_request` bytes (a request is
    never longer). Responses (queue 1, to_north): slots of `min_response` to
    `max_response` bytes; `min_response` defaults to `max_response`, so that the
    longest response always fits. A protocol whose responses are as long as the
    client asked for (a READ) lets clients choose smaller slots with a smaller
    `min_response` (the header, say) and answers a request its slot cannot hold
    with an error response.
    """
    low = max_response if min_response is None else min_response
    if max_request < 1 or not 1 <= low <= max_response:
        raise ValueError("need max_request >= 1 and 1 <= min_response <= max_response")
    return (
        QueueSpec(REQUESTS, "to_south", "requests", min_count, max_count, 1, max_request),
        QueueSpec(RESPONSES, "to_north", "responses", min_count, max_count, low, max_response),
    )


class RequestResponseConnection(DeviceConnection):
    """Device-side base of a request/response device: override `handle`.

    Class attributes tune the loop: `batch` (requests taken per round), `commit_every`
    (responses handed back per commit, so the client sees the first before the whole
    batch is done), `spin_us` (poll the rings this many microseconds before sleeping;
    "adaptive" lets the ring learn it).
    """

    batch: ClassVar[int] = 64
    commit_every: ClassVar[int] = 16
    spin_us: ClassVar[int | str] = 0

    def handle(self, request: memoryview, response: memoryview) -> int:
        """Handle one request; write the response into `response`, return its length.

        `request` and `response` are views onto shared memory, valid only during the
        call. Raise a VbusError to answer with `error_response`; any other exception
        fails the device (the client's waits end, its next call fails with EIO).
        """
        raise NotImplementedError(f"{type(self).__name__} does not handle requests")

    def block_server(self) -> BlockServer | None:
        """A `BlockServer` that serves this device's common requests in C, or None (the
        default: `handle` answers every request). Called once, in the loop's thread,
        when the loop starts; the loop closes it when it ends."""
        return None

    def error_response(self, request: memoryview, response: memoryview, exc: VbusError) -> int:
        """The response to a request whose `handle` raised `exc`; its length.

        The default re-raises: the loop fails. A protocol with a status field writes
        `exc.errno` into it here.
        """
        raise exc

    def serve(self, queues: Queues) -> None:
        """The loop: until stopped, handle every request in order (see the module)."""
        requests, responses = queues[REQUESTS], queues[RESPONSES]
        spin = spin_value(self.spin_us)
        batch, every = max(1, self.batch), max(1, self.commit_every)
        longest = slot_size(requests)
        server = self.block_server()
        if server is not None:
            try:
                self._serve_with(server, requests, responses, spin, batch, every, longest)
            finally:
                server.close()
        taken: list[memoryview] = []
        while True:
            if not taken:
                requests.wait_receivable(spin_us=spin)
                try:
                    taken = requests.acquire_nowait(batch)
                except IoqEmpty:
                    continue
            self._check_lengths(taken, longest)
            done = 0
            while done < len(taken):
                done += self._respond(responses, taken[done:], every, spin)
            # consumed, and the next batch taken, in one call into C
            taken = requests.commit(len(taken), acquire=batch)

    def _serve_with(
        self,
        server: BlockServer,
        requests: Ioq,
        responses: Ioq,
        spin: Spin,
        batch: int,
        every: int,
        longest: int,
    ) -> None:
        """The loop with C serving what it takes; `handle` answers, one at a time, each
        request it leaves first on the ring. Returns only by raising (IoqClosed ...)."""
        while True:
            server.serve(requests, responses, batch=batch, every=every, spin_us=spin)
            taken = requests.acquire_nowait(1)
            self._check_lengths(taken, longest)
            while not self._respond(responses, taken, every, spin):
                pass
            requests.commit(1)

    @staticmethod
    def _check_lengths(taken: list[memoryview], longest: int) -> None:
        if max(map(len, taken)) > longest:
            # an honest client's sends never exceed its slots: the ring was forged
            raise IoqFault(errno.EPROTO, f"a request is longer than the {longest}-byte slots")

    def _respond(self, responses: Ioq, pending: list[memoryview], every: int, spin: Spin) -> int:
        """Handle as many of `pending` as there are posted response buffers (waiting for
        one if none is), handing responses back `every` at a time; how many."""
        try:
            buffers = responses.acquire_nowait(len(pending))
        except IoqFull:
            responses.wait_sendable(spin_us=spin)
            return 0
        lengths: list[int] = []
        for request, out in zip(pending, buffers, strict=False):
            lengths.append(self._one(request, out))
            if len(lengths) == every:
                responses.commit(every, lengths)  # the oldest; the rest stay acquired
                lengths = []
        if lengths:
            responses.commit(len(lengths), lengths)
        return len(buffers)

    def _one(self, request: memoryview, response: memoryview) -> int:
        try:
            n = self.handle(request, response)
        except VbusError as exc:
            n = self.error_response(request, response, exc)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(response):
            raise ValueError(f"a response length must be an int in 0..{len(response)}, not {n!r}")
        return n
