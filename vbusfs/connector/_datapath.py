"""The data path the framework owns: declared queues, the device's loop thread, the close order.

For a deviceclass that declares `queues` (vbusfs.device), one `DataPath` per open
interface: it validates and attaches each queue the client sends (south side,
a blocking `Ioq` watching the framework's stop socket), starts
`DeviceConnection.serve` in a thread of its own once every declared queue exists,
and ends in one order whatever ended it (the client closed or died, its process
left the bus, the interface was unlinked, the daemon stops):

1. stop: the stop socket closes, so every wait on the rings ends with IoqClosed;
2. join: wait (on trio, never blocking the loop) for the loop thread, at most
   `Closer.bound` seconds;
3. `connection.close()`;
4. the south rings close (and the stop socket's other end);
5. the client's hang-up socket closes (its own ring waits end with IoqClosed).

A loop still running after the bound is logged with its class, device and
interface, left as a daemon thread (its rings stay mapped until it ends; then
steps 3-4 run), and its client's hang-up socket is closed at once: a stuck device
keeps neither its client nor the daemon's exit waiting. A loop that raises is the
device's failure (`on_end` hears it); IoqFault from it is the client's.

Everything here but `_loop` runs on the daemon's trio thread; the loop thread
touches only its rings and its connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from vbusfs.device import DeviceNames, Queues, slot_size
from vbusfs.ioq import Ioq, IoqClosed, IoqError
from vbusfs.model import (
    Busy,
    DeviceConnection,
    Interface,
    InvalidValue,
    QueueSpec,
    Vbus,
    VbusError,
)

from ._refusals import MAP_ERRNOS

log = logging.getLogger("vbusfs.connector")

#: seconds a stopped loop may take to end before it is logged and abandoned
JOIN_BOUND = 2.0
#: how often (seconds) the interpreter switches threads once device loops run: Python's
#: 5 ms default let a loop computing in Python hold the filesystem's requests that long
#: each (attribute read p99 about 20 ms against about 9 ms at 0.5 ms, measured with a
#: loop that computes 2 ms per request)
SWITCH_INTERVAL = 0.0005

Outcome = BaseException | None


@dataclass(eq=False)
class Open:
    """One interface a client has open."""

    interface_id: int
    connection: DeviceConnection
    # our end of a socketpair whose other end the client's rings watch: closing it
    # wakes every wait on this device's queues, so a drop or a release never hangs them
    hangup: socket.socket | None = None
    # legacy devices (no declared queues): the cancel scope of their run()
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    dropped: bool = False
    # classes that declare queues: the framework's side of the data path
    datapath: DataPath | None = None
    # why the handle answers EIO: its device's loop failed
    failed: str | None = None
    interface_type: str = ""
    # the interface opened, until its close is published (monitors hear it once)
    interface: Interface | None = None


def data_path_of(
    vbus: Vbus,
    bus: str,
    interface_id: int,
    opened: Open,
    on_end: Callable[[DataPath, Outcome], None],
    workers: Any = None,
    bound: float = JOIN_BOUND,
) -> DataPath | None:
    """The data path of a just-opened interface whose class declares queues, else None:
    in a worker process (`_workers`, given `workers`) if its class's isolation says so."""
    interface = vbus.bus(bus).interfaces[interface_id]
    opened.interface = interface
    opened.interface_type = interface.type
    deviceclass = interface.device.deviceclass
    if deviceclass is None or not deviceclass.queues:
        return None
    names = DeviceNames(deviceclass.name, interface.device.name, f"{bus}/{interface_id}")
    if deviceclass.isolation == "process" and workers is not None:
        from ._workers import WorkerDataPath

        try:
            declared = (*deviceclass.attributes, *deviceclass.interface_attributes)
            return WorkerDataPath(
                opened.connection,
                deviceclass.queues,
                names,
                opened.hangup,
                on_end,
                workers,
                bound,
                frozenset(a.name for a in declared),
            )
        except VbusError:
            raise
        except OSError as exc:  # out of descriptors, say: refused, the daemon goes on
            code = exc.errno or errno.EIO
            raise VbusError(f"cannot start the worker of {names}: {exc}", errno=code) from None
        except Exception as exc:
            log.exception("%s: cannot start its worker", names)
            raise VbusError(f"cannot start the worker of {names}: {exc}", errno=errno.EIO) from None
    return DataPath(opened.connection, deviceclass.queues, names, opened.hangup, on_end)


