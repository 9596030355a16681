"""vbusfs.device: the one module a deviceclass author imports.

A deviceclass is a `DeviceClass` subclass (name, interface type, versions,
attribute tables, `create`/`attach`/`open` steps) whose `open` returns a
`DeviceConnection` for one client. Its data path is declared, not hand-made:

- `DeviceClass.queues` lists the queues a client attaches (`QueueSpec`: index,
  direction, count and slot-size limits). The framework validates each ring the
  client sends (EINVAL for an undeclared index or a ring outside the spec, EBUSY
  for a second attach), attaches it south-side, and once every declared queue
  exists runs `DeviceConnection.serve(queues)` in a thread of its own, where waits
  on the rings release the GIL.
- `Queues` (what `serve` receives) maps index -> blocking `vbusfs.ioq.Ioq`, with
  `stopping`, `wait_stopped()` and `poller()` for loops that wait on several rings.
- One close order for every ending (client close, client death, revoke, unlink,
  unmount): stop (every wait on the rings ends with `IoqClosed`), join the loop
  (2 s at most; a loop still running is logged by name and abandoned), then
  `DeviceConnection.close()`, then the rings.
- A loop that raises fails the device for its client: its ring waits end
  (`IoqClosed`), its next call fails with EIO, and it hears a `fault` event.
- `DeviceClass.isolation = "process"` runs each open interface's loop in a worker
  process instead, rebuilt there from `DeviceConnection.worker_recipe()` (a
  `WorkerRecipe`: an importable factory, its plain arguments, fds to pass); the
  worker answers `serve`, `call` and `stats`; a worker that dies fails the device as a
  failing loop does, and one that outlives the join bound is killed.
- `RequestResponseConnection` + `request_response_queues` give the commonest loop:
  override `handle(request, response) -> length` (and `error_response`).

docs/deviceclass-guide.md walks through it all. Everything here is a re-export or
pure Python over the ring binding: it starts no thread and does no I/O at import.
"""

from vbusfs.ioq import (
    BlockCounts,
    BlockLayout,
    BlockServer,
    Ioq,
    IoqClosed,
    IoqEmpty,
    IoqError,
    IoqFault,
    IoqFull,
    Poller,
)
from vbusfs.model import (
    AccessDenied,
    AlreadyExists,
    Attribute,
    AttributeTable,
    Busy,
    DeviceClass,
    DeviceConnection,
    InterfaceInfo,
    InvalidValue,
    NoDevice,
    NoSpace,
    NotFound,
    NotPermitted,
    NotSupported,
    QueueDirection,
    QueueSpec,
    VbusError,
    attribute_mode,
    check_queue_specs,
)

from ._control import WorkerRecipe
from ._queues import DeviceNames, QueuePoller, Queues, slot_size
from ._reqresp import REQUESTS, RESPONSES, RequestResponseConnection, request_response_queues

__all__ = [
    "REQUESTS",
    "RESPONSES",
    "AccessDenied",
    "AlreadyExists",
    "Attribute",
    "AttributeTable",
    "BlockCounts",
    "BlockLayout",
    "BlockServer",
    "Busy",
    "DeviceClass",
    "DeviceConnection",
    "DeviceNames",
    "InterfaceInfo",
    "InvalidValue",
    "Ioq",
    "IoqClosed",
    "IoqEmpty",
    "IoqError",
    "IoqFault",
    "IoqFull",
    "NoDevice",
    "NoSpace",
    "NotFound",
    "NotPermitted",
    "NotSupported",
    "Poller",
    "QueueDirection",
    "QueuePoller",
    "QueueSpec",
    "Queues",
    "RequestResponseConnection",
    "VbusError",
    "WorkerRecipe",
    "attribute_mode",
    "check_queue_specs",
    "request_response_queues",
    "slot_size",
]
