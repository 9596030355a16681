"""TapRunner: venet-tap's (and venet-loopback's) data path on a C thread of its own.

The thread moves frames between a host TAP's descriptor and the south side of a venet
interface's two rings (transmit ring -> TAP, TAP -> receive ring), or, looped, from the
transmit ring straight back into the receive ring, a batch per step with
txmitigation's completion batching, polls for ``spin_us`` when idle and then sleeps on
the rings' wake-up fds and the TAP; it never waits for the daemon's event loop. The
owner tells it what to do (:meth:`TapRunner.configure`: the TAP's descriptor, the link,
the frame sizes) and touches the rings or the TAP only inside :meth:`TapRunner.locked`,
so it may close or replace the TAP there; :meth:`TapRunner.close` stops and joins the
thread before the owner closes the rings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

from ._binding import check, ffi, lib
from ._ring import Ring, c_handle
from ._runners import CThreadRunner


class TapCounts(NamedTuple):
    """Totals since the runner was made."""

    tx_frames: int  # taken from the transmit ring
    tx_signals: int  # completion signals to the client
    rx_frames: int  # read from the TAP, published on the receive ring
    oversize: int  # frames either way outside the link's sizes: dropped
    dropped: int  # transmitted frames that did not reach the TAP
    polled: int  # idle spells met by polling
    slept: int  # idle spells that slept
    faulted: int  # 1: the transmit ring broke, 2: the receive ring (no longer used)


class TapRunner(CThreadRunner):
    """A thread moving frames between a TAP and ``tx`` (a to_south ring's south side,
    client to TAP) and ``rx`` (a to_north ring's, TAP to client). Idle until configured
    with a TAP or the link up. The rings and the TAP stay the caller's."""

    def __init__(self, tx: Ring, rx: Ring) -> None:
        if tx.side != "south" or tx.direction != "to_south":
            raise ValueError("tx must be the south side of a to_south ring")
        if rx.side != "south" or rx.direction != "to_north":
            raise ValueError("rx must be the south side of a to_north ring")
        out = ffi.new("struct vtap_runner **")
        check(lib.vtap_runner_new(c_handle(tx), c_handle(rx), out))
        self.tx, self.rx = tx, rx  # kept alive as long as the thread uses them
        self._r = out[0]
        self._track()  # running from here: stopped by close(), __del__ or at exit
        self._held = False
        self._config = ffi.new("struct vtap_config *")
        self._counts = ffi.new("struct vtap_counts *")

    @property
    def fault_fd(self) -> int:
        """Readable once a ring broke (see :attr:`TapCounts.faulted`); the runner's own."""
        if not self._open:
            raise ValueError("the runner is closed")
        return int(lib.vtap_runner_fault_fd(self._r))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The thread is kept out (waiting at most one batch) while this runs: the
        rings and the TAP's descriptor are the caller's meanwhile."""
        if not self._open:
            raise ValueError("the runner is closed")
        if self._held:
            yield
            return
        lib.vtap_runner_lock(self._r)
        self._held = True
        try:
            yield
        finally:
            self._held = False
            lib.vtap_runner_unlock(self._r)

    def configure(
        self,
        *,
        tap_fd: int,
        link_up: bool,
        min_length: int,
        max_length: int,
        every: int,
        spin_us: int,
        loop: bool = False,
    ) -> None:
        """From the next step: ``tap_fd`` (-1: none, transmitted frames are dropped),
        whether the link is up (down: the transmit ring waits, the TAP's frames are
        dropped), a frame's sizes, frames per completion signal, the polling budget;
        ``loop``: transmitted frames come back on the receive ring (no TAP)."""
        if every < 1 or not 0 <= min_length <= max_length <= 2**32 - 1 or max_length < 1:
            raise ValueError("every >= 1 and 0 <= min_length <= max_length < 2**32")
        if tap_fd < -1 or spin_us < 0:
            raise ValueError("tap_fd >= -1 and spin_us >= 0")
        c = self._config
        c.tap_fd, c.loop, c.link_up = tap_fd, int(loop), int(link_up)
        c.min_len, c.max_len, c.every, c.spin_us = min_length, max_length, every, spin_us
        with self.locked():
            check(lib.vtap_runner_set(self._r, c))

    def counts(self) -> TapCounts:
        with self.locked():
            check(lib.vtap_runner_counts(self._r, self._counts))
            c = self._counts
            return TapCounts(
                int(c.tx_frames),
                int(c.tx_signals),
                int(c.rx_frames),
                int(c.oversize),
                int(c.dropped),
                int(c.polled),
                int(c.slept),
                int(c.faulted),
            )

    @property
    def running(self) -> bool:
        return self._open

    def _free(self) -> None:
        """Stop and join the thread (at most one batch)."""
        lib.vtap_runner_free(self._r)
