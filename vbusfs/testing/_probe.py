"""What the harness sees of a device's connection: a probe between the daemon and the class.

`ProbedConnection` stands for the class's `DeviceConnection` in the daemon's
connector and hands every call on to it, noting on its `ConnectionProbe` when
`serve` started and ended (in which thread, raising what, stopped or not) and
each `close()` (with the loop still running? the rings still mapped?). It
changes nothing the class sees: the same `Queues`, the same calls, the same
exceptions. `DaemonLog` collects the daemon's "internal error" log lines
(a `close()` that raised, say) and the loops it abandoned while a harness runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from vbusfs.device import DeviceConnection, Queues
from vbusfs.ioq import IoqClosed

#: seconds the framework has to close the rings once close() returned
RINGS_CLOSE_WITHIN = 5.0


class ConnectionProbe:
    """One opened connection, as the framework drives it (read it from the test thread)."""

    def __init__(
        self, connection: DeviceConnection, device: str, bus: str, interface_id: int
    ) -> None:
        #: the class's own connection object
        self.connection = connection
        self.device = device
        self.bus = bus
        self.interface_id = interface_id
        self.label = f"device {device} (interface {bus}/{interface_id})"
        #: what serve() received (None until it starts)
        self.queues: Queues | None = None
        #: the thread serve() ran in
        self.thread: threading.Thread | None = None
        self.started = threading.Event()
        self.ended = threading.Event()
        #: what serve() raised (None: it returned)
        self.outcome: BaseException | None = None
        #: whether the framework had stopped the loop when serve() ended
        self.stopped_when_ended: bool | None = None
        #: time.monotonic() when serve() ended
        self.ended_at: float | None = None
        self.closes = 0
        #: set once close() has returned (or raised)
        self.closed = threading.Event()
        #: what was wrong when close() was called
        self.close_problems: list[str] = []
        self._lock = threading.Lock()

    @property
    def failed(self) -> bool:
        """serve() raised something other than IoqClosed: the device failed."""
        return (
            self.ended.is_set()
            and self.outcome is not None
            and not isinstance(self.outcome, IoqClosed)
        )

    @property
    def ended_early(self) -> bool:
        """serve() ended (returned or raised) before the framework stopped it."""
        return self.ended.is_set() and not self.stopped_when_ended

    def rings_closed(self) -> bool:
        return self.queues is not None and all(ring.closed for ring in self.queues.values())

    def check_closed_in_order(self, after: str) -> None:
        """close() was called exactly once, after the loop ended, with the rings still
        mapped; the rings are closed since. AssertionError otherwise."""
        assert self.closes == 1, f"{self.label}: close() was called {self.closes} times ({after})"
        assert not self.close_problems, f"{self.label}: {'; '.join(self.close_problems)} ({after})"
        if self.queues is None:
            return
        deadline = time.monotonic() + RINGS_CLOSE_WITHIN
        while not self.rings_closed():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label}: its rings were not closed after {after}")
            time.sleep(0.001)

    # -- what the proxy reports --------------------------------------------------

    def serving(self, queues: Queues) -> None:
        self.queues = queues
        self.thread = threading.current_thread()
        self.started.set()

    def served(self, outcome: BaseException | None, stopped: bool) -> None:
        self.outcome = outcome
        self.stopped_when_ended = stopped
        self.ended_at = time.monotonic()
        self.ended.set()

    def closing(self) -> None:
        with self._lock:
            self.closes += 1
            if self.started.is_set() and not self.ended.is_set():
                self.close_problems.append("close() was called while its loop was running")
            if self.queues is not None and any(ring.closed for ring in self.queues.values()):
                self.close_problems.append("close() was called after its rings were closed")


class ProbedConnection(DeviceConnection):
    """The class's connection, as the daemon's connector sees it in a harness."""

    def __init__(self, inner: DeviceConnection, probe: ConnectionProbe) -> None:
        self._inner = inner
        self._probe = probe

    def call(self, function: int, data: bytes) -> bytes:
        return self._inner.call(function, data)

    def attach_queue(self, index: int, fds: Sequence[int]) -> None:
        self._inner.attach_queue(index, fds)

    def serve(self, queues: Any) -> None:
        self._probe.serving(queues)
        outcome: BaseException | None = None
        try:
            self._inner.serve(queues)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            self._probe.served(outcome, queues.stopping)

    async def run(self) -> None:
        await self._inner.run()

    def stats(self) -> dict[str, int]:
        return self._inner.stats()

    def close(self) -> None:
        self._probe.closing()
        try:
            self._inner.close()
        finally:
            self._probe.closed.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class DaemonLog(logging.Handler):
    """The connector's error records while started: "internal error" ones (`records`),
    and the loops it abandoned for not stopping within the bound (`abandoned`)."""

    LOGGER = "vbusfs.connector"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.abandoned: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "internal error" in message:
            self.records.append(record)
        elif "did not stop within" in message:
            self.abandoned.append(message)

    def abandoned_loop(self, probe: ConnectionProbe) -> str | None:
        """The framework's line saying it abandoned `probe`'s loop, if it did."""
        names = f"device {probe.device} interface {probe.bus}/{probe.interface_id}:"
        return next((line for line in self.abandoned if names in line), None)

    def start(self) -> None:
        logging.getLogger(self.LOGGER).addHandler(self)

    def stop(self) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)

    def check(self, where: str) -> None:
        """AssertionError with the records (and their tracebacks) if any came."""
        if self.records:
            text = "\n".join(self.format(r) for r in self.records)
            self.records.clear()
            raise AssertionError(f"the daemon logged an internal error by {where}:\n{text}")
