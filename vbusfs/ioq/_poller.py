"""Poller: one wait on several rings, blocking in C or in trio.

A device that serves a request ring and a response ring, or a client with
several queues, waits for whichever is ready first with one call, instead of a
thread or a task per ring.  The C side (``native/poller.c``) keeps one epoll fd
per poller: each member's wake-up fd and its watched peer's fd (see
:meth:`Ring.watch_peer`) are registered once, when it is added, and stay
registered across waits.  A wait arms every ring in its mask with the same C
steps as a single ring's wait (drain, enable, re-check), sleeps once for all of
them, disarms them and returns the bits of the ready ones.

It must never wait anywhere but in C or in trio (a blocking wait holds no
Python lock), never touch the rings' indices, and a poller, like a ring, must
never be used by two threads or tasks at once.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Literal

from ._binding import (
    E_TIMEDOUT,
    EINTR,
    POLLER_MAX,
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
from ._ioq import _deadline, _ms
from ._ring import Ring, c_handle

if TYPE_CHECKING:
    from ._binding import PollerPtr

Op = Literal["receive", "send"]

#: wake-ups in a row that find nothing ready before wait_async starts backing off
FREE_EMPTY_WAKEUPS = 8
#: the back-off grows by this per further empty wake-up, up to MAX_BACKOFF (seconds)
BACKOFF = 0.0005
MAX_BACKOFF = 0.01

_wait = lib.ioq_poller_wait


class Poller:
    """Waits on several (ring, op) pairs at once.

    ``add`` gives each pair a bit; ``wait`` blocks (in C, the GIL released) until
    at least one pair in ``mask`` is ready and returns the bits of every ready
    one; ``wait_async`` does the same in trio.  A ring that faulted, or was
    closed while a member, counts as ready: its next operation raises
    (:class:`IoqFault`, :class:`IoqClosed`).  ``spin_us`` makes each wait poll the
    rings that long before it sleeps; ``spin_us="adaptive"`` (or ``adaptive=True``)
    polls for a budget the poller learns, 0 to 200 µs (the rule: :mod:`vbusfs.ioq`).
    """

    #: every bit: the default mask
    ALL = (1 << POLLER_MAX) - 1

    def __init__(self, spin_us: Spin = 0, *, adaptive: bool = False) -> None:
        if adaptive and spin_us not in (0, "adaptive"):
            raise ValueError("adaptive=True learns its own spin: give no spin_us")
        self._spin = spin_arg("adaptive" if adaptive else spin_us)
        out = ffi.new("struct ioq_poller **")
        check(lib.ioq_poller_new(out))
        self._p: PollerPtr | None = ffi.gc(out[0], lib.ioq_poller_free)
        self._fd: int = lib.ioq_poller_fd(out[0])
        self._ready = ffi.new("uint64_t *")
        self._members: dict[int, Ring] = {}  # bit number -> ring
        self._bits = 0

    def _handle(self) -> PollerPtr:
        p = self._p
        if p is None:
            raise IoqClosed(errno.EBADF, "poller is closed")
        return p

    def add(self, ring: Ring, op: Op) -> int:
        """Watch ``ring`` for ``op`` ("receive" or "send", as the ring's side allows);
        return the bit :meth:`wait` reports it with.  The same pair again returns the
        same bit.  The ring's watched peer, now or after a later ``watch_peer``, is
        watched too."""
        p = self._handle()
        if op not in ("receive", "send"):
            raise ValueError(f"op must be 'receive' or 'send', not {op!r}")
        if ring.sender != (op == "send"):
            raise ValueError(f"a {ring.side} side of a {ring.direction} ring cannot {op}")
        n = check(lib.ioq_poller_add(p, c_handle(ring), SEND if op == "send" else RECV))
        self._members[n] = ring
        self._bits |= 1 << n
        return 1 << n

    def remove(self, ring: Ring) -> None:
        """Stop watching ``ring`` (open or closed) and free its bit; KeyError if it is
        not a member."""
        p = self._handle()
        for n, member in self._members.items():
            if member is ring:
                check(lib.ioq_poller_remove(p, n))
                del self._members[n]
                self._bits &= ~(1 << n)
                return
        raise KeyError("not a member of this poller")

    def ring(self, bit: int) -> Ring:
        """The ring a bit (as :meth:`add` returned it) stands for."""
        return self._members[bit.bit_length() - 1]

    def __len__(self) -> int:
        return len(self._members)

    def _mask(self, mask: int) -> int:
        mask &= self._bits
        if not mask:
            raise ValueError("the mask names no member of this poller")
        return mask

    def wait(self, timeout: float | None = None, mask: int = ALL) -> int:
        """Block (GIL released) until a member in ``mask`` is ready; return the bits of
        every ready one.  TimeoutError after ``timeout`` seconds (0: never sleeps);
        IoqClosed once a watched peer of a member in ``mask`` hung up and none of them
        is ready."""
        p = self._handle()
        mask = self._mask(mask)
        deadline = _deadline(timeout)
        ready = self._ready
        while True:
            rc = _wait(p, mask, _ms(deadline), self._spin, ready)
            if rc == 0:
                return ready[0]
            if rc != EINTR:
                raise_code(rc)
            # a signal arrived: its Python handler has run by now; retry (PEP 475)

    async def wait_async(self, mask: int = ALL) -> int:
        """Wait (trio) until a member in ``mask`` is ready; return the bits of every
        ready one.  IoqClosed as :meth:`wait`; cancel with a trio cancel scope."""
        import trio

        p = self._handle()
        mask = self._mask(mask)
        ready = self._ready
        if self._spin:
            # spinning holds the event loop for at most spin_us
            rc = _wait(p, mask, 0, self._spin, ready)
            if rc == 0:
                await trio.lowlevel.checkpoint()
                return ready[0]
            if rc != E_TIMEDOUT:
                raise_code(rc)
        empty = 0
        while True:
            if empty >= FREE_EMPTY_WAKEUPS:
                # peers that keep waking us with nothing to do: back off, so what they
                # cost the loop is bounded; an honest peer never gets here
                await trio.sleep(min(MAX_BACKOFF, BACKOFF * (empty - FREE_EMPTY_WAKEUPS + 1)))
            rc = lib.ioq_poller_arm(self._handle(), mask, ready)
            if rc == 1:
                await trio.lowlevel.checkpoint()
                return ready[0]
            if rc < 0:
                raise_code(rc)
            try:
                await trio.lowlevel.wait_readable(self._fd)
            finally:
                # disarmed even when cancelled; a poller closed meanwhile has none
                woke = None if self._p is None else lib.ioq_poller_disarm(self._p, mask, ready)
            if woke is None:
                self._handle()  # raises IoqClosed
            elif woke == 1:
                return ready[0]
            elif woke < 0:
                raise_code(woke)
            empty += 1

    @property
    def spin_budget_us(self) -> float:
        """The adaptive spin budget learned so far (µs; 0 unless adaptive)."""
        return lib.ioq_poller_spin_budget(self._handle()) / 1000

    def fileno(self) -> int:
        """The poller's epoll fd (readable when a wait could end), for event loops."""
        self._handle()
        return self._fd

    @property
    def closed(self) -> bool:
        return self._p is None

    def close(self) -> None:
        """Free the poller and its epoll fd (the rings stay open).  Idempotent; never
        while a wait on it is running."""
        if self._p is None:
            return
        ffi.release(self._p)  # runs ioq_poller_free now, and never again
        self._p = None
        self._members.clear()
        self._bits = 0

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
