"""The deviceclass contract: what a plugin implements to become a kind of device.

A deviceclass is registered once per model. Setting a device's type calls
`create`, which builds the class's private per-device state (or refuses with a
`VbusError`); linking the device into a bus calls `attach` for the new
interface. `destroy` and `detach` are the drop steps and cannot fail, as in
configfs. Attributes live in two tables, one per attribute owner:
`attributes` (of the device; show and store receive the device state) and
`interface_attributes` (of each interface; they receive the interface state).
No attribute may take a name the trees reserve (`DEVICE_ENTRIES`,
`INTERFACE_ENTRIES`).

The data path: a class declares its queues (`queues`, a tuple of `QueueSpec`);
the framework (vbusfs.connector) validates and attaches each queue the client
sends, and once every declared queue exists runs `DeviceConnection.serve` in a
thread of its own (see docs/deviceclass-guide.md). A class that declares no
queue keeps the legacy contract: `attach_queue` receives the raw fds and
`async run()` moves data on the daemon's trio loop (the built-in venet classes).
This module only declares: it imports no ring and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ._attributes import AttributeTable
from ._errors import InvalidValue, NotPermitted

QueueDirection = Literal["to_south", "to_north"]
#: the largest ring a client may make (descriptors), as the ring binding allows
MAX_QUEUE_COUNT = 65536


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue a deviceclass declares: its index, direction and size limits.

    `direction` is "to_south" (client -> device: the client sends, e.g. requests)
    or "to_north" (device -> client: the device writes into buffers the client
    posted, e.g. completions). A client's ring for this queue must have between
    `min_count` and `max_count` descriptors, each with a buffer (slot) of
    `min_slot_size` to `max_slot_size` bytes; else attaching it fails with EINVAL.
    `name` is for messages and logs ("requests", "completions").
    """

    index: int
    direction: QueueDirection
    name: str = ""
    min_count: int = 1
    max_count: int = 4096
    min_slot_size: int = 1
    max_slot_size: int = 1 << 20

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"queue index must be an int >= 0, not {self.index!r}")
        if self.direction not in ("to_south", "to_north"):
            raise ValueError(f"direction must be 'to_south' or 'to_north', not {self.direction!r}")
        if not 1 <= self.min_count <= self.max_count <= MAX_QUEUE_COUNT:
            raise ValueError(f"need 1 <= min_count <= max_count <= {MAX_QUEUE_COUNT}")
        if not 1 <= self.min_slot_size <= self.max_slot_size:
            raise ValueError("need 1 <= min_slot_size <= max_slot_size")

    @property
    def label(self) -> str:
        """How messages name the queue: `queue 0 (requests)`."""
        return f"queue {self.index} ({self.name})" if self.name else f"queue {self.index}"

    def check(self, *, direction: str | None, count: int, slot_size: int) -> None:
        """Refuse (InvalidValue, naming the queue) a client's ring outside this spec.

        `direction` None: the client did not say (it is then taken from the spec).
        """
        if direction is not None and direction != self.direction:
            raise InvalidValue(f"{self.label} carries data {self.direction}, not {direction}")
        if not self.min_count <= count <= self.max_count:
            raise InvalidValue(
                f"{self.label} takes {self.min_count} to {self.max_count} descriptors, not {count}"
            )
        if not self.min_slot_size <= slot_size <= self.max_slot_size:
            raise InvalidValue(
                f"{self.label} takes buffers of {self.min_slot_size} to "
                f"{self.max_slot_size} bytes, not {slot_size}"
            )


def check_queue_specs(specs: Sequence[QueueSpec]) -> None:
    """ValueError unless every index is declared once."""
    seen: set[int] = set()
    for spec in specs:
        if not isinstance(spec, QueueSpec):
            raise ValueError(f"queues holds {spec!r}, not a QueueSpec")
        if spec.index in seen:
            raise ValueError(f"queue {spec.index} is declared twice")
        seen.add(spec.index)


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """What a deviceclass learns about an interface being attached."""

    bus: str
    id: int
    name: str


#: where a deviceclass's loop may run (`DeviceClass.isolation`)
ISOLATIONS = ("thread", "process")


