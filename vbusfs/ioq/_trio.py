"""AsyncIoq: the ring with its trio face, for programs (and the daemon) under trio.

Its waiting methods are ``async def`` and sleep in trio on the shm-signal
eventfd, or, while a peer is watched, on the handle's own epoll fd (made in C at
the first wait and kept, with both registrations, until close); a trio cancel
scope ends them.  They arm and re-check through the same C steps as the
blocking face (``_ioq``) and never touch the ring's indices.  trio is imported
on the first wait, so importing :mod:`vbusfs.ioq` never loads it; nothing here
may block the thread beyond a wait's ``spin_us``.
"""

from __future__ import annotations

from ._binding import E_TIMEDOUT, RECV, SEND, Spin, check, lib, spin_arg
from ._errors import IoqEmpty, IoqFull
from ._ring import Ring

#: wake-ups in a row that find nothing ready before a wait starts backing off
FREE_EMPTY_WAKEUPS = 8
#: the back-off grows by this per further empty wake-up, up to MAX_BACKOFF (seconds)
BACKOFF = 0.0005
MAX_BACKOFF = 0.01


class AsyncIoq(Ring):
    """One side's handle on an ioq, trio face: a ring, its data segment, a shm-signal pair.

    Make one with :meth:`create` (north) or :meth:`attach` (south).  The ``*_nowait``
    methods never block; ``send``, ``receive``, ``receive_batch`` and ``wait_*`` are
    ``async def`` and wait in trio.  Synchronous programs use :class:`~vbusfs.ioq.Ioq`.
    """

    def _wake_fd(self, op: int) -> int:
        # one fd for trio, found in C once per watch_peer: the eventfd, or the
        # handle's own epoll fd holding it and the peer's hang-up
        if self._wait_fd < 0:
            self._wait_fd = check(lib.ioq_wait_fd(self._handle(), op))
        return self._wait_fd

    async def _wait(self, op: int, spin_us: Spin) -> None:
        import trio

        spin = spin_arg(spin_us)
        h = self._handle()
        if check(lib.ioq_ready(h, op)):
            await trio.lowlevel.checkpoint()
            return
        if spin:
            # spinning holds the event loop for at most spin_us (adaptive: 200 us); an
            # adaptive spin that runs out is judged when the disarm below finds work
            rc = lib.ioq_wait(h, op, 0, spin)
            if rc != E_TIMEDOUT:
                check(rc)
                await trio.lowlevel.checkpoint()
                return
        empty = 0
        while True:
            # ioq_wait's own steps, in C: arm (drain, enable, re-check), sleep here
            # in trio instead of in poll(), disarm (disable, re-check, peer gone?)
            if empty >= FREE_EMPTY_WAKEUPS:
                # a peer that keeps waking us with nothing to do (it can write the
                # eventfd as fast as it likes): back off, so what it costs the loop
                # is bounded whatever it does; an honest peer never gets here
                await trio.sleep(min(MAX_BACKOFF, BACKOFF * (empty - FREE_EMPTY_WAKEUPS + 1)))
            if check(lib.ioq_wait_arm(self._handle(), op, 1)):
                await trio.lowlevel.checkpoint()
                return
            try:
                await trio.lowlevel.wait_readable(self._wake_fd(op))
            finally:
                # disarmed even when cancelled; a handle closed meanwhile has none
                woke = None if self._h is None else lib.ioq_wait_arm(self._h, op, 0)
            if woke is None:
                self._handle()  # raises IoqClosed
            elif check(woke):
                return
            empty += 1

    async def wait_sendable(self, *, spin_us: Spin = 0) -> None:
        """Wait (trio) until a send can proceed; cancel with a trio cancel scope."""
        await self._wait(SEND, spin_us)

    async def wait_receivable(self, *, spin_us: Spin = 0) -> None:
        """Wait (trio) until a receive can proceed; cancel with a trio cancel scope."""
        await self._wait(RECV, spin_us)

    async def send(self, message: bytes | bytearray | memoryview, *, spin_us: Spin = 0) -> None:
        """Send one message, waiting (trio) for room."""
        while True:
            try:
                return self.send_nowait(message)
            except IoqFull:
                await self.wait_sendable(spin_us=spin_us)

    async def receive(self, *, spin_us: Spin = 0) -> bytes:
        """Receive one message, waiting (trio) until there is one."""
        while True:
            try:
                return self.receive_nowait()
            except IoqEmpty:
                await self.wait_receivable(spin_us=spin_us)

    async def receive_batch(self, max_messages: int = 64, *, spin_us: Spin = 0) -> list[bytes]:
        """Receive between 1 and ``max_messages`` messages, waiting (trio) for the first."""
        while True:
            try:
                return self.receive_batch_nowait(max_messages)
            except IoqEmpty:
                await self.wait_receivable(spin_us=spin_us)
