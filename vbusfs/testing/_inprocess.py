"""The daemon's connector in this process: what the harness and the conformance machine run.

`InProcessDaemon(vbus)` serves the model with `vbusfs.connector.Connector` (the
daemon's own) on a trio loop in a thread of its own, on a Unix socket in a
temporary directory; `call(fn, ...)` runs `fn` on that thread, where the
connector and (in a real daemon) the FUSE handlers touch the model. `stop()`
ends it as the daemon does once FUSE stops: the connector's sessions end, their
opens close, and the closer waits (at most its bound) for their loops.

`ProbedVbus` gives each opened connection a `ConnectionProbe`; `HarnessClient`
is a `vbusfs.client.Client` whose opens (`HarnessInterface`) keep the rings they
attached. `check_client_waits` and `expect_errno` are the client-side checks the
harness and the mount-level machine share.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import trio

from vbusfs._unixaddr import unix_address
from vbusfs.classes import find_class
from vbusfs.client import Client, OpenInterface
from vbusfs.client._common import hangup_of
from vbusfs.connector import RECEIVE, ClientConnection, Connector, ConnectorError, Limits, received
from vbusfs.device import DeviceConnection
from vbusfs.ioq import AsyncIoq, Ioq, IoqClosed, IoqEmpty, IoqFull
from vbusfs.model import Vbus

from ._probe import ConnectionProbe, ProbedConnection

#: seconds a client ring wait may take to end with IoqClosed once the device is gone
WAIT_ENDS = 5.0

T = TypeVar("T")


class ProbedVbus(Vbus):
    """A `Vbus` whose opened connections each get a `ConnectionProbe` (in `probes`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.probes: list[ConnectionProbe] = []

    def open_interface(self, bus_name: str, interface_id: int, version: int) -> DeviceConnection:
        connection = super().open_interface(bus_name, interface_id, version)
        interface = self.bus(bus_name).interfaces[interface_id]
        probe = ConnectionProbe(connection, interface.device.name, bus_name, interface_id)
        self.probes.append(probe)
        return ProbedConnection(connection, probe)


class HarnessInterface(OpenInterface):
    """An open interface of the harness's client: a `vbusfs.client.OpenInterface` that
    also keeps the rings it attached (`rings`) and its connection's `probe`."""

    probe: ConnectionProbe

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rings: dict[int, Ioq | AsyncIoq] = {}
        self.ending: str | None = None  # set once the harness has ended it

    def attach_queue(self, index: int, ioq: Ioq | AsyncIoq) -> None:
        super().attach_queue(index, ioq)
        self.rings[index] = ioq


class HarnessClient(Client):
    """A `vbusfs.client.Client` whose `open` returns a `HarnessInterface`."""

    def open(self, interface_id: int, version: int) -> HarnessInterface:
        reply = self._exchange("open", id=interface_id, version=version)
        handle = reply.result()["handle"]
        return HarnessInterface(self, handle, interface_id, hangup_of(reply))


def connect_client(path: str, timeout: float) -> HarnessClient:
    """A client of the connector listening at `path`, as `vbusfs.client.connect` makes
    one (which finds `path` from a mount point)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        with unix_address(path) as address:
            sock.connect(address)
        protocol = ClientConnection()
        protocol.receive_welcome(received(sock.recvmsg(*RECEIVE)))
    except BaseException:
        sock.close()
        raise
    return HarnessClient(sock, protocol, timeout=timeout)


class InProcessDaemon:
    """The daemon's connector over `vbus`, served by trio in a thread of this process."""

    def __init__(self, vbus: Vbus, bound: float) -> None:
        self.vbus = vbus
        self.directory = tempfile.mkdtemp(prefix="vbusfs-harness-")
        self.path = os.path.join(self.directory, "connector")
        # every loop in a thread, `isolation = "process"` too: the probes watch it here
        self.connector = Connector(vbus, self.path, find_class, Limits(), process_workers=False)
        self.connector.closer.bound = bound
        self.token: trio.lowlevel.TrioToken | None = None
        self.failure: BaseException | None = None
        self._ready = threading.Event()
        self._stopping: trio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="vbusfs harness daemon", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._ready.wait()
        if self.failure is not None:
            self.thread.join()
            shutil.rmtree(self.directory, ignore_errors=True)
            raise RuntimeError("the harness's connector did not start") from self.failure

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by start() or stop()
            self.failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stopping = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.connector.serve)
            self._ready.set()
            await self._stopping.wait()
            # what the daemon does once FUSE stops: the connector's sessions end,
            # their opens close, the closer waits (bounded) for their loops
            nursery.cancel_scope.cancel()

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and self.token is not None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the daemon's thread (where the connector and FUSE touch the model)."""
        if not self.running:
            return fn(*args)
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def stop(self, timeout: float) -> None:
        if self.running and self._stopping is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stopping.set, trio_token=self.token)
        self.thread.join(timeout)
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.thread.is_alive():
            raise AssertionError(f"the harness's daemon did not stop within {timeout} s")
        if self.failure is not None:
            raise AssertionError("the harness's connector failed") from self.failure


def expect_errno(code: int, call: Callable[[], object], what: str) -> None:
    """`call()` must fail with ConnectorError `code`."""
    try:
        call()
    except ConnectorError as exc:
        assert exc.errno == code, f"{what} failed with {errno.errorcode.get(exc.errno or 0)}: {exc}"
    else:
        raise AssertionError(f"{what} succeeded: it must fail with {errno.errorcode[code]}")


def _drain(ring: Ioq) -> None:
    with contextlib.suppress(IoqEmpty, IoqClosed):
        while True:
            ring.receive_batch_nowait(ring.count)


def _fill(ring: Ioq) -> None:
    with contextlib.suppress(IoqFull, IoqClosed):
        while True:
            ring.send_nowait(b"")


def check_client_waits(
    rings: Mapping[int, Ioq | AsyncIoq],
    label: str,
    after: str,
    hangup: socket.socket | None = None,
) -> None:
    """The daemon lets go of the interface (it closes its end of `hangup`, the last step
    of the close order), and every wait on the client's rings then ends with IoqClosed: a
    wait that would block (on an emptied receive ring, a filled send ring) must end so,
    not time out."""
    if hangup is not None and hangup.fileno() >= 0:
        poller = select.poll()
        poller.register(hangup, select.POLLRDHUP | select.POLLHUP)
        if not poller.poll(WAIT_ENDS * 1000):
            raise AssertionError(
                f"{label}: the daemon did not let go of the interface (its hang-up socket "
                f"stayed open) after {after}"
            )
    for index, ring in sorted(rings.items()):
        if ring.closed or not isinstance(ring, Ioq):
            continue
        try:
            if ring.direction == "to_north":
                _drain(ring)
                ring.wait_receivable(WAIT_ENDS)
            else:
                _fill(ring)
                ring.wait_sendable(WAIT_ENDS)
        except IoqClosed:
            continue
        except TimeoutError:
            raise AssertionError(
                f"{label}: a client wait on queue {index} did not end with IoqClosed after {after}"
            ) from None
        raise AssertionError(f"{label}: queue {index} could still be used after {after}")
