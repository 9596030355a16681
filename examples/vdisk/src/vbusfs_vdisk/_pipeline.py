"""A client's request bookkeeping, with no I/O: tags out, responses matched in.

`Pipeline` numbers the requests (tags), remembers what is in flight, and
checks that every response answers the oldest request (the device answers in
order). Both client faces and the benchmark's socket clients use it, so every
transport pays for the same work per request.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import NamedTuple

from .protocol import OPS, READ, ProtocolError, pack_request, parse_response


class Completion(NamedTuple):
    """The answer to one request: `status` 0 or an errno; `data` what a READ read (a view
    of the response message, made without a copy)."""

    tag: int
    op: int
    offset: int
    status: int
    data: memoryview

    def check(self) -> Completion:
        """Self, or the OSError (with its errno) the request was refused with."""
        if self.status:
            raise OSError(
                self.status,
                f"{os.strerror(self.status)}: {OPS.get(self.op, self.op)} at {self.offset}",
            )
        return self


class Pipeline:
    """Requests in flight, oldest first: tags out, responses matched in (no I/O)."""

    def __init__(self) -> None:
        self._next_tag = 1
        self._sent: deque[tuple[int, int, int]] = deque()  # tag, op, offset

    def __len__(self) -> int:
        return len(self._sent)

    @property
    def last_tag(self) -> int:
        """The tag of the request `request` made last."""
        return self._next_tag - 1

    def request(self, op: int, offset: int = 0, length: int = 0, payload: bytes = b"") -> bytes:
        """A request for the wire, remembered as in flight."""
        tag = self._next_tag
        message = pack_request(op, tag, offset, length, payload)
        self._next_tag += 1
        self._sent.append((tag, op, offset))
        return message

    def forget_last(self) -> None:
        """The request `request` returned last was never sent."""
        self._sent.pop()
        self._next_tag -= 1

    def response(self, message: bytes | memoryview) -> Completion:
        """The completion `message` is: ProtocolError (EPROTO) if it is malformed or does not
        answer the oldest request in flight."""
        parsed = parse_response(message)
        if not self._sent:
            raise ProtocolError(errno.EPROTO, "a response came with no request in flight")
        tag, op, offset = self._sent[0]
        if parsed.tag != tag:
            raise ProtocolError(errno.EPROTO, f"response for tag {parsed.tag}, expected {tag}")
        if parsed.data and op != READ:
            raise ProtocolError(errno.EPROTO, f"a {OPS[op]} response carries data", tag)
        self._sent.popleft()
        return Completion(tag, op, offset, parsed.status, parsed.data)
