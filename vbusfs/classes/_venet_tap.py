"""venet-tap: a virtual Ethernet device whose host side is a Linux TAP interface.

Its type, attribute table (behaviour §4, "venet-tap attributes") and data path sit
here together. It is the only built-in class that touches the host: a TAP
interface is made (through the class's `open_tap` factory, ``_tap`` by default)
when `enabled` goes 0 -> 1, and removed on 1 -> 0 or when the device is
destroyed. Frames move between the client's rings and the TAP's descriptor in
C, a batch per call; Python only waits and counts.

Offloads: at LINKUP the TAP's header mode follows the client's NEGCAP (SG
granted: IFF_VNET_HDR, with TUNSETOFFLOAD's CSUM and the granted TSO4, TSO6 and
ECN), so large segments and their virtio-net headers go TAP <-> ring with no
rewriting. The TAP is re-attached then (same interface) only if the mode changes;
one enabled while a client is linked is made in that client's mode. `enabled`
is the carrier a client that negotiated EVQ_LINKSTATE hears about.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from vbusfs.connector import venet as abi
from vbusfs.ioq import IoqEmpty, IoqFault, IoqFull, receive_to_fd_every
from vbusfs.model import Attribute, VbusError

from ._tap import TapInterface
from ._venet_common import (
    BATCH,
    BURSTTHRESH,
    CLIENT_MAC,
    HOST_MAC,
    MTU,
    TXMITIGATION,
    VenetClass,
    VenetConnection,
    VenetState,
    parse_bool,
    random_mac,
    show_enabled,
)

log = logging.getLogger("vbusfs.venet")


class HostTap(Protocol):
    """What a venet-tap device holds as its host interface (a :class:`TapInterface`)."""

    fd: int  # -1 when there is no descriptor to move frames through
    name: str

    def discard(self, max_frames: int) -> int: ...

    def close(self) -> None: ...


#: makes the host interface for a device's host MAC; raises a VbusError to refuse.
#: A host interface with `set_offloads(bits | None)` (a TapInterface) follows the
#: client's header mode; one without (the testing fakes) stays bare.
TapFactory = Callable[[bytes], HostTap]


@dataclass(eq=False)
class VenetTapState(VenetState):
    tap: HostTap | None = None
    open_tap: TapFactory = TapInterface.open
    # the linked client's header mode (tun_offloads), and the client to tell of carrier
    offloads: int | None = None
    connection: TapConnection | None = None


def _set_offloads(tap: HostTap, offloads: int | None) -> None:
    switch = getattr(tap, "set_offloads", None)
    if switch is not None:
        switch(offloads)


def _store_enabled(state: VenetTapState, text: str) -> None:
    enable = parse_bool(text)
    if enable == state.enabled:
        return
    if enable:
        try:
            tap = state.open_tap(state.host_mac)  # refuses with the host's errno
            if state.offloads is not None:
                try:
                    _set_offloads(tap, state.offloads)
                except VbusError:
                    tap.close()
                    raise
        except VbusError as exc:
            # The writer sees only the errno: the daemon's log says why (a host problem).
            log.warning("device %s: cannot enable: %s", state.name, exc)
            raise
        state.tap = tap
        state.enabled = True
    else:
        _close_tap(state)
    if state.connection is not None:
        state.connection.tell_carrier()


def _close_tap(state: VenetTapState) -> None:
    if state.tap is not None:
        state.tap.close()
        state.tap = None
    state.enabled = False


def _show_ifname(state: VenetTapState) -> str:
    return state.tap.name if state.tap is not None else "<disabled>"


class VenetTap(VenetClass):
    """A virtual Ethernet device whose host side is a Linux TAP interface."""

    name = "venet-tap"
    attributes = (
        CLIENT_MAC,
        Attribute(
            "enabled",
            show_enabled,
            _store_enabled,
            "1 creates the host TAP interface, 0 removes it.",
        ),
        HOST_MAC,
        Attribute("ifname", _show_ifname, None, "Name of the host TAP interface, or <disabled>."),
        BURSTTHRESH,
        MTU,
        TXMITIGATION,
    )

    def __init__(
        self, rng: random.Random | None = None, open_tap: TapFactory | None = None
    ) -> None:
        super().__init__(rng)
        self._open_tap: TapFactory = open_tap if open_tap is not None else TapInterface.open

    def create(self, device_name: str) -> VenetTapState:
        return VenetTapState(
            device_name,
            host_mac=random_mac(self._rng),
            client_mac=random_mac(self._rng),
            open_tap=self._open_tap,
        )

    def destroy(self, state: VenetTapState) -> None:
        _close_tap(state)

    def open(self, state: VenetTapState, interface_state: None, version: int) -> TapConnection:
        connection = TapConnection(state, state.tuning)
        state.connection = connection
        return connection


class TapConnection(VenetConnection[VenetTapState]):
    """Frames between the client and the host TAP interface (while `enabled` is 1).

    Frames move between the rings and the TAP's descriptor in C, a batch per
    call (one write or read per frame, straight from or into the data
    segment); Python only waits and counts.
    """

    def linked(self) -> None:
        offloads = abi.tun_offloads(self.granted.get(abi.CAP_GROUP_SG, 0)) if self.sg else None
        tap = self.owner.tap
        if tap is not None:
            _set_offloads(tap, offloads)  # refuses LINKUP with the host's errno
        self.owner.offloads = offloads

    def carrier(self) -> bool:
        return self.owner.enabled

    def close(self) -> None:
        if self.owner.connection is self:
            self.owner.connection = None
            self.owner.offloads = None  # a TAP enabled from now on is bare again
        super().close()

    async def move(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._to_host)
            nursery.start_soon(self._from_host)

    def _tap_fd(self) -> int:
        """The host interface's descriptor, or -1 while there is none (disabled)."""
        tap = self.owner.tap
        return -1 if tap is None else int(tap.fd)

    async def _to_host(self) -> None:
        assert self.tx is not None
        while True:
            await self.wait_transmitted()
            fd = self._tap_fd()
            try:
                if fd < 0:
                    # no host interface: dropped in place, never copied (a call signals
                    # once: txmitigation frames a call)
                    got_n = self.tx.discard_nowait(min(BATCH, self.every()))
                    self.counters["tx_frames"] += got_n
                    self.counters["dropped"] += got_n
                    self.counters["tx_signals"] += 1
                    continue
                # completions go back every txmitigation frames written
                got, signals = receive_to_fd_every(
                    self.tx,
                    fd,
                    BATCH,
                    self.every(),
                    min_length=self.min_frame,
                    max_length=self.max_frame,
                )
            except IoqEmpty:
                continue
            self.counters["tx_signals"] += signals
            self.counters["tx_frames"] += got.messages
            self.counters["oversize"] += got.bad_size
            self.counters["dropped"] += got.dropped

    async def _from_host(self) -> None:
        assert self.rx is not None
        while True:
            tap = self.owner.tap
            fd = self._tap_fd()
            if tap is None or fd < 0:
                await trio.sleep(0.05)  # disabled: the host side has no interface yet
                continue
            try:
                await trio.lowlevel.wait_readable(fd)
            except (trio.ClosedResourceError, OSError):
                continue  # disabled while waiting
            if self.owner.tap is not tap or tap.fd != fd:
                continue  # disabled or replaced while waiting
            if not self.link_up:
                tap.discard(BATCH)  # the client is not listening: the host's frames go nowhere
                continue
            try:
                got = self.rx.send_from_fd_nowait(fd, BATCH, max_length=self.max_frame)
            except IoqFull:
                # no buffer posted: the frames wait in the TAP's queue meanwhile
                await self.wait_posted()
                continue
            except IoqFault:
                raise
            except OSError:
                await trio.sleep(0.05)  # the TAP refused a read (being torn down)
                continue
            self.counters["rx_frames"] += got.messages
            self.counters["oversize"] += got.bad_size
