"""Real Linux TAP interfaces through /dev/net/tun, for the venet-tap deviceclass.

A TAP made here is not persistent: it lives exactly as long as its file
descriptor, so closing the descriptor (or the daemon exiting) removes it.

Its header mode follows the client (behaviour §7.4): with SG granted, the TAP is
attached with IFF_VNET_HDR (each frame read or written starts with a 10-byte
virtio-net header) and TUNSETOFFLOAD tells the kernel which large segments the
client takes. A TAP's flags are fixed per descriptor, so `set_offloads`
re-attaches the same interface (name, addresses, routes kept) with a new
descriptor: the interface is made persistent for the moment between the two.
The ioctls themselves are `vbusfs._tun`'s, shared with the enet driver.
"""

from __future__ import annotations

import contextlib
import errno
import os

import trio

from vbusfs import _tun
from vbusfs.model import VbusError


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
            name = _tun.attach(fd, pattern, offloads)
            _tun.set_hardware_address(name, mac)
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
            _tun.set_persist(self.fd, True)  # outlives the old descriptor
        except OSError as exc:
            os.close(fd)
            raise VbusError(
                f"cannot re-attach {self.name}: {exc.strerror}", errno=exc.errno
            ) from exc
        self._close_fd()
        try:
            _tun.attach(fd, self.name, offloads)
        except OSError as exc:
            try:
                _tun.attach(fd, self.name, self.offloads)  # back as it was
            except OSError:
                os.close(fd)  # nothing else to do: it stays, persistent, unattached
                raise VbusError(f"lost {self.name}: {exc.strerror}", errno=exc.errno) from exc
            _tun.set_persist(fd, False)
            self.fd = fd
            why = f"cannot switch {self.name}'s header mode: {exc.strerror}"
            raise VbusError(why, errno=exc.errno) from exc
        _tun.set_persist(fd, False)  # again gone with its descriptor
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
        return _tun.open_tun()
    except OSError as exc:
        fix = "modprobe tun on the host; in a container: --device /dev/net/tun"
        where = _tun.TUN_PATH
        raise VbusError(f"cannot open {where} ({exc.strerror}): {fix}", errno=exc.errno) from exc


def _creation_failure(pattern: str, exc: OSError) -> str:
    if exc.errno in (errno.EPERM, errno.EACCES):
        # TUNSETIFF (and setting the address) check CAP_NET_ADMIN over the netns.
        return (
            f"creating a TAP interface ({pattern}) needs CAP_NET_ADMIN in the daemon's network "
            f"namespace ({exc.strerror}); run the daemon as root or with that capability"
        )
    return f"cannot create a TAP interface ({pattern}): {exc.strerror}"
