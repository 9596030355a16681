"""The vdisk deviceclass: its attributes, its per-device state, and a client's connection.

Attributes (device, all 0644 but `opened`), refused with EBUSY while a client
has the disk open:

- `backing`: `memory` (a memfd, zero at first, kept for the device's
  life across opens) or the absolute path of a regular file, which the daemon
  opens at each open of the disk (read-only when `readonly` is 1). Storing a
  path sets `size` to the file's size rounded down to 512 bytes (a file
  shorter than 512 bytes is refused); ENOENT for a missing file, EINVAL for
  anything else that is not `memory` or an absolute path to a regular file.
- `size`: bytes, a decimal multiple of 512, at least 512, at most 1 GiB for
  memory and at most the file's size for a file; else EINVAL.
- `readonly`: `0` or `1`; a read-only disk answers WRITE with EROFS.
- `spin_us`: how long the device polls its rings before it sleeps, `0` to
  `10000` microseconds or `adaptive` (the ring learns it): lower latency for
  CPU. Default 0.
- `opened` (0444): `1` while a client has the disk open, else `0`.

One client at a time opens a disk (EBUSY for a second); its requests are served in a
worker process (`isolation = "process"`) that maps the same memory or file. The connection serves
the ring protocol of `vbusfs_vdisk.protocol` (READs and WRITEs in C, through the
framework's block server, the rest through `Disk.handle`), and two device calls:
CAPACITY (size, block size, read-only) and FLUSH.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Any

from vbusfs.device import (
    Attribute,
    BlockServer,
    Busy,
    DeviceClass,
    InterfaceInfo,
    InvalidValue,
    RequestResponseConnection,
    VbusError,
    WorkerRecipe,
    request_response_queues,
)

from ._backing import MAX_MEMORY_SIZE, Backing, FileBacking, MemoryBacking, check_backing_file
from ._disk import Disk
from .protocol import (
    CAPACITY_CALL,
    FLUSH_CALL,
    REQUEST_SIZE,
    RESPONSE_SIZE,
    SECTOR,
    VERSION,
    pack_capacity,
)

MEMORY = "memory"
DEFAULT_SIZE = 16 << 20
#: the largest READ or WRITE a client may send (its ring slots must hold it plus a header)
MAX_TRANSFER = 1 << 20
#: the most requests (and posted response buffers) a client's rings may hold
MAX_QUEUE = 1024
MAX_SPIN_US = 10_000
ADAPTIVE = "adaptive"

_DECIMAL = re.compile(r"[0-9]+")


@dataclass(eq=False)
class VdiskState:
    """One vdisk device."""

    name: str
    backing: str = MEMORY
    size: int = DEFAULT_SIZE
    readonly: bool = False
    spin_us: int | str = 0
    #: the memory disk's bytes, made at the first open
    memory: MemoryBacking | None = None
    #: the client's connection while the disk is open
    connection: VdiskConnection | None = None

    def release(self) -> None:
        if self.memory is not None:
            self.memory.close()
            self.memory = None


def _not_open(state: VdiskState, name: str) -> None:
    if state.connection is not None:
        raise Busy(f"{name} cannot change while a client has {state.name} open")


def _os_error(exc: OSError, what: str) -> VbusError:
    return VbusError(f"{what}: {exc.strerror or exc}", errno=exc.errno or errno.EIO)


def _store_backing(state: VdiskState, text: str) -> None:
    _not_open(state, "backing")
    if text == MEMORY:
        if state.size > MAX_MEMORY_SIZE:
            raise InvalidValue(
                f"a memory disk holds at most {MAX_MEMORY_SIZE} bytes: lower size first"
            )
        state.backing = MEMORY
        return
    if not text.startswith("/") or "\0" in text or "\n" in text:
        raise InvalidValue(f"backing is {MEMORY!r} or an absolute file path, not {text!r}")
    try:
        file_size = check_backing_file(text)
    except OSError as exc:
        raise _os_error(exc, f"backing {text!r}") from None
    if file_size < SECTOR:
        raise InvalidValue(f"{text} holds {file_size} bytes, less than one {SECTOR}-byte block")
    state.release()  # a memory disk's bytes go when the disk moves to a file
    state.backing = text
    state.size = file_size - file_size % SECTOR


def _store_size(state: VdiskState, text: str) -> None:
    _not_open(state, "size")
    if not _DECIMAL.fullmatch(text) or int(text) % SECTOR or int(text) < SECTOR:
        raise InvalidValue(f"size is a decimal multiple of {SECTOR} bytes, not {text!r}")
    size = int(text)
    if state.backing == MEMORY:
        limit = MAX_MEMORY_SIZE
    else:
        try:
            limit = check_backing_file(state.backing)
        except OSError as exc:
            raise _os_error(exc, f"backing {state.backing!r}") from None
    if size > limit:
        raise InvalidValue(f"size {size} is more than {state.backing} holds ({limit} bytes)")
    state.size = size


def _store_readonly(state: VdiskState, text: str) -> None:
    _not_open(state, "readonly")
    if text not in ("0", "1"):
        raise InvalidValue(f"readonly is 0 or 1, not {text!r}")
    state.readonly = text == "1"


def _store_spin_us(state: VdiskState, text: str) -> None:
    _not_open(state, "spin_us")
    if text == ADAPTIVE:
        state.spin_us = ADAPTIVE
    elif _DECIMAL.fullmatch(text) and int(text) <= MAX_SPIN_US:
        state.spin_us = int(text)
    else:
        raise InvalidValue(f"spin_us is 0 to {MAX_SPIN_US} or {ADAPTIVE!r}, not {text!r}")


class VdiskConnection(RequestResponseConnection):
    """One client's open of a vdisk: the ring protocol and the CAPACITY and FLUSH calls."""

    def __init__(self, state: VdiskState, disk: Disk, owned: Backing | None) -> None:
        super().__init__()
        self.state = state
        self.disk = disk
        self._owned = owned  # a file backing, opened for this connection only
        # the loop's polling, as this device's attribute says (vbusfs.device declares
        # spin_us a ClassVar, though the loop reads it from the instance)
        self.spin_us = state.spin_us  # type: ignore[misc]
        state.connection = self

    def handle(self, request: memoryview, response: memoryview) -> int:
        return self.disk.handle(request, response)

    def block_server(self) -> BlockServer:
        """READs and WRITEs served in C, straight between the backing and the rings (a
        memory disk's memfd mapped, a file read and written in place); `handle`
        answers the rest (FLUSH, every refusal)."""
        return self.disk.block_server()

    def call(self, function: int, data: bytes) -> bytes:
        if function not in (CAPACITY_CALL, FLUSH_CALL):
            raise InvalidValue(f"vdisk has no function {function} (CAPACITY 0, FLUSH 1)")
        if data:
            raise InvalidValue(f"function {function} takes no data ({len(data)} bytes given)")
        if function == CAPACITY_CALL:
            return pack_capacity(self.disk.capacity())
        try:
            self.disk.flush()
        except OSError as exc:
            raise _os_error(exc, "flush") from None
        return b""

    def stats(self) -> dict[str, int]:
        return self.disk.stats()

    def worker_recipe(self) -> WorkerRecipe:
        """The worker process rebuilds this connection over the same bytes: the memory
        disk's memfd, or the file this open opened, passed to it."""
        state = self.state
        args = (state.name, state.backing, state.size, state.readonly, state.spin_us)
        return WorkerRecipe(__name__, "worker_connection", args, fds=(self.disk.backing.fd,))

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
        if self.state.connection is self:
            self.state.connection = None


