"""The conformance machine's data-path rules, for classes that declare queues.

A client opens an interface of the class on the machine's first bus, attaches
the declared queues (all of them, in a drawn order, or only some), lets the
framework start the loop, sends requests and checks the responses (the
author's `requests` strategy and `check_response`; by default it sends
nothing), tries queues the framework must refuse, reads `stats()`, and ends
each open in one of the daemon's endings (close, death, revoke, unlink,
unmount). Every ending is checked (`DeviceHarness.end` in process; what the
client sees through a mount); after every step, no loop may have failed or
ended unasked.

`DataPathRules` is a mixin of `DeviceClassConformance` (its rules and
invariant are collected from the machine's class); the module holds no state.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from vbusfs.client import RequestResponseClient
from vbusfs.connector import ConnectorError
from vbusfs.connector._datapath import JOIN_BOUND
from vbusfs.device import REQUESTS, RESPONSES, QueueSpec
from vbusfs.ioq import Ioq, IoqClosed

from ._harness import ENDINGS, ring_shape
from ._inprocess import HarnessInterface
from ._worlds import TIMEOUT

if TYPE_CHECKING:
    from ._worlds import ModelWorld, MountWorld, Owner


@dataclass(eq=False)
class Opened:
    """One interface the machine's client has open."""

    device: str
    bus: str
    interface_id: int
    interface: HarnessInterface
    specs: dict[int, QueueSpec]
    #: the request/response driver, once both its queues are attached
    rr: RequestResponseClient | None = None
    #: rings attached one by one (the other classes, or a partial attach)
    rings: dict[int, Ioq] = field(default_factory=dict)

    @property
    def owner(self) -> Owner:
        return (self.bus, self.interface_id)

    @property
    def attached(self) -> bool:
        """Every declared queue is attached (the loop runs)."""
        return set(self.interface.rings) == set(self.specs)

    @property
    def label(self) -> str:
        return f"device {self.device} (interface {self.bus}/{self.interface_id})"

    def release(self) -> None:
        """Close the client's rings (the interface is the world's to end)."""
        rings: list[Ioq] = list(self.rings.values())
        if self.rr is not None:
            rings += [self.rr.requests, self.rr.responses]
        for ring in rings:
            ring.close()


def _request_response(specs: dict[int, QueueSpec]) -> bool:
    return (
        set(specs) == {REQUESTS, RESPONSES}
        and specs[REQUESTS].direction == "to_south"
        and specs[RESPONSES].direction == "to_north"
    )