def release(opened: Open, closer: Closer) -> None:
    """Let go of an open interface: the close order of its data path, or (legacy) cancel
    its run(), close the connection and the hang-up socket."""
    if opened.datapath is not None:
        closer.close(opened.datapath)
        return
    opened.scope.cancel()
    opened.connection.close()
    if opened.hangup is not None:
        opened.hangup.close()


class DataPath:
    """The framework's side of one open interface of a class that declares queues."""

    def __init__(
        self,
        connection: DeviceConnection,
        specs: Sequence[QueueSpec],
        names: DeviceNames,
        hangup: socket.socket | None,
        on_end: Callable[[DataPath, Outcome], None],
    ) -> None:
        self.connection = connection
        self.specs = {spec.index: spec for spec in specs}
        self.names = names
        # our end of the socketpair the client's rings watch: closed last
        self.hangup = hangup
        # the loop ended by itself (None: returned; else what it raised): on trio's thread
        self.on_end = on_end
        self.rings: dict[int, Ioq] = {}
        # the rings watch `_watched`; closing `_stopper` ends their waits
        self._watched, self._stopper = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.queues: Queues | None = None
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.closed = False  # steps 3-4 done
        self.finished = trio.Event()  # steps 3-5 done: a client's close is answered then
        self.ended = trio.Event()  # the loop thread has ended (or never started)
        self._token = trio.lowlevel.current_trio_token()

    # -- attaching ------------------------------------------------------------

    def attach(self, index: int, fds: Sequence[int], direction: Any) -> None:
        """Validate and attach the client's queue `index`; start the loop once all exist.

        EINVAL: not declared, or a ring outside its spec; EBUSY: attached already,
        or the device is closing. Refused, nothing changes."""
        if self.stopping:
            raise Busy(f"{self.names} is closing")
        spec = self.specs.get(index)
        if spec is None:
            declared = ", ".join(map(str, sorted(self.specs)))
            raise InvalidValue(f"{self.names.deviceclass} has no queue {index} (it has {declared})")
        if index in self.rings:
            raise Busy(f"{spec.label} is already attached")
        if direction is not None and not isinstance(direction, str):
            raise InvalidValue(f"{spec.label}: direction must be a string")
        try:
            ring = Ioq.attach(list(fds), direction=spec.direction)
        except (IoqError, OSError) as exc:
            code = MAP_ERRNOS.get(exc.errno or 0, exc.errno or errno.EINVAL)
            why = exc.strerror or str(exc) or type(exc).__name__
            why = f"{spec.label}: cannot map the client's ring: {why}"
            raise VbusError(why, errno=code) from None
        except (ValueError, OverflowError) as exc:
            raise InvalidValue(f"{spec.label}: {exc}") from None
        try:
            spec.check(direction=direction, count=ring.count, slot_size=slot_size(ring))
            ring.watch_peer(self._watched)
        except BaseException:
            ring.close()
            raise
        self.rings[index] = ring
        if len(self.rings) == len(self.specs):
            try:
                self._start()
            except RuntimeError as exc:  # no thread to be had: refused, nothing changed
                del self.rings[index]
                self.queues = self.thread = None
                ring.close()
                why = f"cannot start the loop of {self.names}: {exc}"
                raise VbusError(why, errno=errno.EAGAIN) from None

    def _start(self) -> None:
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
            log.info("device loops run: threads switch every %g ms", SWITCH_INTERVAL * 1000)
        self.queues = Queues(self.rings, self.specs, self.names, stop_socket=self._stopper)
        self.thread = threading.Thread(
            target=self._loop, name=f"vbusfs {self.names}"[:200], daemon=True
        )
        self.thread.start()

    @property
    def running(self) -> bool:
        return self.thread is not None and not self.ended.is_set()

    # -- the loop thread --------------------------------------------------------

    def _loop(self) -> None:
        outcome: Outcome = None
        try:
            assert self.queues is not None
            self.connection.serve(self.queues)
        except IoqClosed as exc:
            # the way a stopped loop ends; unasked-for, it still ends the loop quietly
            if not self.stopping:
                log.debug("%s: loop ended: %s", self.names, exc)
        except BaseException as exc:  # the thread's end, reported to trio
            outcome = exc
        try:
            self._token.run_sync_soon(self._loop_ended, outcome)
        except trio.RunFinishedError:
            # the daemon stopped serving while this loop was stuck: its rings are its own
            log.info("%s: loop ended after the daemon stopped serving", self.names)
            self._close_rings()

    def _loop_ended(self, outcome: Outcome) -> None:
        self.ended.set()
        if self.stopping:
            self._finish()  # steps 3-5, the join having ended
        else:
            self.on_end(self, outcome)

    # -- closing ---------------------------------------------------------------

    def stop(self) -> None:
        """Step 1: every wait on the rings ends with IoqClosed. Never blocks; idempotent."""
        self.stopping = True
        if self.queues is not None:
            self.queues.stop()
        else:
            with contextlib.suppress(OSError):
                self._stopper.close()
        if self.thread is None:
            self.ended.set()

    def close_now(self) -> None:
        """Stop, and if the loop is not running (never started, or ended), close it all."""
        self.stop()
        if not self.running:
            self._finish()

    def abandon(self, bound: float) -> None:
        """The loop outlived the bound: log it, free its client; its rings stay."""
        log.error(
            "%s: its loop did not stop within %g s (blocked outside the rings?); "
            "left running, its rings stay mapped until it ends",
            self.names,
            bound,
        )
        self._close_hangup()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.connection.close()
        except Exception:
            log.exception("%s: internal error closing the device", self.names)
        self._close_rings()
        self._close_hangup()
        self.finished.set()

    def _close_rings(self) -> None:
        for ring in self.rings.values():
            ring.close()
        for sock in (self._stopper, self._watched):
            with contextlib.suppress(OSError):
                sock.close()

    def _close_hangup(self) -> None:
        if self.hangup is not None:
            self.hangup.close()


class Closer:
    """Ends data paths in the close order; bounds their joins; at the daemon's end, waits
    for every loop still stopping (at most the bound) and logs the stuck ones."""

    def __init__(self, bound: float = JOIN_BOUND) -> None:
        self.bound = bound
        self.stopping: set[DataPath] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Watch stopping loops until cancelled (in the connector's nursery)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def close(self, path: DataPath) -> None:
        """Start the close order of `path`; never blocks."""
        path.close_now()
        if path.closed or path in self.stopping:
            return
        self.stopping.add(path)
        if self._nursery is not None:
            with contextlib.suppress(RuntimeError):  # the nursery is closed: drain() waits
                self._nursery.start_soon(self._join, path)

    async def _join(self, path: DataPath) -> None:
        with trio.move_on_after(self.bound):
            await path.ended.wait()
        self._joined(path)

    def _joined(self, path: DataPath) -> None:
        if path not in self.stopping:
            return
        self.stopping.discard(path)
        if not path.ended.is_set():
            path.abandon(self.bound)

    async def drain(self) -> None:
        """Wait (shielded, at most the bound) for every stopping loop; abandon the rest."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.bound):
                for path in list(self.stopping):
                    await path.ended.wait()
            for path in list(self.stopping):
                self._joined(path)