def worker_connection(
    name: str, backing: str, size: int, readonly: bool, spin_us: int | str, *, fds: list[int]
) -> VdiskConnection:
    """A vdisk connection in its worker process (`VdiskConnection.worker_recipe`)."""
    owned: Backing
    if backing == MEMORY:
        owned = MemoryBacking.adopt(fds[0], size)
    else:
        owned = FileBacking(backing, size, readonly=readonly, fd=fds[0])
    state = VdiskState(name, backing, size, readonly, spin_us)
    return VdiskConnection(state, Disk(owned, readonly=readonly), owned)


class Vdisk(DeviceClass):
    """A block device backed by memory or a file, served over a request and a response ring.

    Each open disk's requests are served in a worker process of its own."""

    name = "vdisk"
    interface_type = "virtual-disk"
    isolation = "process"
    attributes = (
        Attribute(
            "backing",
            lambda s: s.backing,
            _store_backing,
            "memory, or the absolute path of a regular file (sets size to the file's).",
        ),
        Attribute(
            "size",
            lambda s: str(s.size),
            _store_size,
            f"Bytes, a multiple of {SECTOR}: at most {MAX_MEMORY_SIZE} in memory, the file's.",
        ),
        Attribute(
            "readonly",
            lambda s: "1" if s.readonly else "0",
            _store_readonly,
            "1: writes are refused with EROFS.",
        ),
        Attribute(
            "spin_us",
            lambda s: str(s.spin_us),
            _store_spin_us,
            f"Microseconds the device polls before sleeping, 0 to {MAX_SPIN_US}, or adaptive.",
        ),
        Attribute(
            "opened",
            lambda s: "0" if s.connection is None else "1",
            None,
            "1 while a client has the disk open.",
        ),
    )
    versions = frozenset({VERSION})
    # a response slot needs only a header: a READ longer than the client's slot is
    # answered EINVAL, so a client that reads 4 KiB at a time uses small slots
    queues = request_response_queues(
        max_request=REQUEST_SIZE + MAX_TRANSFER,
        max_response=RESPONSE_SIZE + MAX_TRANSFER,
        min_response=RESPONSE_SIZE,
        max_count=MAX_QUEUE,
    )

    def __init__(self) -> None:
        #: every live vdisk device by name (empty once every device is gone)
        self.live: dict[str, VdiskState] = {}

    def create(self, device_name: str) -> VdiskState:
        state = VdiskState(device_name)
        self.live[device_name] = state
        return state

    def destroy(self, state: VdiskState) -> None:
        state.release()
        self.live.pop(state.name, None)

    def attach(self, state: VdiskState, interface: InterfaceInfo) -> None:
        return None

    def open(self, state: VdiskState, interface_state: Any, version: int) -> VdiskConnection:
        if state.connection is not None:
            raise Busy(f"{state.name} is open by another client")
        owned: Backing | None = None
        if state.backing == MEMORY:
            if state.memory is None:
                state.memory = MemoryBacking(state.size)
            elif state.memory.size != state.size:
                state.memory = state.memory.resized(state.size)
            backing: Backing = state.memory
        else:
            try:
                backing = owned = FileBacking(state.backing, state.size, readonly=state.readonly)
            except OSError as exc:
                raise _os_error(exc, f"backing {state.backing!r}") from None
        return VdiskConnection(state, Disk(backing, readonly=state.readonly), owned)


class ThreadVdisk(Vdisk):
    """`vdisk` with its loop in a thread of the daemon (class name `vdisk-thread`): the
    same device, for comparing the two isolations."""

    name = "vdisk-thread"
    isolation = "thread"


__all__ = [
    "DEFAULT_SIZE",
    "MAX_QUEUE",
    "MAX_TRANSFER",
    "MEMORY",
    "ThreadVdisk",
    "Vdisk",
    "VdiskConnection",
    "worker_connection",
]
