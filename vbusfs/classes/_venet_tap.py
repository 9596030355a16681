"""venet-tap: a virtual Ethernet device whose host side is a Linux TAP interface.

Its type, attribute table (behaviour §4, "venet-tap attributes") and data path sit
here together. It is the only built-in class that touches the host: a TAP
interface is made (through the class's `open_tap` factory, ``_tap`` by default)
when `enabled` goes 0 -> 1, and removed on 1 -> 0 or when the device is
destroyed. Frames move between the client's rings and the TAP's descriptor in
C, a batch per call; Python only waits and counts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from vbusfs.connector.venet import HEADER, MAX_FRAME
from vbusfs.ioq import IoqEmpty, IoqFault, IoqFull
from vbusfs.model import Attribute, VbusError

from ._tap import TapInterface
from ._venet_common import (
    BATCH,
    CLIENT_MAC,
    HOST_MAC,
    SPIN_US,
    VenetClass,
    VenetConnection,
    VenetState,
    parse_bool,
    parse_u32,
    random_mac,
    show_enabled,
)

log = logging.getLogger("vbusfs.venet")

DEFAULT_BURSTTHRESH_US = 20


class HostTap(Protocol):
    """What a venet-tap device holds as its host interface (a :class:`TapInterface`)."""

    fd: int  # -1 when there is no descriptor to move frames through
    name: str

    def discard(self, max_frames: int) -> int: ...

    def close(self) -> None: ...


#: makes the host interface for a device's host MAC; raises a VbusError to refuse
TapFactory = Callable[[bytes], HostTap]


@dataclass(eq=False)
class VenetTapState(VenetState):
    burstthresh: int = DEFAULT_BURSTTHRESH_US
    tap: HostTap | None = None
    open_tap: TapFactory = TapInterface.open


def _store_enabled(state: VenetTapState, text: str) -> None:
    enable = parse_bool(text)
    if enable == state.enabled:
        return
    if enable:
        try:
            state.tap = state.open_tap(state.host_mac)  # refuses with the host's errno
        except VbusError as exc:
            # The writer sees only the errno: the daemon's log says why (a host problem).
            log.warning("device %s: cannot enable: %s", state.name, exc)
            raise
        state.enabled = True
    else:
        _close_tap(state)


def _close_tap(state: VenetTapState) -> None:
    if state.tap is not None:
        state.tap.close()
        state.tap = None
    state.enabled = False


def _show_ifname(state: VenetTapState) -> str:
    return state.tap.name if state.tap is not None else "<disabled>"


def _show_burstthresh(state: VenetTapState) -> str:
    return str(state.burstthresh)


def _store_burstthresh(state: VenetTapState, text: str) -> None:
    state.burstthresh = parse_u32(text)


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
        Attribute(
            "burstthresh",
            _show_burstthresh,
            _store_burstthresh,
            "Interrupt mitigation threshold in microseconds.",
        ),
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
        return TapConnection(state)


class TapConnection(VenetConnection[VenetTapState]):
    """Frames between the client and the host TAP interface (while `enabled` is 1).

    Frames move between the rings and the TAP's descriptor in C, a batch per
    call (one write or read per frame, straight from or into the data
    segment); Python only waits and counts.
    """

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
            await self.tx.wait_receivable(spin_us=SPIN_US)
            fd = self._tap_fd()
            try:
                if fd < 0:
                    # no host interface: dropped in place, never copied
                    got_n = self.tx.discard_nowait(BATCH)
                    self.counters["tx_frames"] += got_n
                    self.counters["dropped"] += got_n
                    continue
                got = self.tx.receive_to_fd_nowait(
                    fd, BATCH, min_length=HEADER, max_length=MAX_FRAME
                )
            except IoqEmpty:
                continue
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
                got = self.rx.send_from_fd_nowait(fd, BATCH, max_length=MAX_FRAME)
            except IoqFull:
                # no buffer posted: the frames wait in the TAP's queue meanwhile
                await self.rx.wait_sendable(spin_us=SPIN_US)
                continue
            except IoqFault:
                raise
            except OSError:
                await trio.sleep(0.05)  # the TAP refused a read (being torn down)
                continue
            self.counters["rx_frames"] += got.messages
            self.counters["oversize"] += got.bad_size