class DataPathRules:
    """The data-path half of `DeviceClassConformance` (see the module)."""

    #: valid requests for a request/response class (None: the machine sends none)
    requests: ClassVar[st.SearchStrategy[bytes] | None] = None
    #: the most requests sent in one step
    max_requests: ClassVar[int] = 8
    #: the client's rings: descriptors and slot size, brought within each QueueSpec
    ring_count: ClassVar[int] = 8
    ring_slot_size: ClassVar[int] = 4096
    #: seconds a stopped loop may take (the framework's bound)
    join_bound: ClassVar[float] = JOIN_BOUND
    #: the endings the machine uses (a mount cannot be unmounted by the machine)
    endings: ClassVar[tuple[str, ...]] = ENDINGS

    # what the machine (`DeviceClassConformance`) provides
    world: ModelWorld | MountWorld
    opens: list[Opened]
    expected: dict[tuple[Any, ...], str]
    client_bus: str

    def _interfaces(self) -> list[tuple[str, int, str]]:
        raise NotImplementedError

    def picture(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _after_unmount(self) -> None:
        raise NotImplementedError

    # -- the author's hooks --------------------------------------------------------

    def request_strategy(self, opened: Opened) -> st.SearchStrategy[bytes] | None:
        """Valid requests for `opened` now (default: `requests`); None sends none."""
        return self.requests

    def check_response(self, opened: Opened, request: bytes, response: bytes) -> None:
        """Assert `response` is right for `request` (they come in request order)."""

    def drive(self, opened: Opened, data: st.DataObject) -> None:
        """Move data on `opened`'s queues yourself (`opened.interface.rings`), for a class
        that is not request/response; runs once every queue is attached."""

    def ring_shape(self, spec: QueueSpec) -> tuple[int, int]:
        """The (count, slot size) of the client's ring for `spec`."""
        return ring_shape(spec, self.ring_count, self.ring_slot_size)

    # -- opening ---------------------------------------------------------------------

    def _specs(self) -> dict[int, QueueSpec]:
        return {spec.index: spec for spec in self.world.instance.queues}

    @precondition(lambda self: self.world.data_path)
    @rule(data=st.data())
    def open_interface(self, data: st.DataObject) -> None:
        candidates = [c for c in self._interfaces() if c[0] == self.client_bus]
        if candidates:
            self._open(data, *data.draw(st.sampled_from(sorted(candidates))))

    def _open(self, data: st.DataObject, bus: str, interface_id: int, device: str) -> None:
        """Open, attach (some of) the queues, move data, and maybe end it at once."""
        version = data.draw(st.sampled_from(sorted(self.world.instance.versions)))
        before = self.picture()
        try:
            interface = self.world.open(bus, interface_id, version)
        except ConnectorError as exc:  # the class may refuse (EBUSY: open already)
            assert exc.errno, f"an open was refused with no errno: {exc!r}"
            assert self.picture() == before, f"a refused open ({exc!r}) changed something"
            return
        specs = self._specs()
        opened = Opened(device, bus, interface_id, interface, specs)
        self.opens.append(opened)
        order = data.draw(st.permutations(sorted(specs)), label="attach order")
        count = data.draw(st.one_of(st.just(len(order)), st.integers(0, len(order))))
        if count == len(order) and _request_response(specs):
            (n, slot), (_, response_slot) = self.ring_shape(specs[0]), self.ring_shape(specs[1])
            opened.rr = RequestResponseClient(
                interface, count=n, slot_size=slot, response_slot_size=response_slot
            )
        else:
            for index in order[:count]:
                n, slot = self.ring_shape(specs[index])
                ring = Ioq.create(n, slot, direction=specs[index].direction)
                opened.rings[index] = ring
                interface.attach_queue(index, ring)
        if opened.attached:
            self.world.wait_serving(interface)
            if opened.rr is not None:
                self._send_requests(opened, data)
            else:
                self.drive(opened, data)
            if data.draw(st.booleans(), label="a wrong attach"):
                self._attach_wrong(opened, data)
        self._read_stats(opened)
        # a whole life in one step now and then; else it stays open for other steps
        endings = self._endings()
        end_now: bool = bool(endings) and data.draw(st.booleans(), label="end it now")
        if end_now:
            self._end(opened, data.draw(st.sampled_from(endings), label="ending"))

    @precondition(lambda self: any(o.attached for o in self.opens))
    @rule(data=st.data())
    def attach_a_wrong_queue(self, data: st.DataObject) -> None:
        """The framework refuses an undeclared index (EINVAL) and a second attach (EBUSY);
        the loop goes on."""
        self._attach_wrong(data.draw(st.sampled_from([o for o in self.opens if o.attached])), data)

    def _attach_wrong(self, opened: Opened, data: st.DataObject) -> None:
        undeclared = max(opened.specs) + data.draw(st.integers(1, 3))
        index = data.draw(st.sampled_from([undeclared, *sorted(opened.specs)]))
        spec = opened.specs.get(index)
        direction = spec.direction if spec is not None else "to_south"
        n, slot = self.ring_shape(spec) if spec is not None else (8, 64)
        ring = Ioq.create(n, slot, direction=direction)
        try:
            opened.interface.attach_queue(index, ring)
        except ConnectorError as exc:
            want = errno.EINVAL if spec is None else errno.EBUSY
            assert exc.errno == want, f"attaching queue {index} again failed with {exc!r}"
        else:
            raise AssertionError(f"{opened.label}: queue {index} was attached twice or undeclared")
        finally:
            ring.close()
        self.world.check_serving(opened.interface)

    # -- moving data ---------------------------------------------------------------------

    @precondition(lambda self: any(o.rr is not None for o in self.opens))
    @rule(data=st.data())
    def send_requests(self, data: st.DataObject) -> None:
        opened = data.draw(st.sampled_from([o for o in self.opens if o.rr is not None]))
        self._send_requests(opened, data)

    def _send_requests(self, opened: Opened, data: st.DataObject) -> None:
        rr = opened.rr
        assert rr is not None
        strategy = self.request_strategy(opened)
        if strategy is None:
            return
        size = min(self.max_requests, rr.window)
        batch = data.draw(st.lists(strategy, min_size=1, max_size=size), label="requests")
        try:
            for request in batch:
                rr.submit(request, TIMEOUT)
            responses = [self._complete(opened, rr) for _ in batch]
        except (IoqClosed, TimeoutError) as exc:
            self.world.check_serving(opened.interface)  # the loop's failure, if it failed
            raise AssertionError(f"{opened.label}: no response to {batch!r}: {exc!r}") from exc
        for request, response in zip(batch, responses, strict=True):
            self.check_response(opened, request, response)
        self.world.check_serving(opened.interface)

    def _complete(self, opened: Opened, rr: RequestResponseClient) -> bytes:
        """The next response, looking at the loop now and then: one that failed or
        ended says so at once, not after the timeout."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                return rr.complete(0.05)
            except TimeoutError:
                self.world.check_serving(opened.interface)
                if time.monotonic() > deadline:
                    raise

    @precondition(lambda self: any(o.attached for o in self.opens))
    @rule(data=st.data())
    def drive_queues(self, data: st.DataObject) -> None:
        opened = data.draw(st.sampled_from([o for o in self.opens if o.attached]))
        self.drive(opened, data)
        self.world.check_serving(opened.interface)

    @precondition(lambda self: bool(self.opens))
    @rule(data=st.data())
    def read_stats(self, data: st.DataObject) -> None:
        self._read_stats(data.draw(st.sampled_from(self.opens)))

    def _read_stats(self, opened: Opened) -> None:
        stats = opened.interface.stats()
        assert isinstance(stats, dict), stats
        assert all(isinstance(k, str) and type(v) is int for k, v in stats.items()), stats
        self.world.check_serving(opened.interface)

    # -- ending ---------------------------------------------------------------------------

    def _endings(self) -> list[str]:
        return [e for e in self.endings if e in self.world.endings]

    @precondition(lambda self: bool(self.opens) and bool(self._endings()))
    @rule(data=st.data())
    def end_open(self, data: st.DataObject) -> None:
        opened = data.draw(st.sampled_from(self.opens))
        self._end(opened, data.draw(st.sampled_from(self._endings()), label="ending"))

    def _end(self, opened: Opened, ending: str) -> None:
        ended = self.world.end(opened.interface, ending)
        for interface in ended:
            for each in [o for o in self.opens if o.interface is interface]:
                each.release()
                self.opens.remove(each)
        if ending == "unlink":
            for key in [k for k in self.expected if k[:2] == opened.owner]:
                del self.expected[key]
        if ending == "unmount":
            self._after_unmount()

    def _end_every_open(self, ending: str = "close") -> None:
        while self.opens:
            self._end(self.opens[0], ending)

    def _release_quietly(self, opens: Sequence[Opened]) -> None:
        for opened in opens:
            try:
                if opened.interface.ending is None:
                    opened.interface.close()
            except Exception:  # the machine's end: a failure here would hide the one that matters
                pass
            finally:
                opened.release()

    @invariant()
    def no_loop_failed(self) -> None:
        for opened in getattr(self, "opens", ()):
            self.world.check_serving(opened.interface)
