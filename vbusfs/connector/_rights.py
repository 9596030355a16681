"""SCM_RIGHTS: the file descriptors that travel beside a connector datagram.

The one place that builds and parses the ancillary data for both roles. Data
only: it never sends, receives or closes anything (the shells do).
"""

from __future__ import annotations

import array
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from ._protocol import MAX_FDS, MAX_MESSAGE, Datagram

#: the ancillary buffer a receive needs: room for the most fds a message may carry
ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
#: what to pass to recvmsg: recvmsg(*RECEIVE)
RECEIVE = (MAX_MESSAGE, ANCILLARY_SPACE)


def rights(fds: Sequence[int]) -> list[tuple[int, int, bytes]]:
    """The ancillary data that sends `fds` with a datagram (none for no fds)."""
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def received(result: tuple[bytes, Iterable[tuple[int, int, bytes]], int, Any]) -> Datagram:
    """The datagram a `recvmsg(*RECEIVE)` returned, with every fd the kernel installed."""
    data, ancillary, flags, _address = result
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds.extend(got)
    truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))
    fds_cut = bool(flags & socket.MSG_CTRUNC) and not flags & socket.MSG_TRUNC
    return Datagram(data, tuple(fds), truncated, fds_cut)
