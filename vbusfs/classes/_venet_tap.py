"""venet-tap: a virtual Ethernet device whose host side is a Linux TAP interface.

Its type, attribute table (behaviour §4, "venet-tap attributes") and data path sit
here together. It is the only built-in class that touches the host: a TAP
interface is made (through the class's `open_tap` factory, ``_tap`` by default)
when `enabled` goes 0 -> 1, and removed on 1 -> 0 or when the device is
destroyed. Frames move between the client's rings and the TAP's descriptor on
a C thread of the connection's own (``_venet_thread``), never on the daemon's
event loop; Python only tells it the TAP and the link, and counts.

Offloads: at LINKUP the TAP's header mode follows the client's NEGCAP (SG
granted: IFF_VNET_HDR, with TUNSETOFFLOAD's CSUM and the granted TSO4, TSO6 and
ECN), so large segments and their virtio-net headers go TAP <-> ring with no
rewriting. The TAP is re-attached then (same interface) only if the mode changes;
one enabled while a client is linked is made in that client's mode. `enabled`
is the carrier a client that negotiated EVQ_LINKSTATE hears about.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from vbusfs.connector import venet as abi
from vbusfs.model import Attribute, VbusError

from ._tap import TapInterface
from ._venet_common import (
    BURSTTHRESH,
    CLIENT_MAC,
    HOST_MAC,
    MTU,
    TXMITIGATION,
    VenetClass,
    VenetState,
    parse_bool,
    random_mac,
    show_enabled,
)
from ._venet_thread import ThreadedConnection

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
        with _host_changing(state):
            state.tap = tap
            state.enabled = True
    else:
        with _host_changing(state):
            _close_tap(state)
    if state.connection is not None:
        state.connection.tell_carrier()


def _host_changing(state: VenetTapState) -> contextlib.AbstractContextManager[None]:
    """Around a change of the device's TAP: its client's thread kept out, then told."""
    connection = state.connection
    return connection.host_changing() if connection is not None else contextlib.nullcontext()


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
        with _host_changing(state):
            _close_tap(state)

    def open(self, state: VenetTapState, interface_state: None, version: int) -> TapConnection:
        connection = TapConnection(state, state.tuning)
        state.connection = connection
        return connection


class TapConnection(ThreadedConnection[VenetTapState]):
    """Frames between the client and the host TAP interface (while `enabled` is 1).

    They move on a C thread of the connection's own (:class:`ThreadedConnection`): one
    write or read per frame, straight from or into the data segment. The TAP is changed
    (enabled, disabled, re-attached for a header mode) only with the thread kept out
    (:meth:`host_changing`), which is then told the new descriptor.
    """

    def target(self) -> tuple[int, bool]:
        tap = self.owner.tap
        return (-1 if tap is None else int(tap.fd)), False

    @contextlib.contextmanager
    def host_changing(self) -> Iterator[None]:
        """The TAP may be closed or replaced inside: the thread is kept out, then told."""
        if self.runner is None or self._closed:
            yield
            return
        with self.runner.locked():
            try:
                yield
            finally:
                self.configure()

    def linked(self) -> None:
        offloads = abi.tun_offloads(self.granted.get(abi.CAP_GROUP_SG, 0))  # None without SG
        tap = self.owner.tap
        if tap is not None:
            with self.host_changing():
                _set_offloads(tap, offloads)  # refuses LINKUP with the host's errno
        self.owner.offloads = offloads

    def carrier(self) -> bool:
        return self.owner.enabled

    def close(self) -> None:
        super().close()  # the thread stops first, then the rings close
        if self.owner.connection is self:
            self.owner.connection = None
            self.owner.offloads = None  # a TAP enabled from now on is bare again
