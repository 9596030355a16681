"""SwitchRunner: the venet-switch's data path on a C thread of its own.

The thread sleeps on every linked port's transmit ring and forwards each batch as it
comes (``vswitch_forward``), so frames crossing the switch never wait for the daemon's
event loop. The owner gives it each port's south rings (:meth:`SwitchRunner.set_port`)
and takes them away before closing them; anything else it does to the :class:`Switch`
or to those rings goes inside :meth:`SwitchRunner.locked`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

from ._binding import check, ffi, lib
from ._ring import Ring, c_handle
from ._runners import CThreadRunner
from ._switch import Switch


class RunCounts(NamedTuple):
    """One port's totals since its rings were given to the runner."""

    tx_frames: int  # taken from its transmit ring
    bad_size: int  # of those, dropped: outside its format's sizes
    gso_dropped: int  # copies of its large segments not made for bare ports
    gso_segmented: int  # copies of its large TCP segments cut into frames for bare ports
    signals: int  # completion signals to its client
    rx_delivered: int  # frames published on its receive ring
    rx_dropped: int  # frames for it not delivered (no buffer posted, too long)
    polled: int  # idle spells met by polling
    slept: int  # idle spells that slept
    faulted: int  # 1: its transmit ring broke, 2: its receive ring (no longer used)


class SwitchRunner(CThreadRunner):
    """A thread forwarding between the ports of ``switch``; ``spin_us``: how long it polls
    the rings before it sleeps."""

    def __init__(self, switch: Switch, spin_us: int = 0) -> None:
        out = ffi.new("struct vswitch_runner **")
        check(lib.vswitch_runner_new(switch._sw, spin_us, out))
        self.switch = switch  # kept alive as long as the thread uses it
        self._r = out[0]
        self._track()  # running from here: stopped by close(), __del__ or at exit
        self._counts = ffi.new("struct vswitch_run_counts *")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The thread is kept out (waiting at most one batch) while this runs."""
        if not self._open:
            raise ValueError("the runner is closed")
        lib.vswitch_runner_lock(self._r)
        try:
            yield
        finally:
            lib.vswitch_runner_unlock(self._r)

    def set_port(
        self,
        index: int,
        tx: Ring | None,
        rx: Ring | None,
        every: int = 1,
        fault_fd: int = -1,
    ) -> None:
        """Forward from ``tx`` (a to_south ring's south side) and deliver to ``rx`` (a
        to_north ring's); None for either: not any more. Both None takes the port away
        (its counts start again); the runner never touches a ring it no longer has.

        ``fault_fd`` (an eventfd of the caller's, -1: none) is written each time the
        port's :attr:`RunCounts.faulted` gains a bit (at once if it has one already),
        until the port is set again: the caller may close it from then on."""
        if not 0 <= index < Switch.MAX_PORTS or every < 1 or fault_fd < -1:
            raise ValueError(f"port 0..{Switch.MAX_PORTS - 1}, every >= 1, fault_fd >= -1")
        with self.locked():
            check(
                lib.vswitch_runner_port(
                    self._r,
                    index,
                    ffi.NULL if tx is None else c_handle(tx),
                    ffi.NULL if rx is None else c_handle(rx),
                    every,
                    fault_fd,
                )
            )

    def tune(self, spin_us: int, every: int) -> None:
        """The polling budget and every port's completion interval, from the next wait."""
        with self.locked():
            check(lib.vswitch_runner_tune(self._r, spin_us, max(1, every)))

    def counts(self, index: int) -> RunCounts:
        with self.locked():
            check(lib.vswitch_runner_counts(self._r, index, self._counts))
            c = self._counts
            return RunCounts(
                int(c.tx_frames),
                int(c.bad_size),
                int(c.gso_dropped),
                int(c.gso_segmented),
                int(c.signals),
                int(c.rx_delivered),
                int(c.rx_dropped),
                int(c.polled),
                int(c.slept),
                int(c.faulted),
            )

    def _free(self) -> None:
        lib.vswitch_runner_free(self._r)
