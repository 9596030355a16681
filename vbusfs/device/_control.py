"""A device worker's recipe, and the control channel between the daemon and a worker.

`WorkerRecipe` is what a `DeviceConnection` of a class with `isolation = "process"`
gives the framework: the module and factory a clean worker process imports and calls
to rebuild the connection, the plain (picklable) arguments, file descriptors to pass
(a memfd with the device's bytes, an open file), and how much lower (`nice`, 0 to 19)
its loop thread's CPU priority is than the daemon's. The factory is called as
``factory(*args, **kwargs)`` with ``fds=[...]`` added when `fds` is not empty (the
worker's own copies, the factory's to keep or close).

The control channel is a SOCK_SEQPACKET socket pair, one message per datagram: a JSON
header, a NUL, then raw bytes (a call's data or its answer), file descriptors beside it
as SCM_RIGHTS. The daemon sends `queues` (the rings' fds, 4 per queue), `call`, `stats`
and `stop`; the worker answers `ready`, `reply` (by sequence number) and `ended` (its
loop ended: how), and says, whenever its connection does, `event` (a device event for
its client: `kind`, `data`) and `notify` (an `attribute` of its device or interface
changed), in the order they were made.
What a worker says is checked like any peer's: a malformed message is the worker's
fault, and the worker goes.

Pure encoding and blocking socket helpers only: nothing here starts a thread or does
I/O at import.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: the longest control message (a device call's data and the JSON around it)
MAX_MESSAGE = 1 << 20
#: the most file descriptors one message carries (4 per queue)
MAX_FDS = 64


#: how much lower a worker's loop thread's CPU priority is than the daemon's, unless its
#: recipe says otherwise: a device streaming flat out yields the CPU to the filesystem
#: (attribute reads while a vdisk streams: within 1x of idle at +10, about 2x at +5 and
#: 2-4x at 0, bench/devices.py on a loaded 2-CPU machine), at the price of its own share
#: of a contended CPU (at +10 a loop competing with other busy processes gets a tenth)
DEFAULT_NICE = 10


@dataclass(frozen=True)
class WorkerRecipe:
    """How a worker process rebuilds one open interface's connection (see the module)."""

    module: str
    factory: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    fds: tuple[int, ...] = ()
    nice: int = DEFAULT_NICE

    def __post_init__(self) -> None:
        if (
            isinstance(self.nice, bool)
            or not isinstance(self.nice, int)
            or not 0 <= self.nice <= 19
        ):
            raise ValueError(f"WorkerRecipe.nice is 0 to 19, not {self.nice!r}")
        if not self.module or not self.factory:
            raise ValueError("a WorkerRecipe names a module and a factory")
        if any(isinstance(fd, bool) or not isinstance(fd, int) or fd < 0 for fd in self.fds):
            raise ValueError(f"WorkerRecipe.fds are open file descriptors, not {self.fds!r}")
        if len(self.fds) > MAX_FDS:
            raise ValueError(f"a WorkerRecipe passes at most {MAX_FDS} file descriptors")


class ControlError(Exception):
    """A control message that breaks the channel's rules."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    message = json.dumps(header, separators=(",", ":")).encode() + b"\0" + payload
    if len(message) > MAX_MESSAGE:
        raise ControlError(f"a control message holds at most {MAX_MESSAGE} bytes")
    return message


def decode(message: bytes) -> tuple[dict[str, Any], bytes]:
    head, nul, payload = message.partition(b"\0")
    if not nul:
        raise ControlError("a control message has no header")
    try:
        header = json.loads(head)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(f"a control message's header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ControlError("a control message's header is an object with an op")
    return header, payload


def rights(fds: list[int] | tuple[int, ...]) -> list[tuple[int, int, bytes]]:
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def unpack_message(
    data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int
) -> tuple[dict[str, Any], bytes, list[int]]:
    """A received datagram's header, payload and fds (the fds closed if it is refused);
    an empty datagram is the peer's end (EOFError)."""
    fds: list[int] = []
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(blob) - len(blob) % 4
            fds.extend(array.array("i", blob[:usable]))
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ControlError("a control message was truncated")
        if not data:
            raise EOFError("the control channel's peer is gone")
        header, payload = decode(data)
    except BaseException:
        close_all(fds)
        raise
    return header, payload, fds


def send(
    sock: socket.socket, header: dict[str, Any], payload: bytes = b"", fds: Sequence[int] = ()
) -> None:
    sock.sendmsg([encode(header, payload)], rights(list(fds)))


def receive(sock: socket.socket) -> tuple[dict[str, Any], bytes, list[int]]:
    """Block for the next message (EOFError once the peer is gone)."""
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4))
    return unpack_message(data, ancdata, flags)


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
