"""Ioq: the ring with its two waiting faces, blocking (sync programs) and trio.

The blocking forms sleep in C (the GIL released) through ``ioq_wait`` and the
one-crossing ``ioq_*_one_wait`` calls; the ``*_async`` forms sleep in trio on
the shm-signal eventfd.  Both arm and re-check through the same C steps; neither
touches the ring's indices.  The raw index operations (``push``, ``pop`` ...) are
kept here as methods for existing callers and live in :mod:`vbusfs.ioq.lowlevel`.
"""

from __future__ import annotations

import errno
import math
import select
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import lowlevel
from ._binding import (
    E_EMPTY,
    E_FULL,
    E_MSGSIZE,
    E_TIMEDOUT,
    EINTR,
    RECV,
    SEND,
    check,
    ffi,
    lib,
    raise_code,
)
from ._errors import IoqClosed, IoqEmpty, IoqFull
from ._ring import RX, Ring

if TYPE_CHECKING:
    from .lowlevel import Descriptor, Index, Whence

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
    """One side's handle on an ioq: a ring, its data segment and a shm-signal pair.

    Make one with :meth:`create` (north) or :meth:`attach` (south).
    """

    # ---- blocking (synchronous programs) --------------------------------------

    def _wait(self, op: int, timeout: float | None, spin_us: int) -> None:
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        deadline = _deadline(timeout)
        while True:
            rc = lib.ioq_wait(self._handle(), op, _ms(deadline), spin_us)
            if rc != EINTR:
                check(rc)
                return
            # a signal arrived: its Python handler has run by now; retry (PEP 475)

    def wait_sendable(self, timeout: float | None = None, *, spin_us: int = 0) -> None:
        """Block until a send can proceed; TimeoutError, IoqClosed or IoqFault otherwise."""
        self._wait(SEND, timeout, spin_us)

    def wait_receivable(self, timeout: float | None = None, *, spin_us: int = 0) -> None:
        """Block until a receive can proceed; TimeoutError, IoqClosed or IoqFault otherwise."""
        self._wait(RECV, timeout, spin_us)

    def send(
        self,
        message: bytes | bytearray | memoryview,
        timeout: float | None = None,
        *,
        spin_us: int = 0,
    ) -> None:
        """Send one message, waiting for room (``timeout`` bounds the whole call)."""
        # the hot path of a synchronous client: one crossing, few lookups
        h = self._h
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        n = len(message)
        if n > self.max_message or spin_us < 0:
            raise ValueError(f"message of {n} bytes exceeds {self.max_message} or spin_us < 0")
        buf = message if type(message) is bytes else ffi.from_buffer(message)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            rc = _send_one_wait(h, buf, n, -1 if deadline is None else _ms(deadline), spin_us)
            if rc >= 0:
                return
            if rc != E_FULL and rc != EINTR:
                raise_code(rc)

    def send_batch(
        self, messages: Sequence[bytes], timeout: float | None = None, *, spin_us: int = 0
    ) -> None:
        """Send every message, in order, waiting for room (``timeout`` bounds the whole call)."""
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

    def receive(self, timeout: float | None = None, *, spin_us: int = 0) -> bytes:
        """Receive one message, waiting for it (``timeout`` bounds the whole call)."""
        h = self._h
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        rx = self._rx
        while True:
            rc = _recv_one_wait(h, rx, RX, -1 if deadline is None else _ms(deadline), spin_us)
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
        self, max_messages: int = 64, timeout: float | None = None, *, spin_us: int = 0
    ) -> list[bytes]:
        """Receive between 1 and ``max_messages`` messages, waiting for the first."""
        got = self._recv_many(max_messages)
        if got == E_EMPTY:
            deadline = _deadline(timeout)
            while got == E_EMPTY:
                self._wait(RECV, _remaining(deadline), spin_us)
                got = self._recv_many(max_messages)
        if isinstance(got, int):
            raise_code(got)
        return got

    # ---- trio ------------------------------------------------------------

    def _wake_fd(self) -> int:
        efd = lib.ioq_wake_fd(self._handle())
        if self._hup_fd < 0:
            return efd
        if self._epoll is None:
            # one fd trio can wait on for both the eventfd and the peer's hang-up
            ep = select.epoll()
            ep.register(efd, select.EPOLLIN)
            ep.register(self._hup_fd, self._hup_events)
            self._epoll = ep
        return self._epoll.fileno()

    async def _wait_async(self, op: int, spin_us: int) -> None:
        import trio

        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        h = self._handle()
        if check(lib.ioq_ready(h, op)):
            await trio.lowlevel.checkpoint()
            return
        if spin_us:
            # spinning holds the event loop for at most spin_us
            rc = lib.ioq_wait(h, op, 0, spin_us)
            if rc != E_TIMEDOUT:
                check(rc)
                await trio.lowlevel.checkpoint()
                return
        while True:
            # ioq_wait's own steps, in C: arm (drain, enable, re-check), sleep here
            # in trio instead of in poll(), disarm (disable, re-check, peer gone?)
            if check(lib.ioq_wait_arm(self._handle(), op, 1)):
                await trio.lowlevel.checkpoint()
                return
            try:
                await trio.lowlevel.wait_readable(self._wake_fd())
            finally:
                # disarmed even when cancelled; a handle closed meanwhile has none
                woke = None if self._h is None else lib.ioq_wait_arm(self._h, op, 0)
            if woke is None:
                self._handle()  # raises IoqClosed
            elif check(woke):
                return

    async def wait_sendable_async(self, *, spin_us: int = 0) -> None:
        """Wait (trio) until a send can proceed; cancel with a trio cancel scope."""
        await self._wait_async(SEND, spin_us)

    async def wait_receivable_async(self, *, spin_us: int = 0) -> None:
        """Wait (trio) until a receive can proceed; cancel with a trio cancel scope."""
        await self._wait_async(RECV, spin_us)

    async def send_async(
        self, message: bytes | bytearray | memoryview, *, spin_us: int = 0
    ) -> None:
        while True:
            try:
                return self.send_nowait(message)
            except IoqFull:
                await self.wait_sendable_async(spin_us=spin_us)

    async def receive_async(self, *, spin_us: int = 0) -> bytes:
        while True:
            try:
                return self.receive_nowait()
            except IoqEmpty:
                await self.wait_receivable_async(spin_us=spin_us)

    async def receive_batch_async(self, max_messages: int = 64, *, spin_us: int = 0) -> list[bytes]:
        while True:
            try:
                return self.receive_batch_nowait(max_messages)
            except IoqEmpty:
                await self.wait_receivable_async(spin_us=spin_us)

    # ---- raw index operations (vbusfs.ioq.lowlevel) ----------------------------

    def push(self, index: Index, cookie: int, ptr: int, length: int) -> None:
        """North: push one descriptor (see :func:`vbusfs.ioq.lowlevel.push`)."""
        lowlevel.push(self, index, cookie, ptr, length)

    def pop(self, index: Index) -> Descriptor:
        """Pop at the head of ``index`` (see :func:`vbusfs.ioq.lowlevel.pop`)."""
        return lowlevel.pop(self, index)

    def count_of(self, index: Index) -> int:
        """Descriptors between head and tail of ``index``."""
        return lowlevel.count_of(self, index)

    def remain(self, index: Index) -> int:
        return lowlevel.remain(self, index)

    def is_full(self, index: Index) -> bool:
        return lowlevel.is_full(self, index)

    def is_empty(self, index: Index) -> bool:
        return lowlevel.is_empty(self, index)

    def seek(self, index: Index, whence: Whence, offset: int = 0) -> int:
        """Move this side's cursor on ``index`` (see :func:`vbusfs.ioq.lowlevel.seek`)."""
        return lowlevel.seek(self, index, whence, offset)

    def descriptor(self, pos: int) -> Descriptor:
        """A snapshot of descriptor ``pos`` as it is in shared memory (unvalidated)."""
        return lowlevel.descriptor(self, pos)
