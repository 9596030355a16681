"""Enet: one venet interface of the caller's bus as a TAP interface of its network namespace."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from types import TracebackType

from vbusfs.client import Client, ConnectorError, Venet, connect, find_mounts, linkstate
from vbusfs.connector import venet as abi
from vbusfs.ioq import SOUTH_MAX_DATA, FdPump, IoqClosed, IoqFault, PumpCounts, PumpEnd

from ._tap import EnetError, Tap

#: how long an idle pump polls its rings and TAP before it sleeps (µs): none by default,
#: since on a machine with few CPUs for the drivers, the daemon and the programs, a poll
#: takes the CPU its peer needs (bench/net.py: the median ping was 10-20% slower with 20)
DEFAULT_SPIN_US = 0
#: ring slots by default with offloads (each slot takes a 64 KiB segment: 16 MiB a ring)
DEFAULT_SLOTS = 256
#: the bytes of a bare ring by default (4096 slots of 2048 bytes at the default MTU): a
#: switch drops a frame for a driver with no receive buffer posted, and on a busy machine
#: a driver may wait milliseconds for a CPU; with 256 slots (3 ms of frames at 1 Gbit/s)
#: TCP lost thousands of frames a second, with 4096 next to none (bench/net.py --slots)
BARE_RING_BYTES = 8 << 20
#: what the driver asks for: offloads (the SG group, with checksum and TCP segmentation)
OFFLOADS = abi.CAP_SG | abi.CAP_TSO4 | abi.CAP_TSO6 | abi.CAP_ECN


def default_mountpoint() -> str:
    """The one vbusfs mount this process sees; EnetError if there is none or several."""
    mounts = find_mounts()
    if len(mounts) != 1:
        found = ", ".join(mounts) if mounts else "none"
        raise EnetError(errno.ENOENT, f"name the vbusfs mount with --mount (found: {found})")
    return mounts[0]


class Enet:
    """Venet interface `interface_id` of this process's bus, driven as a TAP interface.

    Opening it connects to the daemon (the process must be a member of a bus), opens
    the interface (EBUSY while another client has it), negotiates offloads (unless
    `offloads` is False) and link-state events, creates the TAP (`ifname`, a `%d` picks
    a free number) with the device's `client_mac` and `mtu`, and brings the link up.
    :meth:`run` then moves frames, in C, until :meth:`stop`; the TAP's carrier follows
    the device's link state. :meth:`close` removes the TAP and releases the device;
    if the process dies instead, the kernel and the daemon do both.

    `slots` is each ring's count of slots (receive and transmit): by default
    :data:`DEFAULT_SLOTS` with offloads, and with bare frames as many as fill
    :data:`BARE_RING_BYTES` (at least :data:`DEFAULT_SLOTS`). A ring's memory (slots
    times the slot) is at most 64 MiB: more is EnetError EINVAL.
    """

    def __init__(
        self,
        mountpoint: str | None = None,
        *,
        interface_id: int = 0,
        ifname: str = "venet%d",
        offloads: bool = True,
        spin_us: int = DEFAULT_SPIN_US,
        slots: int | None = None,
    ) -> None:
        self.mountpoint = default_mountpoint() if mountpoint is None else mountpoint
        self.interface_id = interface_id
        self._client: Client | None = None
        self._venet: Venet | None = None
        self.tap: Tap | None = None
        self._stop_r, self._stop_w = socket.socketpair()
        for s in (self._stop_r, self._stop_w):
            s.setblocking(False)
        try:
            self._open(ifname, offloads, spin_us, slots)
        except BaseException:
            self.close()
            raise

    def _open(self, ifname: str, offloads: bool, spin_us: int, slots: int | None) -> None:
        where = f"interface {self.interface_id}"
        try:
            self._client = client = connect(self.mountpoint)
        except OSError as exc:
            why = _no_connection(self.mountpoint, exc.errno, exc.strerror or str(exc))
            raise EnetError(exc.errno or errno.EIO, why) from None
        if client.name is None:  # an administrator (root) may connect on no bus
            raise EnetError(errno.EACCES, _no_connection(self.mountpoint, errno.EACCES, ""))
        self.bus = client.name
        self.mtu = self._device_mtu()
        caps = {abi.CAP_GROUP_EVENTQ: abi.CAP_EVQ_LINKSTATE}
        if offloads:
            caps[abi.CAP_GROUP_SG] = OFFLOADS
        bare_slot = max(abi.SLOT_SIZE, self.mtu + abi.HEADER)
        slot_bytes = abi.MAX_SG_MESSAGE if offloads else bare_slot
        if slots is None:
            slots = DEFAULT_SLOTS if offloads else max(DEFAULT_SLOTS, BARE_RING_BYTES // bare_slot)
        if slots < 1 or slots * slot_bytes > SOUTH_MAX_DATA:
            most = SOUTH_MAX_DATA // slot_bytes
            raise EnetError(errno.EINVAL, f"slots is 1 to {most} for {slot_bytes}-byte slots")
        try:
            self._venet = venet = client.open_venet(
                self.interface_id,
                slots=slots,
                capabilities=caps,
                link_up=False,
                slot_size=None if offloads else bare_slot,
            )
            self.slots = slots
            self.granted = dict(venet.granted)
            self.sg = venet.sg
            self.mac = venet.mac
        except OSError as exc:
            raise EnetError(exc.errno or errno.EIO, _refusal(where, exc)) from None
        self.tap = Tap.open(
            ifname,
            mac=self.mac,
            mtu=self.mtu,
            offloads=abi.tun_offloads(self.granted.get(abi.CAP_GROUP_SG, 0)),  # None: bare
        )
        self.ifname = self.tap.name
        max_length = abi.MAX_SG_MESSAGE if self.sg else self.mtu + abi.HEADER
        self._pump = FdPump(venet.rx, venet.tx, self.tap.fd, max_length=max_length, spin_us=spin_us)
        try:
            venet.link_up()
        except ConnectorError as exc:
            raise EnetError(exc.errno, f"LINKUP of {where} failed: {exc.strerror}") from None

    def _device_mtu(self) -> int:
        """The device's `mtu` attribute (the default where it has none)."""
        path = os.path.join(
            self.mountpoint,
            "sys/vbus/instances",
            self.bus,
            "devices",
            str(self.interface_id),
            "device/mtu",
        )
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return abi.MTU

    def run(self) -> None:
        """Move frames until :meth:`stop` (from another thread or a signal handler) or
        the device goes (EnetError, ENODEV). The GIL is released while frames move."""
        assert self._client is not None and self._venet is not None and self.tap is not None
        client, hangup = self._client, self._venet.interface.hangup
        while True:
            try:
                end = self._pump.run(self._stop_r.fileno(), event_fd=client.fileno(), hangup=hangup)
            except IoqClosed:
                raise EnetError(errno.ENODEV, "the device was released by the daemon") from None
            except IoqFault as exc:
                raise EnetError(errno.EPROTO, f"a ring broke: {exc}") from None
            if end is PumpEnd.STOPPED:
                with contextlib.suppress(BlockingIOError):
                    while self._stop_r.recv(4096):
                        pass
                return
            for event in client.events():
                up = linkstate(event)
                if up is not None:
                    self.tap.set_carrier(up)
            if select.select([client.fileno()], [], [], 0)[0]:
                # everything was read, and it is still readable: the connection ended
                raise EnetError(errno.ENODEV, "the daemon closed the connection")

    @property
    def stop_fd(self) -> int:
        """A descriptor that stops :meth:`run` when written to (`signal.set_wakeup_fd`)."""
        return self._stop_w.fileno()

    def stop(self) -> None:
        """End :meth:`run` (safe from any thread)."""
        with contextlib.suppress(BlockingIOError):
            self._stop_w.send(b"\0")

    def counts(self) -> PumpCounts:
        return self._pump.counts()

    def close(self) -> None:
        """Remove the TAP and release the device."""
        if self.tap is not None:
            self.tap.close()
        if self._venet is not None:
            self._venet.close()
        if self._client is not None:
            self._client.close()
        self._stop_r.close()
        self._stop_w.close()

    def __enter__(self) -> Enet:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _no_connection(mountpoint: str, code: int | None, detail: str) -> str:
    if code == errno.EACCES:
        return (
            f"this process is on no bus of {mountpoint}: join one first "
            f"(echo BUS > {mountpoint}/proc/self/vbus)"
        )
    return f"cannot connect to {mountpoint}: {detail}"


def _refusal(where: str, exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return f"{where} is open by another client"
    if exc.errno == errno.ENOENT:
        return f"the bus has no {where}"
    if exc.errno == errno.EINVAL:
        return f"{where} is not a venet interface ({exc.strerror})"
    return f"{where}: {exc.strerror or exc}"
