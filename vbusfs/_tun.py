"""TAP interfaces through /dev/net/tun: the ioctls, shared by venet-tap and the enet driver.

A top-level module of its own (no vbusfs imports) so that the daemon's deviceclass
(`classes`) and the member-side driver (`enet`) make their TAPs the same way without
an arrow between them. Every helper raises the host's `OSError`; what it means to the
caller (a `VbusError`, an `EnetError`) and what to do about it, each caller says.

With `offloads` (TUN_F_* bits) a TAP is attached with IFF_VNET_HDR, so each frame read
or written starts with a 10-byte virtio-net header, and TUNSETOFFLOAD tells the kernel
which large segments the reader takes; with None it carries bare frames.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

TUN_PATH = "/dev/net/tun"
IFNAMSIZ = 16

_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
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


def open_tun() -> int:
    """A new descriptor on /dev/net/tun (non-blocking, close-on-exec), not yet a TAP."""
    return os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def attach(fd: int, name: str, offloads: int | None) -> str:
    """TUNSETIFF `fd` to the TAP `name` (a `%d` in it picks the first free number), with
    TUNSETOFFLOAD when `offloads` is not None; the interface's name."""
    flags = _IFF_TAP | _IFF_NO_PI | (0 if offloads is None else _IFF_VNET_HDR)
    reply = fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    if offloads is not None:
        fcntl.ioctl(fd, _TUNSETOFFLOAD, offloads)
    return reply[:IFNAMSIZ].split(b"\0", 1)[0].decode()


def set_persist(fd: int, persist: bool) -> None:
    """Whether the TAP outlives its descriptor (TUNSETPERSIST)."""
    fcntl.ioctl(fd, _TUNSETPERSIST, 1 if persist else 0)


def set_carrier(fd: int, up: bool) -> None:
    """The TAP's carrier (what `ip link` shows as LOWER_UP / NO-CARRIER)."""
    fcntl.ioctl(fd, _TUNSETCARRIER, struct.pack("i", 1 if up else 0))


def set_hardware_address(ifname: str, mac: bytes) -> None:
    """The interface's Ethernet address (SIOCSIFHWADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _hardware_address(sock.fileno(), ifname, mac)


def configure(ifname: str, *, mac: bytes, mtu: int) -> None:
    """Set the interface's Ethernet address and MTU and bring it up, over one socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sfd = sock.fileno()
        _hardware_address(sfd, ifname, mac)
        fcntl.ioctl(sfd, _SIOCSIFMTU, struct.pack("16si20x", ifname.encode(), mtu))
        got = fcntl.ioctl(sfd, _SIOCGIFFLAGS, struct.pack("16sH22x", ifname.encode(), 0))
        up = struct.unpack_from("H", got, IFNAMSIZ)[0] | _IFF_UP
        fcntl.ioctl(sfd, _SIOCSIFFLAGS, struct.pack("16sH22x", ifname.encode(), up))


def _hardware_address(sfd: int, ifname: str, mac: bytes) -> None:
    request = struct.pack("16sH6s8x", ifname.encode(), _ARPHRD_ETHER, mac)
    fcntl.ioctl(sfd, _SIOCSIFHWADDR, request)
