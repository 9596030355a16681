"""A venet connection whose frames move on a C thread of its own (venet-tap, venet-loopback).

The thread is a :class:`vbusfs.ioq.TapRunner`: started once both queues are attached,
stopped (and joined, at most one batch) before they close, whatever ends the connection.
It moves frames between the rings and the device's TAP, or loops them back, polling for
burstthresh and then sleeping on the rings (and the TAP), with txmitigation's completion
batching. Python only tells it what to do (:meth:`ThreadedConnection.configure`, at
LINKUP, LINKDOWN and every change of the device), reads its counts, and here waits for
a ring the thread found broken; it never waits for the daemon's event loop.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Sequence

from vbusfs.connector import venet as abi
from vbusfs.ioq import TapCounts, TapRunner
from vbusfs.model import VbusError

from ._venet_common import (
    BATCH,
    MAX_POLL_US,
    End,
    Tuning,
    VenetConnection,
    fault_error,
    heard,
    stop_waiting,
)


class ThreadedConnection(VenetConnection[End]):
    """A venet connection whose data path is a :class:`TapRunner`; a class says where
    the frames go (:meth:`target`)."""

    def __init__(self, owner: End, tuning: Tuning) -> None:
        super().__init__(owner, tuning)
        self.runner: TapRunner | None = None

    def target(self) -> tuple[int, bool]:
        """The TAP's descriptor (-1: none, transmitted frames are dropped), and whether
        frames loop back to the client instead."""
        return -1, False

    def attach_queue(self, index: int, fds: Sequence[int]) -> None:
        super().attach_queue(index, fds)
        if self.rx is None or self.tx is None or self.runner is not None:
            return
        try:
            self.runner = TapRunner(self.tx, self.rx)
        except OSError as exc:  # no thread or descriptor to be had: refused, as it was
            if index == abi.RX_QUEUE:
                self.rx.close()
                self.rx = None
            else:
                self.tx.close()
                self.tx = None
            why = f"cannot start the data path of {self.owner.name}: {exc}"
            raise VbusError(why, errno=exc.errno or errno.EAGAIN) from None
        self.tuning.listeners.append(self.configure)
        self.configure()

    def configure(self) -> None:
        """Tell the thread what it moves now (where to, the link, sizes, tuning)."""
        if self.runner is None or self._closed:
            return
        fd, loop = self.target()
        self.runner.configure(
            tap_fd=fd,
            loop=loop,
            link_up=self.link_up,
            min_length=self.min_frame,
            max_length=self.max_frame,
            every=min(BATCH, self.every()),
            spin_us=min(self.tuning.burstthresh, MAX_POLL_US),
        )

    def call(self, function: int, data: bytes) -> bytes:
        reply = super().call(function, data)
        if function in (abi.LINKUP, abi.LINKDOWN):
            self.configure()  # the link and its frame sizes, now that they are set
        return reply

    def flush_rx(self) -> int:
        if self.runner is None:
            return super().flush_rx()
        with self.runner.locked():  # the thread may be filling this ring's buffers
            return super().flush_rx()

    def stats(self) -> dict[str, int]:
        stats = dict(self.counters)
        if self.runner is not None and not self._closed:
            for name, value in _mapped(self.runner.counts()).items():
                stats[name] += value
        return stats

    def close(self) -> None:
        if not self._closed and self.runner is not None:
            runner, self.runner = self.runner, None
            with contextlib.suppress(ValueError):
                self.tuning.listeners.remove(self.configure)
            stop_waiting(runner.fault_fd)  # move() may be waiting on it
            for name, value in _mapped(runner.counts()).items():
                self.counters[name] += value
            runner.close()  # before the rings close: the thread must be done with them
        super().close()

    async def move(self) -> None:
        # the frames move on the runner's thread; here only a broken ring is heard of
        runner = self.runner
        if runner is None:
            return
        if not await heard(runner.fault_fd):
            return  # closed meanwhile
        faulted = runner.counts().faulted if runner.running else 0
        if faulted:
            raise fault_error(faulted)


def _mapped(got: TapCounts) -> dict[str, int]:
    return {
        "tx_frames": got.tx_frames,
        "tx_signals": got.tx_signals,
        "rx_frames": got.rx_frames,
        "oversize": got.oversize,
        "dropped": got.dropped,
        "polled": got.polled,
        "slept": got.slept,
    }
