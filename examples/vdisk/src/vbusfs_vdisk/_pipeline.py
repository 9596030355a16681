"""A client's request bookkeeping, with no I/O: tags out, responses matched in.

`Pipeline` numbers the requests (tags), remembers what is in flight, and
checks that every response answers the oldest request (the device answers in
order). Both client faces and the benchmark's socket clients use it, so every
transport pays for the same work per request.
"""

from __future__ import annotations

import errno
import os
import struct
from collections import deque
from typing import NamedTuple

from .protocol import (
    OPS,
    READ,
    REQUEST,
    RESPONSE,
    RESPONSE_SIZE,
    ProtocolError,
    pack_request,
    parse_response,
)

_pack_request = REQUEST.pack
_unpack_response = RESPONSE.unpack_from
_new = tuple.__new__


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

    def require_idle(self) -> None:
        """ValueError unless nothing is in flight (the one-request calls need that)."""
        if self._sent:
            raise ValueError("requests are in flight: complete them first")

    def request(self, op: int, offset: int = 0, length: int = 0, payload: bytes = b"") -> bytes:
        """A request for the wire, remembered as in flight (ValueError if a field does not
        fit its width)."""
        tag = self._next_tag
        try:
            message = _pack_request(tag, offset, length, op, 0)
        except struct.error:
            pack_request(op, tag, offset, length)  # raises the ValueError that says which
            raise
        self._next_tag = tag + 1
        self._sent.append((tag, op, offset))
        return message + payload if payload else message

    def forget_last(self) -> None:
        """The request `request` returned last was never sent."""
        self._sent.pop()
        self._next_tag -= 1

    def response(self, message: bytes | memoryview) -> Completion:
        """The completion `message` is: ProtocolError (EPROTO) if it is malformed or does not
        answer the oldest request in flight."""
        # the common case in a few steps (every response of a busy client comes here);
        # anything unusual goes through parse_response, which names the fault
        if len(message) < RESPONSE_SIZE:
            parse_response(message)
        got, status, length = _unpack_response(message)
        if len(message) != RESPONSE_SIZE + length or (status and length):
            parse_response(message)
        if not self._sent:
            raise ProtocolError(errno.EPROTO, "a response came with no request in flight", got)
        tag, op, offset = self._sent[0]
        if got != tag:
            raise ProtocolError(errno.EPROTO, f"response for tag {got}, expected {tag}", got)
        if length and op != READ:
            raise ProtocolError(errno.EPROTO, f"a {OPS[op]} response carries data", tag)
        self._sent.popleft()
        # tuple.__new__ makes the same Completion without NamedTuple's Python-level __new__
        return _new(Completion, (tag, op, offset, status, memoryview(message)[RESPONSE_SIZE:]))
