"""The driver's TAP interface, made in the calling process's network namespace.

A TAP made here is not persistent: it lives exactly as long as its descriptor, so the
kernel removes it when the driver exits, however it exits. With offloads (venet's SG
group granted) it is attached with IFF_VNET_HDR, so every frame read or written starts
with the same 10-byte virtio-net header the venet ring carries, and TUNSETOFFLOAD says
which large segments the driver takes from the kernel.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

TUN_PATH = "/dev/net/tun"
_TUNSETIFF = 0x400454CA
_TUNSETOFFLOAD = 0x400454D0
_TUNSETCARRIER = 0x400454E2
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCSIFMTU = 0x8922
_SIOCSIFHWADDR = 0x8924
_IFF_UP = 0x1
_ARPHRD_ETHER = 1
IFNAMSIZ = 16


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
        if not pattern or len(pattern.encode()) >= IFNAMSIZ or "/" in pattern or " " in pattern:
            raise EnetError(errno.EINVAL, f"{pattern!r} is not an interface name (1..15 bytes)")
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise EnetError(
                exc.errno, f"cannot open {TUN_PATH} ({exc.strerror}): modprobe tun"
            ) from None
        try:
            flags = _IFF_TAP | _IFF_NO_PI | (0 if offloads is None else _IFF_VNET_HDR)
            reply = fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", pattern.encode(), flags))
            name = reply[:IFNAMSIZ].split(b"\0", 1)[0].decode()
            if offloads is not None:
                fcntl.ioctl(fd, _TUNSETOFFLOAD, offloads)
            fcntl.ioctl(fd, _TUNSETCARRIER, struct.pack("i", 0))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                sfd = s.fileno()
                fcntl.ioctl(
                    sfd, _SIOCSIFHWADDR, struct.pack("16sH6s8x", name.encode(), _ARPHRD_ETHER, mac)
                )
                fcntl.ioctl(sfd, _SIOCSIFMTU, struct.pack("16si20x", name.encode(), mtu))
                got = fcntl.ioctl(sfd, _SIOCGIFFLAGS, struct.pack("16sH22x", name.encode(), 0))
                up = struct.unpack_from("H", got, IFNAMSIZ)[0] | _IFF_UP
                fcntl.ioctl(sfd, _SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), up))
        except OSError as exc:
            os.close(fd)
            raise EnetError(exc.errno, _failure(pattern, exc)) from None
        return cls(fd, name, offloads)

    def set_carrier(self, up: bool) -> None:
        """The interface's carrier (what `ip link` shows as LOWER_UP / NO-CARRIER)."""
        fcntl.ioctl(self.fd, _TUNSETCARRIER, struct.pack("i", 1 if up else 0))

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
    return f"cannot create the TAP interface {pattern}: {exc.strerror}"
