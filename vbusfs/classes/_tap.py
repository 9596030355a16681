"""Real Linux TAP interfaces through /dev/net/tun, for the venet-tap deviceclass.

A TAP made here is not persistent: it lives exactly as long as its file
descriptor, so closing the descriptor (or the daemon exiting) removes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct

import trio

from vbusfs.model import VbusError

TUN_PATH = "/dev/net/tun"
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_SIOCSIFHWADDR = 0x8924
_ARPHRD_ETHER = 1
IFNAMSIZ = 16


class TapInterface:
    """One TAP interface in the calling process's network namespace."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    @classmethod
    def open(cls, mac: bytes, pattern: str = "vbus%d") -> TapInterface:
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            fix = "modprobe tun on the host; in a container: --device /dev/net/tun"
            raise VbusError(
                f"cannot open {TUN_PATH} ({exc.strerror}): {fix}", errno=exc.errno
            ) from exc
        try:
            request = struct.pack("16sH22x", pattern.encode(), _IFF_TAP | _IFF_NO_PI)
            reply = fcntl.ioctl(fd, _TUNSETIFF, request)
            name = reply[:IFNAMSIZ].split(b"\0", 1)[0].decode()
            set_hardware_address(name, mac)
        except OSError as exc:
            os.close(fd)
            raise VbusError(_creation_failure(pattern, exc), errno=exc.errno) from exc
        return cls(fd, name)

    def discard(self, max_frames: int) -> int:
        """Read and drop up to `max_frames` frames the host sent, without waiting."""
        for dropped in range(max_frames):
            try:
                os.read(self.fd, 65536)
            except OSError:
                return dropped
        return max_frames

    def close(self) -> None:
        if self.fd >= 0:
            # A task may be waiting for this fd to turn readable: tell it first.
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(self.fd)
            os.close(self.fd)
            self.fd = -1


def _creation_failure(pattern: str, exc: OSError) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES):
        # TUNSETIFF (and setting the address) check CAP_NET_ADMIN over the netns.
        return (
            f"creating a TAP interface ({pattern}) needs CAP_NET_ADMIN in the daemon's network "
            f"namespace ({exc.strerror}); run the daemon as root or with that capability"
        )
    return f"cannot create a TAP interface ({pattern}): {exc.strerror}"


def set_hardware_address(ifname: str, mac: bytes) -> None:
    request = struct.pack("16sH6s8x", ifname.encode(), _ARPHRD_ETHER, mac)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), _SIOCSIFHWADDR, request)
