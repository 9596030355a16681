"""Ioq: the ring with its blocking face, for synchronous programs.

Its waiting methods sleep in C with the GIL released, through ``ioq_wait`` and
the one-crossing ``ioq_*_one_wait`` calls; each says in its docstring that it
blocks, and takes a ``timeout``.  They arm and re-check through the same C steps
as the trio face (``_trio``); neither touches the ring's indices.  It must never
wait anywhere but in C: a thread blocked here holds no Python lock.
"""

from __future__ import annotations

import errno
import math
import time
from collections.abc import Sequence

from ._binding import (
    E_EMPTY,
    E_FULL,
    E_MSGSIZE,
    EINTR,
    RECV,
    SEND,
    Spin,
    check,
    ffi,
    lib,
    raise_code,
    spin_arg,
)
from ._errors import IoqClosed
from ._ring import RX, Ring

# bound once: the per-message paths skip the attribute lookups
_send_one_wait = lib.ioq_send_one_wait
_recv_one_wait = lib.ioq_recv_one_wait
_unpack = ffi.unpack


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + max(timeout, 0.0)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _ms(deadline: float | None) -> int:
    """Milliseconds left until deadline, rounded up; -1 for none."""
    if deadline is None:
        return -1
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


class Ioq(Ring):
    """One side's handle on an ioq, blocking face: a ring, its data segment, a shm-signal pair.

    Make one with :meth:`create` (north) or :meth:`attach` (south).  The ``*_nowait``
    methods never block; ``send``, ``send_batch``, ``receive``, ``receive_batch`` and
    ``wait_*`` block the calling thread (the GIL released) until they can proceed or
    ``timeout`` passes.  Trio programs use :class:`~vbusfs.ioq.AsyncIoq` instead.
    """

    def _wait(self, op: int, timeout: float | None, spin_us: Spin) -> None:
        spin = spin_arg(spin_us)
        deadline = _deadline(timeout)
        while True:
            rc = lib.ioq_wait(self._handle(), op, _ms(deadline), spin)
            if rc != EINTR:
                check(rc)
                return
            # a signal arrived: its Python handler has run by now; retry (PEP 475)

    def wait_sendable(self, timeout: float | None = None, *, spin_us: Spin = 0) -> None:
        """Block (GIL released) until a send can proceed; TimeoutError, IoqClosed or IoqFault."""
        self._wait(SEND, timeout, spin_us)

    def wait_receivable(self, timeout: float | None = None, *, spin_us: Spin = 0) -> None:
        """Block (GIL released) until a receive can proceed; TimeoutError, IoqClosed or IoqFault."""
        self._wait(RECV, timeout, spin_us)

    def send(
        self,
        message: bytes | bytearray | memoryview,
        timeout: float | None = None,
        *,
        spin_us: Spin = 0,
    ) -> None:
        """Send one message, blocking (GIL released) for room; ``timeout`` bounds the call."""
        # the hot path of a synchronous client: one crossing, few lookups
        h = self._h
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        n = len(message)
        if n > self.max_message:
            raise ValueError(f"message of {n} bytes exceeds {self.max_message}")
        spin = spin_us if type(spin_us) is int and spin_us >= 0 else spin_arg(spin_us)
        buf = message if type(message) is bytes else ffi.from_buffer(message)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            rc = _send_one_wait(h, buf, n, -1 if deadline is None else _ms(deadline), spin)
            if rc >= 0:
                return
            if rc != E_FULL and rc != EINTR:
                raise_code(rc)

    def send_batch(
        self, messages: Sequence[bytes], timeout: float | None = None, *, spin_us: Spin = 0
    ) -> None:
        """Send every message, in order, blocking (GIL released) for room; ``timeout`` bounds
        the whole call."""
        deadline = _deadline(timeout)
        done = 0
        while done < len(messages):
            rc = self._send_many(messages[done : done + self.count])
            if rc >= 0:
                done += rc
            elif rc == E_FULL:
                self._wait(SEND, _remaining(deadline), spin_us)
            else:
                raise_code(rc)

    def receive(self, timeout: float | None = None, *, spin_us: Spin = 0) -> bytes:
        """Receive one message, blocking (GIL released) until there is one; ``timeout``
        bounds the call."""
        h = self._h
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        spin = spin_us if type(spin_us) is int and spin_us >= 0 else spin_arg(spin_us)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        rx = self._rx
        while True:
            rc = _recv_one_wait(h, rx, RX, -1 if deadline is None else _ms(deadline), spin)
            if rc >= 0:
                return _unpack(rx, rc)
            if rc == E_MSGSIZE:
                got = self._recv_large(1)
                if isinstance(got, int):
                    raise_code(got)
                return got[0]
            if rc != E_EMPTY and rc != EINTR:
                raise_code(rc)

    def receive_batch(
        self, max_messages: int = 64, timeout: float | None = None, *, spin_us: Spin = 0
    ) -> list[bytes]:
        """Receive between 1 and ``max_messages`` messages, blocking (GIL released) for the
        first; ``timeout`` bounds the wait."""
        got = self._recv_many(max_messages)
        if got == E_EMPTY:
            deadline = _deadline(timeout)
            while got == E_EMPTY:
                self._wait(RECV, _remaining(deadline), spin_us)
                got = self._recv_many(max_messages)
        if isinstance(got, int):
            raise_code(got)
        return got
