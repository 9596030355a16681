"""FdPump: frames between a file descriptor (a TAP) and the north side of two rings,
the whole loop in C.

It is the vbus-enet driver's data path (``vbusfs enet``): one :meth:`FdPump.run` call
moves frames both ways, a batch per step, one ``read``/``write`` per frame straight
between the descriptor and the rings' data segments, and returns only when a control
descriptor turns readable (a stop request, an event to read) or the device is gone.
The GIL is released for the whole call.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import Enum

from ._binding import check, ffi, lib
from ._ring import Ring, _fileno, c_handle


class PumpEnd(Enum):
    """Why :meth:`FdPump.run` returned."""

    STOPPED = "stopped"  # stop_fd turned readable
    EVENT = "event"  # event_fd turned readable


@dataclass(frozen=True)
class PumpCounts:
    """Frames moved by a pump since it was made."""

    to_device: int  # read from the descriptor, sent on the transmit ring
    to_host: int  # received on the receive ring, written to the descriptor
    host_dropped: int  # a write to the descriptor failed or was short
    bad_size: int  # read from the descriptor, longer than a transmit slot: dropped
    flushed: int  # empty receive buffers (FLUSHRX) posted again
    polled: int  # idle spells met by polling
    slept: int  # idle spells that slept


class FdPump:
    """Frames between ``fd`` and the north side of ``rx`` (to_north: device to host) and
    ``tx`` (to_south: host to device).

    ``max_length`` bounds what one read from ``fd`` may take (a longer frame is read and
    dropped, counted in ``bad_size``); ``spin_us`` is how long an idle pump polls before
    it sleeps. The rings and descriptors stay the caller's; the pump never closes them.
    """

    def __init__(self, rx: Ring, tx: Ring, fd: int, *, max_length: int, spin_us: int = 0) -> None:
        if rx.side != "north" or rx.direction != "to_north":
            raise ValueError("rx must be the north side of a to_north ring")
        if tx.side != "north" or tx.direction != "to_south":
            raise ValueError("tx must be the north side of a to_south ring")
        if isinstance(spin_us, bool) or not isinstance(spin_us, int) or spin_us < 0:
            raise ValueError(f"spin_us must be an int >= 0, not {spin_us!r}")
        if not 1 <= max_length <= 2**32 - 1:
            raise ValueError(f"max_length must be 1..2**32-1, not {max_length!r}")
        self.rx, self.tx = rx, tx
        self.fd = _fileno(fd)
        self.max_length = max_length
        self.spin_us = spin_us
        self._counts = ffi.new("struct fdpump_counts *")

    def run(
        self,
        stop_fd: int,
        *,
        event_fd: int | None = None,
        hangup: socket.socket | int | None = None,
    ) -> PumpEnd:
        """Move frames until ``stop_fd`` (STOPPED) or ``event_fd`` (EVENT) turns readable;
        the caller drains it before running again. ``hangup``: a socket (or fd) whose
        peer's hang-up means the device is gone: IoqClosed. IoqFault when a ring broke;
        OSError when reading ``fd`` fails."""
        hup = (
            -1
            if hangup is None
            else (hangup.fileno() if isinstance(hangup, socket.socket) else hangup)
        )
        got = check(
            lib.fdpump_run(
                c_handle(self.rx),
                c_handle(self.tx),
                self.fd,
                _fileno(stop_fd),
                -1 if event_fd is None else _fileno(event_fd),
                hup,
                self.max_length,
                self.spin_us,
                self._counts,
            )
        )
        return PumpEnd.EVENT if got == lib.FDPUMP_EVENT else PumpEnd.STOPPED

    def counts(self) -> PumpCounts:
        c = self._counts
        return PumpCounts(
            int(c.to_device),
            int(c.to_host),
            int(c.host_dropped),
            int(c.bad_size),
            int(c.flushed),
            int(c.polled),
            int(c.slept),
        )
