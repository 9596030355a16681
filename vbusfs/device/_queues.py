"""Queues: what a device's `serve` loop receives, the attached rings of one open interface.

The framework (vbusfs.connector) attaches every declared queue south-side as a
blocking `Ioq` that watches the framework's stop socket, builds one `Queues`,
and hands it to `DeviceConnection.serve` in the loop's own thread. Stopping
(`stop`, the framework's alone) closes that socket: every wait on the rings
then ends with `IoqClosed`, and `wait_stopped` returns. Nothing here starts a
thread or touches the model.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from vbusfs.ioq import Ioq, IoqClosed, Poller
from vbusfs.model import QueueSpec

Spin = int | Literal["adaptive"]


def spin_value(spin_us: int | str) -> Spin:
    """A ring wait's spin_us: microseconds (an int >= 0) or "adaptive" (the ring learns
    its own budget, 0..200 us)."""
    if spin_us == "adaptive":
        return "adaptive"
    if isinstance(spin_us, str | bool) or spin_us < 0:
        raise ValueError(f"spin_us must be an int >= 0 or 'adaptive', not {spin_us!r}")
    return spin_us


def slot_size(ring: Ioq) -> int:
    """The client's buffer size per descriptor of `ring` (what one message may carry)."""
    return ring.slot_size


@dataclass(frozen=True, slots=True)
class DeviceNames:
    """Who a loop belongs to, as logs name it."""

    deviceclass: str
    device: str
    interface: str

    def __str__(self) -> str:
        return f"{self.deviceclass} device {self.device} interface {self.interface}"


class QueuePoller:
    """A `Poller` over some of the queues, each watched for its natural operation
    (receive on a to_south queue, send on a to_north one); reports queue indexes."""

    def __init__(self, queues: Queues, indexes: list[int], spin_us: int | str) -> None:
        self.poller = Poller(spin_us=spin_value(spin_us))
        #: queue index -> its bit in the poller's masks
        self.bits: dict[int, int] = {}
        for index in indexes:
            ring = queues[index]
            to_south = queues.specs[index].direction == "to_south"
            self.bits[index] = self.poller.add(ring, "receive" if to_south else "send")

    def wait(self, timeout: float | None = None, indexes: list[int] | None = None) -> set[int]:
        """Block (GIL released) until one of `indexes` (default: all) is ready; the ready
        ones. TimeoutError; IoqClosed once the framework stops the loop."""
        mask = Poller.ALL if indexes is None else sum(self.bits[i] for i in indexes)
        ready = self.poller.wait(timeout, mask)
        return {index for index, bit in self.bits.items() if ready & bit}

    def close(self) -> None:
        self.poller.close()


class Queues(Mapping[int, Ioq]):
    """The queues of one open interface: index -> blocking `Ioq` (south side).

    `specs` holds each queue's declaration, `names` who the loop belongs to.
    `stopping` turns true when the framework stops the loop; from then on every
    wait on the rings ends with `IoqClosed`.
    """

    def __init__(
        self,
        rings: Mapping[int, Ioq],
        specs: Mapping[int, QueueSpec],
        names: DeviceNames,
        *,
        stop_socket: socket.socket | None = None,
    ) -> None:
        self._rings = dict(rings)
        self.specs = dict(specs)
        self.names = names
        self._stopped = threading.Event()
        self._stop_socket = stop_socket

    def __getitem__(self, index: int) -> Ioq:
        return self._rings[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rings)

    def __len__(self) -> int:
        return len(self._rings)

    @property
    def stopping(self) -> bool:
        """True once the framework has asked the loop to stop."""
        return self._stopped.is_set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block (GIL released) until the framework stops the loop; False on timeout."""
        return self._stopped.wait(timeout)

    def check_stopping(self) -> None:
        """Raise IoqClosed if the framework is stopping the loop (for loops that compute
        long between waits)."""
        if self._stopped.is_set():
            raise IoqClosed(0, "the device is being stopped")

    def poller(self, indexes: list[int] | None = None, *, spin_us: int | str = 0) -> QueuePoller:
        """A poller over `indexes` (default: every queue), for loops that wait on
        several queues in one call; the caller closes it."""
        chosen = sorted(self._rings) if indexes is None else list(indexes)
        return QueuePoller(self, chosen, spin_us)

    def stop(self) -> None:
        """The framework's: end every wait on the rings (IoqClosed) and `wait_stopped`.
        Never blocks; idempotent. A device never calls it."""
        self._stopped.set()
        if self._stop_socket is not None:
            with contextlib.suppress(OSError):
                self._stop_socket.close()
            self._stop_socket = None
