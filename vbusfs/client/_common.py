"""What both client faces share beyond the protocol core: finding the daemon, fds."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable

from vbusfs.connector import XATTR, ConnectorError, Reply


def find_connector(mountpoint: str) -> str:
    """Where the daemon serving `mountpoint` listens (read from the mount's root)."""
    try:
        return os.fsdecode(os.getxattr(mountpoint, XATTR))
    except OSError as exc:
        raise ConnectorError(
            exc.errno, f"{mountpoint} is not a live vbusfs mount with a connector"
        ) from None


def close_fds(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def hangup_of(reply: Reply) -> socket.socket:
    """The hang-up socket an `open` reply carries."""
    if len(reply.fds) != 1:
        close_fds(reply.fds)
        raise ConnectorError(0, "the daemon's open reply carried no hang-up socket")
    return socket.socket(fileno=reply.fds[0])
