"""Real Linux TAP interfaces through /dev/net/tun, for the venet-tap deviceclass.

A TAP made here is not persistent: it lives exactly as long as its file
descriptor, so closing the descriptor (or the daemon exiting) removes it.

Its header mode follows the client (behaviour §7.4): with SG granted, the TAP is
attached with IFF_VNET_HDR (each frame read or written starts with a 10-byte
virtio-net header) and TUNSETOFFLOAD tells the kernel which large segments the
client takes. A TAP's flags are fixed per descriptor, so `set_offloads`
re-attaches the same interface (name, addresses, routes kept) with a new
descriptor: the interface is made persistent for the moment between the two.
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
_TUNSETPERSIST = 0x400454CB
_TUNSETOFFLOAD = 0x400454D0
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_SIOCSIFHWADDR = 0x8924
_ARPHRD_ETHER = 1
IFNAMSIZ = 16


class TapInterface:
    """One TAP interface in the calling process's network namespace.

    `offloads` is None for bare frames, else the TUN_F_* bits the TAP was given
    (with IFF_VNET_HDR).
    """

    def __init__(self, fd: int, name: str, offloads: int | None = None) -> None:
        self.fd = fd
        self.name = name
        self.offloads = offloads

    @classmethod
    def open(cls, mac: bytes, pattern: str = "vbus%d", offloads: int | None = None) -> TapInterface:
        fd = _open_tun()
        try:
            name = _attach(fd, pattern, offloads)
            set_hardware_address(name, mac)
        except OSError as exc:
            os.close(fd)
            raise VbusError(_creation_failure(pattern, exc), errno=exc.errno) from exc
        return cls(fd, name, offloads)

    def set_offloads(self, offloads: int | None) -> None:
        """Switch the header mode (None: bare frames) keeping the interface itself.

        A VbusError (the host's errno) if it cannot: the interface is then left as it
        was whenever the host allows that."""
        if offloads == self.offloads or self.fd < 0:
            return
        fd = _open_tun()  # first: without a descriptor to be had, nothing changes
        try:
            fcntl.ioctl(self.fd, _TUNSETPERSIST, 1)  # outlives the old descriptor
        except OSError as exc:
            os.close(fd)
            raise VbusError(
                f"cannot re-attach {self.name}: {exc.strerror}", errno=exc.errno
            ) from exc
        self._close_fd()
        try:
            _attach(fd, self.name, offloads)
        except OSError as exc:
            try:
                _attach(fd, self.name, self.offloads)  # back as it was
            except OSError:
                os.close(fd)  # nothing else to do: it stays, persistent, unattached
                raise VbusError(f"lost {self.name}: {exc.strerror}", errno=exc.errno) from exc
            fcntl.ioctl(fd, _TUNSETPERSIST, 0)
            self.fd = fd
            why = f"cannot switch {self.name}'s header mode: {exc.strerror}"
            raise VbusError(why, errno=exc.errno) from exc
        fcntl.ioctl(fd, _TUNSETPERSIST, 0)  # again gone with its descriptor
        self.fd = fd
        self.offloads = offloads

    def discard(self, max_frames: int) -> int:
        """Read and drop up to `max_frames` frames the host sent, without waiting."""
        for dropped in range(max_frames):
            try:
                os.read(self.fd, 65536 + 64)
            except OSError:
                return dropped
        return max_frames

    def _close_fd(self) -> None:
        if self.fd >= 0:
            # A task may be waiting for this fd to turn readable: tell it first.
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(self.fd)
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self._close_fd()


def _open_tun() -> int:
    try:
        return os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        fix = "modprobe tun on the host; in a container: --device /dev/net/tun"
        raise VbusError(f"cannot open {TUN_PATH} ({exc.strerror}): {fix}", errno=exc.errno) from exc


def _attach(fd: int, name: str, offloads: int | None) -> str:
    """TUNSETIFF (and TUNSETOFFLOAD with a header); the interface's name."""
    flags = _IFF_TAP | _IFF_NO_PI | (0 if offloads is None else _IFF_VNET_HDR)
    reply = fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    if offloads is not None:
        fcntl.ioctl(fd, _TUNSETOFFLOAD, offloads)
    return reply[:IFNAMSIZ].split(b"\0", 1)[0].decode()


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
