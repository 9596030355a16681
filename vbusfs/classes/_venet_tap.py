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

import contextlib
import errno
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from vbusfs.connector import venet as abi
from vbusfs.ioq import IoqFault, TapCounts, TapRunner
from vbusfs.model import Attribute, VbusError

from ._tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TapInterface
from ._venet_common import (
    BATCH,
    BURSTTHRESH,
    CLIENT_MAC,
    HOST_MAC,
    MAX_POLL_US,
    MTU,
    TXMITIGATION,
    Tuning,
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


def tun_offloads(granted_sg: int) -> int | None:
    """TUNSETOFFLOAD bits for a client's granted SG group (None: bare frames)."""
    if not granted_sg & abi.CAP_SG:
        return None
    bits = TUN_F_CSUM
    if granted_sg & abi.CAP_TSO4:
        bits |= TUN_F_TSO4
    if granted_sg & abi.CAP_TSO6:
        bits |= TUN_F_TSO6
    if granted_sg & abi.CAP_ECN and bits & (TUN_F_TSO4 | TUN_F_TSO6):
        bits |= TUN_F_TSO_ECN
    return bits


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


class TapConnection(VenetConnection[VenetTapState]):
    """Frames between the client and the host TAP interface (while `enabled` is 1).

    They move on a C thread of the connection's own (:class:`vbusfs.ioq.TapRunner`,
    started once both queues are attached, stopped before they close): one write or
    read per frame, straight from or into the data segment, polling for burstthresh,
    then sleeping on the rings and the TAP. Python only tells it the TAP's descriptor,
    the link and the sizes (and changes the TAP only with the thread kept out), and
    reads its counts; the loop here waits for a ring it found broken.
    """

    def __init__(self, owner: VenetTapState, tuning: Tuning) -> None:
        super().__init__(owner, tuning)
        self.runner: TapRunner | None = None

    def attach_queue(self, index: int, fds: Sequence[int]) -> None:
        super().attach_queue(index, fds)
        if self.rx is not None and self.tx is not None and self.runner is None:
            try:
                self.runner = TapRunner(self.tx, self.rx)
            except OSError as exc:  # no thread or descriptor to be had: refused
                ioq = self.rx if index == abi.RX_QUEUE else self.tx
                ioq.close()
                if index == abi.RX_QUEUE:
                    self.rx = None
                else:
                    self.tx = None
                why = f"cannot start the data path of {self.owner.name}: {exc}"
                raise VbusError(why, errno=exc.errno or errno.EAGAIN) from None
            self.tuning.listeners.append(self.configure)
            self.configure()

    def configure(self) -> None:
        """Tell the thread what it moves now (the TAP, the link, sizes, tuning)."""
        if self.runner is None or self._closed:
            return
        self.runner.configure(
            tap_fd=self._tap_fd(),
            link_up=self.link_up,
            min_length=self.min_frame,
            max_length=self.max_frame,
            every=min(BATCH, self.every()),
            spin_us=min(self.tuning.burstthresh, MAX_POLL_US),
        )

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
        offloads = tun_offloads(self.granted.get(abi.CAP_GROUP_SG, 0)) if self.sg else None
        tap = self.owner.tap
        if tap is not None:
            with self.host_changing():
                _set_offloads(tap, offloads)  # refuses LINKUP with the host's errno
        self.owner.offloads = offloads

    def call(self, function: int, data: bytes) -> bytes:
        reply = super().call(function, data)
        if function in (abi.LINKUP, abi.LINKDOWN):
            self.configure()  # the link and its frame sizes, now that they are set
        return reply

    def carrier(self) -> bool:
        return self.owner.enabled

    def flush_rx(self) -> int:
        if self.runner is None:
            return super().flush_rx()
        with self.runner.locked():  # the thread may be filling this ring's buffers
            return super().flush_rx()

    def stats(self) -> dict[str, int]:
        stats = dict(self.counters)
        if self.runner is not None and not self._closed:
            for name, value in _mapped(self.runner.counts()).items():
                stats[name] += value
        return stats

    def close(self) -> None:
        if not self._closed and self.runner is not None:
            runner, self.runner = self.runner, None
            with contextlib.suppress(ValueError):
                self.tuning.listeners.remove(self.configure)
            with contextlib.suppress(RuntimeError):  # move() may wait on it
                trio.lowlevel.notify_closing(runner.fault_fd)
            for name, value in _mapped(runner.counts()).items():
                self.counters[name] += value
            runner.close()  # before the rings close: the thread must be done with them
        if self.owner.connection is self:
            self.owner.connection = None
            self.owner.offloads = None  # a TAP enabled from now on is bare again
        super().close()

    async def move(self) -> None:
        # the frames move on the runner's thread; here only a broken ring is heard of
        runner = self.runner
        if runner is None:
            return
        try:
            await trio.lowlevel.wait_readable(runner.fault_fd)
        except (trio.ClosedResourceError, ValueError):
            return  # closed meanwhile
        faulted = runner.counts().faulted if runner.running else 0
        if faulted:
            which = "transmit" if faulted & 1 else "receive"
            raise IoqFault(errno.EPROTO, f"the {which} queue broke the protocol")

    def _tap_fd(self) -> int:
        """The host interface's descriptor, or -1 while there is none (disabled)."""
        tap = self.owner.tap
        return -1 if tap is None else int(tap.fd)


def _mapped(got: TapCounts) -> dict[str, int]:
    return {
        "tx_frames": got.tx_frames,
        "tx_signals": got.tx_signals,
        "rx_frames": got.rx_frames,
        "oversize": got.oversize,
        "dropped": got.dropped,
        "polled": got.polled,
        "slept": got.slept,
    }