class DeviceConnection:
    """One client's open of one interface: device calls, queues, the data mover.

    Made by `DeviceClass.open`; the connector calls `close` exactly once, when
    the client closes it, the client goes away, its process leaves the bus, the
    interface is dropped or the daemon stops, and always after `serve` (if it ran)
    has returned. `call` and `stats` run on the daemon's loop and must not block.
    """

    #: set by the connector at open: hands the client a device event (`send_event`)
    event_sink: Callable[[str, dict[str, Any]], None] | None = None
    #: set by the connector at open: marks an attribute of this connection's device or
    #: interface changed (`notify`)
    notice_sink: Callable[[str], None] | None = None

    def send_event(self, kind: str, **data: Any) -> bool:
        """Tell this connection's client `kind` with `data` (JSON values): a `device`
        event (behaviour §7.1). Callable from any thread: the daemon's loop (`call`, an
        attribute's store, a legacy `run`), a `serve` thread, or a worker process
        (`isolation = "process"`). Never blocks; the events of one thread keep their
        order. TypeError for data JSON cannot hold. False when no connector listens (the
        connection was made outside one)."""
        if self.event_sink is None:
            return False
        self.event_sink(kind, data)
        return True

    def notify(self, attribute: str) -> bool:
        """Say that `attribute` of the device or interface this connection opened changed
        without a store: `DeviceClass.notify` for the connection's own owner, which also
        works where no deviceclass is at hand (a worker process). Callable from any
        thread; never blocks. ValueError if neither of the class's attribute tables
        declares `attribute`; False when no connector listens."""
        if self.notice_sink is None:
            return False
        self.notice_sink(attribute)
        return True

    def call(self, function: int, data: bytes) -> bytes:
        """A device call: function number and bytes in, bytes out (VbusError on failure)."""
        raise InvalidValue(f"function {function} is not supported")

    def attach_queue(self, index: int, fds: Sequence[int]) -> None:
        """Legacy (classes that declare no `queues`): take the ring, data segment and
        wake-up fds the client made for queue `index`.

        The fds stay the caller's: keep duplicates if they must outlive the call.
        A class that declares `queues` never sees this: the framework attaches them.
        """
        raise InvalidValue(f"this device has no queue {index}")

    def serve(self, queues: Any) -> None:
        """The data loop of a class that declares `queues`, run in a thread of its own.

        Called once every declared queue is attached; `queues` is a
        `vbusfs.device.Queues` (index -> blocking `vbusfs.ioq.Ioq`, attached
        south-side). Waits on those rings release the GIL. Return, or let
        `IoqClosed` out, when the framework stops the loop (every wait on the rings
        then ends with `IoqClosed`); any other exception fails the device for its
        client (its waits end, its next call fails with EIO, it hears a `fault`
        event). The default waits until stopped, for classes whose queues a loop
        does not need.
        """
        queues.wait_stopped()

    def worker_recipe(self) -> Any:
        """Classes with `isolation = "process"`: how a worker process rebuilds this
        connection's data path, a `vbusfs.device.WorkerRecipe` (an importable factory,
        its plain arguments, file descriptors to pass). Called once, at open, on the
        daemon's loop; the worker's connection then answers `serve`, `call` and `stats`,
        and this one only `close`."""
        raise NotImplementedError(f"{type(self).__name__} gives no worker_recipe")

    async def run(self) -> None:
        """Legacy (classes that declare no `queues`): move data until cancelled, on the
        daemon's trio loop, started at open. New classes declare queues and `serve`."""

    def stats(self) -> dict[str, int]:
        """Counters a client may read (frames moved, dropped, ...)."""
        return {}

    def close(self) -> None:
        """Release everything the connection holds. Must not fail."""


class DeviceClass:
    """Base class of every deviceclass.

    Subclasses set `name`, `interface_type` and the attribute tables, and
    override the steps they need. `multi_bus` classes may sit on several
    buses at once (their interfaces are named `<bus>.<id>`); the others are
    refused a second link with EBUSY.
    """

    name: ClassVar[str] = ""
    interface_type: ClassVar[str] = ""
    multi_bus: ClassVar[bool] = False
    attributes: ClassVar[AttributeTable] = ()
    interface_attributes: ClassVar[AttributeTable] = ()
    #: the queues a client attaches to an open interface; empty: the legacy contract
    #: (`DeviceConnection.attach_queue` and `run`)
    queues: ClassVar[tuple[QueueSpec, ...]] = ()
    #: where a declared-queues class's `serve` runs: "thread" (a thread of the daemon) or
    #: "process" (a worker process per open interface, rebuilt from the connection's
    #: `worker_recipe()`)
    isolation: ClassVar[str] = "thread"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.isolation not in ISOLATIONS:
            raise ValueError(f"{cls.__qualname__}.isolation must be 'thread' or 'process'")
        # a bad declaration fails where the class is defined (its import), not at an open
        if not isinstance(cls.queues, tuple):
            raise ValueError(f"{cls.__qualname__}.queues must be a tuple of QueueSpec")
        check_queue_specs(cls.queues)

    def create(self, device_name: str) -> Any:
        """Build the per-device state; raise a VbusError to refuse the type."""
        return None

    def destroy(self, state: Any) -> None:
        """Release the per-device state. Must not fail."""

    def attach(self, state: Any, interface: InterfaceInfo) -> Any:
        """Build the per-interface state; raise a VbusError to refuse the link."""
        return None

    def detach(self, state: Any, interface_state: Any) -> None:
        """Release the per-interface state. Must not fail."""

    #: interface versions a client may open; empty: devices of this class cannot be opened
    versions: ClassVar[frozenset[int]] = frozenset()

    def open(self, state: Any, interface_state: Any, version: int) -> DeviceConnection:
        """Open the device for one client; raise a VbusError (EBUSY, ...) to refuse."""
        raise NotPermitted(f"devices of class {self.name} cannot be opened")

    def notify(self, state: Any, attribute: str) -> None:
        """Say that `attribute` of the device or interface whose state is `state` changed
        without a store (a counter, a link state, `ifname`): the `sysfs_notify` of vbusfs.
        Processes polling its file wake (behaviour §4). Callable from any thread (a
        `serve` loop) and never blocks; notices of an owner removed meanwhile, or of a
        class no model has loaded, are dropped. ValueError if neither of this class's
        attribute tables declares `attribute`."""
        if not any(a.name == attribute for a in (*self.attributes, *self.interface_attributes)):
            raise ValueError(f"deviceclass {self.name} declares no attribute {attribute!r}")
        for sink in tuple(vars(self).get("_notice_sinks", ())):
            sink(state, attribute)

    def __repr__(self) -> str:
        return f"<deviceclass {self.name}>"


def bind_notices(deviceclass: DeviceClass, sink: Callable[[Any, str], None], bound: bool) -> None:
    """Let (or stop letting) `deviceclass.notify` reach a model that loaded it."""
    sinks: list[Callable[[Any, str], None]] = vars(deviceclass).setdefault("_notice_sinks", [])
    if bound:
        sinks.append(sink)
    elif sink in sinks:
        sinks.remove(sink)
