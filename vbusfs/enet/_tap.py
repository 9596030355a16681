"""The driver's TAP interface, made in the calling process's network namespace.

A TAP made here is not persistent: it lives exactly as long as its descriptor, so the
kernel removes it when the driver exits, however it exits. With offloads (venet's SG
group granted) it is attached with IFF_VNET_HDR, so every frame read or written starts
with the same 10-byte virtio-net header the venet ring carries, and TUNSETOFFLOAD says
which large segments the driver takes from the kernel. The ioctls are `vbusfs._tun`'s,
shared with the venet-tap deviceclass.
"""

from __future__ import annotations

import errno
import os
import socket

from vbusfs import _tun


class EnetError(OSError):
    """The driver cannot run: `errno` says why, the message what to do."""


class Tap:
    """One TAP interface of this process's network namespace, up, its carrier off until
    :meth:`set_carrier`. `offloads` is None for bare frames, else its TUN_F_* bits."""

    def __init__(self, fd: int, name: str, offloads: int | None) -> None:
        self.fd = fd
        self.name = name
        self.offloads = offloads

    @classmethod
    def open(cls, pattern: str, *, mac: bytes, mtu: int, offloads: int | None = None) -> Tap:
        """A new TAP named `pattern` (a `%d` in it picks the first free number)."""
        too_long = len(pattern.encode()) >= _tun.IFNAMSIZ
        if not pattern or too_long or "/" in pattern or " " in pattern:
            raise EnetError(errno.EINVAL, f"{pattern!r} is not an interface name (1..15 bytes)")
        try:
            fd = _tun.open_tun()
        except OSError as exc:
            raise EnetError(
                exc.errno, f"cannot open {_tun.TUN_PATH} ({exc.strerror}): modprobe tun"
            ) from None
        try:
            name = _tun.attach(fd, pattern, offloads)
            _tun.set_carrier(fd, False)
            _tun.configure(name, mac=mac, mtu=mtu)
        except OSError as exc:
            os.close(fd)
            raise EnetError(exc.errno, _failure(pattern, exc)) from None
        return cls(fd, name, offloads)

    def set_carrier(self, up: bool) -> None:
        """The interface's carrier (what `ip link` shows as LOWER_UP / NO-CARRIER)."""
        _tun.set_carrier(self.fd, up)

    def close(self) -> None:
        """Remove the interface."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _failure(pattern: str, exc: OSError) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return (
            f"creating the TAP interface {pattern} needs CAP_NET_ADMIN in this network "
            f"namespace ({exc.strerror}): run vbusfs enet as root there"
        )
    if exc.errno == errno.EBUSY:
        return f"cannot create {pattern}: an interface of that name exists and is in use"
    if exc.errno == errno.EINVAL and _exists(pattern):
        return f"cannot create {pattern}: an interface of that name exists and is no TAP"
    return f"cannot create the TAP interface {pattern}: {exc.strerror}"


def _exists(name: str) -> bool:
    """Whether this network namespace has an interface called `name` (the kernel answers
    EINVAL, not EBUSY, when TUNSETIFF names one that is no TUN/TAP device)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True
