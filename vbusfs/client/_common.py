"""What both client faces share beyond the protocol core: finding the daemon, fds."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterable

from vbusfs._mountinfo import FSTYPE, read_mountinfo
from vbusfs.connector import XATTR, ConnectorError, ConnectorTimeout, Reply


def find_mounts() -> list[str]:
    """The vbusfs mount points this process sees, in mount order (never blocks on a daemon).

    Read from /proc/self/mountinfo: every mount of type fuse.vbusfs of a whole tree
    (not a bind mount of a part of it, such as `vbusfs run`'s /config/vbus), listed
    once even where mounted over. A mount whose daemon died is listed until cleared;
    `connect` then fails with a clear error.
    """
    found: list[str] = []
    for entry in read_mountinfo():
        if entry.fstype == FSTYPE and entry.root == "/" and entry.mount_point not in found:
            found.append(entry.mount_point)
    return found


def find_connector(mountpoint: str, timeout: float | None = None) -> str:
    """Where the daemon serving `mountpoint` listens (read from the mount's root).

    Blocks until the daemon answers; with a `timeout`, at most that long
    (ConnectorTimeout): a stopped daemon leaves the read hanging in the kernel, so
    it is made on a thread of its own, which ends when the daemon answers or goes.
    """
    if timeout is None:
        return _read_xattr(mountpoint)
    found: list[str | BaseException] = []

    def read() -> None:
        try:
            found.append(_read_xattr(mountpoint))
        except BaseException as exc:
            found.append(exc)

    reader = threading.Thread(target=read, name="vbusfs-find-connector", daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        raise ConnectorTimeout(f"a lookup of {mountpoint}'s connector", timeout)
    if isinstance(found[0], BaseException):
        raise found[0]
    return found[0]


def _read_xattr(mountpoint: str) -> str:
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
