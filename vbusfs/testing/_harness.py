"""An in-process harness for a deviceclass's data path: the daemon's connector, no FUSE.

`DeviceHarness(MyClass, attributes={...})` builds an in-process model with the
class loaded, a bus `B` with device `D` (the attributes stored) linked into it,
makes this process a member of `B`, and runs the daemon's own connector
(`vbusfs.connector.Connector`) on a trio loop in a thread of this process. So an
open, a queue attach (the framework's validation), the device's loop thread and
every close order are the daemon's own code; only FUSE and the daemon process
are missing. Starting one takes a few milliseconds.

The test gets the client side: `open()` returns a `HarnessInterface` (a
`vbusfs.client.OpenInterface`: `call`, `attach_queue`, `stats`, `close`) on a
client of its own, `request_response()` a `vbusfs.client.RequestResponseClient`.
Each open's `probe` (`ConnectionProbe`) watches the device's connection: the
loop thread, what `serve` raised, each `close()`.

`end(interface, ending)` ends an open the daemon's way, one of `ENDINGS`:

- "close": the client closes the handle;
- "death": the client's connection socket closes (a killed process);
- "revoke": this process leaves the bus (every open of the harness ends);
- "unlink": the interface is unlinked (the client hears `drop`);
- "unmount": the daemon stops (every open ends, then the model is cleared);

and asserts the framework's guarantees for each open it ended: the loop ended
within the join bound, `connection.close()` was called once, after the loop had
ended and before the rings were closed, the device-side rings are closed, the
daemon let go of the client (its hang-up socket), the client's waits on its
rings end with `IoqClosed`, and the daemon logged no
internal error (a `close()` that raised, say). `check_failed(interface)` asserts
what a loop that raised must bring: the `fault` event, EIO on the next call, the
same ending. Failures are AssertionErrors naming the device and the ending.

Everything the harness starts, it stops: `close()` (or the `with` block) unmounts
and closes every client. Model changes made while it runs go through
`in_daemon(fn, ...)`, on the daemon's thread, as FUSE handlers make them.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from vbusfs.client import RequestResponseClient
from vbusfs.connector._datapath import JOIN_BOUND
from vbusfs.daemon import ProcFs
from vbusfs.device import DeviceClass, QueueSpec
from vbusfs.ioq import IoqClosed
from vbusfs.model import Inferred

from ._inprocess import (
    HarnessClient,
    HarnessInterface,
    InProcessDaemon,
    ProbedVbus,
    check_client_waits,
    connect_client,
    expect_errno,
)
from ._probe import ConnectionProbe, DaemonLog

__all__ = [
    "ENDINGS",
    "ConnectionProbe",
    "DeviceHarness",
    "HarnessClient",
    "HarnessInterface",
    "ProbedVbus",
    "ring_shape",
]

#: how an open can end, as the daemon ends it
ENDINGS = ("close", "death", "revoke", "unlink", "unmount")
#: the endings that end every open of the harness, not only the one named
ENDS_ALL = frozenset({"revoke", "unmount"})
#: seconds the harness allows the framework beyond the join bound (a loaded machine)
MARGIN = 5.0

T = TypeVar("T")


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def ring_shape(spec: QueueSpec, count: int = 8, slot_size: int = 4096) -> tuple[int, int]:
    """(count, slot size) near the wanted ones that `spec` accepts."""
    return (
        _clamp(count, spec.min_count, spec.max_count),
        _clamp(slot_size, spec.min_slot_size, spec.max_slot_size),
    )


class DeviceHarness:
    """One deviceclass's data path, run by the daemon's connector in this process.

    `deviceclass`: a `DeviceClass` subclass (built with no arguments) or instance.
    `attributes` / `interface_attributes`: values stored, in order, on device `device`
    and on its interface once linked into bus `bus`. `join_bound`: seconds the
    framework waits for a stopped loop (the daemon's 2 s by default).
    `vbus`: a `ProbedVbus` to serve instead of a new one (then `setup=False` leaves
    the topology to the caller); the harness adds a membership backend if it has none.
    """

    def __init__(
        self,
        deviceclass: type[DeviceClass] | DeviceClass,
        *,
        attributes: Mapping[str, str] | None = None,
        interface_attributes: Mapping[str, str] | None = None,
        bus: str = "B",
        device: str = "D",
        timeout: float = 5.0,
        join_bound: float = JOIN_BOUND,
        vbus: ProbedVbus | None = None,
        setup: bool = True,
    ) -> None:
        self.instance = deviceclass() if isinstance(deviceclass, type) else deviceclass
        self.attributes = dict(attributes or {})
        self.interface_attributes = dict(interface_attributes or {})
        self.bus = bus
        self.device = device
        self.timeout = timeout
        self.join_bound = join_bound
        self.vbus = vbus if vbus is not None else ProbedVbus()
        self.setup = setup
        self.interfaces: list[HarnessInterface] = []
        self.clients: list[HarnessClient] = []
        self.errors = DaemonLog()
        self._daemon: InProcessDaemon | None = None
        self._switch_interval = sys.getswitchinterval()
        self.unmounted = False

    # -- start and stop ------------------------------------------------------

    def start(self) -> DeviceHarness:
        vbus = self.vbus
        if vbus.membership is None:
            vbus.membership = Inferred(ProcFs())
        if self.instance.name not in vbus.classes:
            vbus.load_class(self.instance)
        if self.setup:
            vbus.create_bus(self.bus, owner=os.getuid(), group=os.getgid())
            vbus.create_device(self.device)
            vbus.set_device_type(self.device, self.instance.name)
            for name, value in self.attributes.items():
                vbus.store_attribute(vbus.device(self.device), name, value)
            self._link()
        if self.bus in vbus.buses:
            vbus.set_membership(os.getpid(), self.bus)
        self.errors.start()
        # the daemon lowers the interpreter's switch interval once loops run: this
        # process's, here, given back at close()
        self._switch_interval = sys.getswitchinterval()
        self._daemon = InProcessDaemon(vbus, self.join_bound)
        try:
            self._daemon.start()
        except BaseException:
            self.errors.stop()
            raise
        return self

    def _link(self) -> int:
        interface = self.vbus.link(self.bus, self.device, self.device)
        for name, value in self.interface_attributes.items():
            self.vbus.store_attribute(interface, name, value)
        return interface.id

    def link(self) -> int:
        """Link the device into the bus again (after an "unlink"); the new interface id."""
        return self.in_daemon(self._link)

    def close(self, *, check: bool = True) -> None:
        """Unmount (if not done) and close every client; with `check`, the opens still
        live are checked as ended by the unmount, and the daemon must have logged no
        internal error."""
        live = self.live()
        begun = time.monotonic()
        try:
            if not self.unmounted:
                for interface in live:
                    interface.ending = "unmount"
                self._unmount()
                if check:
                    for interface in live:
                        self._check_ended(interface, "unmount", begun)
        finally:
            for client in self.clients:
                client.close()
            for interface in self.interfaces:
                interface.hangup.close()
            self.errors.stop()
            sys.setswitchinterval(self._switch_interval)
        if check:
            self.errors.check("the harness's end")

    def __enter__(self) -> DeviceHarness:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # a test that failed has its own error to report: nothing is checked over it
        self.close(check=exc_type is None)

    # -- the model, on the daemon's thread ---------------------------------------

    def in_daemon(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` run on the daemon's thread (the model is that thread's)."""
        assert self._daemon is not None, "start() the harness first"
        return self._daemon.call(fn, *args)

    def show(self, name: str) -> str:
        """Device attribute `name`, as it reads now."""
        return self.in_daemon(lambda: self.vbus.show_attribute(self.vbus.device(self.device), name))

    def store(self, name: str, value: str) -> None:
        """Store `value` in device attribute `name` (a VbusError if refused)."""
        self.in_daemon(
            lambda: self.vbus.store_attribute(self.vbus.device(self.device), name, value)
        )

    @property
    def interface_id(self) -> int:
        """The id of the device's interface on the bus now (LookupError if unlinked)."""

        def find() -> int:
            links = self.vbus.bus(self.bus).links
            if self.device not in links:
                raise LookupError(f"{self.device} is not linked into {self.bus}")
            return links[self.device].id

        return self.in_daemon(find)

    # -- the client side -----------------------------------------------------------

    def connect(self) -> HarnessClient:
        """A new client of the connector, as `vbusfs.client.connect` makes one."""
        assert self._daemon is not None and not self.unmounted, "the harness is not running"
        client = connect_client(self._daemon.path, self.timeout)
        self.clients.append(client)
        return client

    def open(self, interface_id: int | None = None, version: int | None = None) -> HarnessInterface:
        """Open an interface (default: the device's) at `version` (default: the class's
        highest) on a client of its own. A refusal raises ConnectorError with its errno."""
        if interface_id is None:
            interface_id = self.interface_id
        if version is None:
            version = max(self.instance.versions, default=0)
        client = self.connect()
        before = len(self.vbus.probes)
        try:
            interface = client.open(interface_id, version)
        except BaseException:
            client.close()
            self.clients.remove(client)
            raise
        interface.probe = self.vbus.probes[before]
        self.interfaces.append(interface)
        return interface

    def request_response(
        self, interface: HarnessInterface | None = None, **options: Any
    ) -> RequestResponseClient:
        """A `RequestResponseClient` on `interface` (default: a new open); `options` go to
        it, and count and slot sizes default to ones the class's queue specs accept."""
        interface = interface if interface is not None else self.open()
        specs = {spec.index: spec for spec in self.instance.queues}
        if 0 in specs and 1 in specs:
            count, slot = ring_shape(specs[0], options.get("count", 8))
            options.setdefault("count", count)
            options.setdefault("slot_size", slot)
            options.setdefault("response_slot_size", ring_shape(specs[1], count)[1])
        return RequestResponseClient(interface, **options)

    # -- endings ------------------------------------------------------------------

    def live(self) -> list[HarnessInterface]:
        """The interfaces opened and not ended yet."""
        return [i for i in self.interfaces if i.ending is None]

    def end(self, interface: HarnessInterface, ending: str) -> list[HarnessInterface]:
        """End `interface` (with "revoke" and "unmount": every live one) the daemon's way,
        and check the framework's guarantees for each; the interfaces it ended."""
        if ending not in ENDINGS:
            raise ValueError(f"ending must be one of {', '.join(ENDINGS)}, not {ending!r}")
        if interface.ending is not None:
            raise ValueError(f"this interface was already ended ({interface.ending})")
        ended = self.live() if ending in ENDS_ALL else [interface]
        if ending == "unlink":
            ended = [
                i
                for i in self.live()
                if (i.probe.bus, i.probe.interface_id)
                == (interface.probe.bus, interface.probe.interface_id)
            ]
        for each in ended:
            each.ending = ending
        begun = time.monotonic()
        getattr(self, f"_{ending}")(interface, ended)
        for each in ended:
            self._check_ended(each, ending, begun)
        self.errors.check(f"the {ending} of {interface.probe.label}")
        return ended

    def _close(self, interface: HarnessInterface, ended: list[HarnessInterface]) -> None:
        # the request OpenInterface.close() sends first; its hang-up socket stays open
        # meanwhile, as in a client whose other thread still waits on the rings
        interface.client.request("close", handle=interface.handle)

    def _death(self, interface: HarnessInterface, ended: list[HarnessInterface]) -> None:
        interface.client.close()

    def _revoke(self, interface: HarnessInterface, ended: list[HarnessInterface]) -> None:
        pid = os.getpid()
        self.in_daemon(self.vbus.set_membership, pid, "0")
        try:
            # a revoked client learns it at its next request (or the twice-a-second
            # recheck): ask each one now
            for each in ended:
                expect_errno(errno.EACCES, each.stats, f"a call after the revoke of {each}")
        finally:
            self.in_daemon(self.vbus.set_membership, pid, self.bus)

    def _unlink(self, interface: HarnessInterface, ended: list[HarnessInterface]) -> None:
        probe = interface.probe

        def unlink() -> None:
            bus = self.vbus.bus(probe.bus)
            link = bus.interfaces[probe.interface_id].link_name
            self.vbus.unlink(probe.bus, link)

        self.in_daemon(unlink)
        for each in ended:
            # events of the bus's other interfaces (an earlier link's add) may come first
            heard = []
            while True:
                event = each.client.wait_event(self.timeout)
                if event.interface_id != probe.interface_id:
                    heard.append(event)
                    continue
                break
            assert (event.kind, event.interface_id) == ("drop", probe.interface_id), (
                f"after the unlink of {probe.label} the client heard {event}, not its drop"
                f" (before it, of other interfaces: {heard})"
            )
            expect_errno(errno.ENODEV, each.stats, f"a call after the unlink of {probe.label}")

    def _unmount(
        self, interface: HarnessInterface | None = None, ended: Sequence[HarnessInterface] = ()
    ) -> None:
        self.unmounted = True
        daemon = self._daemon
        assert daemon is not None
        # the daemon's bound for its loops, and a margin for a loaded machine
        daemon.stop(self.join_bound + MARGIN)
        # as the daemon ends: the model releases everything it holds
        self.vbus.clear()

    # -- the guarantees -------------------------------------------------------------

    def _check_ended(self, interface: HarnessInterface, ending: str, begun: float) -> None:
        probe = interface.probe
        after = f"the {ending} of {probe.label}"
        if probe.started.is_set():
            probe.ended.wait(self.join_bound + MARGIN)
            # the framework's own verdict: it logs each loop it gave up waiting for; and
            # one that ended well past the bound overran it, logged or not yet
            abandoned = self.errors.abandoned_loop(probe)
            overran = (probe.ended_at or begun) - begun > 2 * self.join_bound + 0.1
            if abandoned is not None or overran or not probe.ended.is_set():
                raise AssertionError(
                    f"{probe.label}: its loop did not stop within {self.join_bound} s of "
                    f"{after} (once stopped, every wait on its rings raises IoqClosed: let it "
                    f"out, or return); the daemon logged: {abandoned}"
                )
        if not probe.closed.wait(MARGIN):
            raise AssertionError(f"{probe.label}: connection.close() was not called after {after}")
        probe.check_closed_in_order(after)
        check_client_waits(interface.rings, probe.label, after, interface.hangup)
        if ending == "close":
            interface.close()  # the rest of OpenInterface.close: nothing left to release
        elif ending in ("death", "unmount"):
            interface.hangup.close()

    def check_failed(self, interface: HarnessInterface) -> BaseException:
        """Assert what a loop that raised brings (behaviour §7.5): its client hears a
        `fault` event, its waits end with IoqClosed, its next call fails with EIO, and the
        close order ran; then close the handle. What the loop raised."""
        probe = interface.probe
        if not probe.ended.wait(self.timeout):
            raise AssertionError(f"{probe.label}: its loop has not ended")
        outcome = probe.outcome
        assert outcome is not None and not isinstance(outcome, IoqClosed), (
            f"{probe.label}: its loop did not fail ({outcome!r})"
        )
        event = interface.client.wait_event(self.timeout)
        assert event.kind == "fault" and event.interface_id == probe.interface_id, event
        assert "device loop failed" in event.message, event
        expect_errno(errno.EIO, interface.stats, f"a call after {probe.label}'s loop failed")
        interface.ending = "fault"
        if not probe.closed.wait(MARGIN):
            raise AssertionError(f"{probe.label}: connection.close() was not called")
        after = f"the failure of {probe.label}'s loop"
        probe.check_closed_in_order(after)
        check_client_waits(interface.rings, probe.label, after, interface.hangup)
        interface.close()
        return outcome
