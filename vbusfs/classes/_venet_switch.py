"""venet-switch: one device on several buses, frames switched between them by MAC.

Its type, attribute tables (behaviour §4, "other built-in classes") and data path sit
here together. Each link into a bus is a port with its own `client_mac`; the
device's `ports` lists them. The switching is C's (:class:`vbusfs.ioq.Switch`):
a batch per call goes from one client's transmit ring straight into the buffers
the other clients posted on their receive rings, on a thread of the device's own
(:class:`vbusfs.ioq.SwitchRunner`, started at the first LINKUP, stopped with the
device) that sleeps on every linked port's transmit ring, never on the daemon's
event loop. Each port keeps its client's format (SG granted: a virtio-net header
first); C converts between formats.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, field

from vbusfs.ioq import RunCounts, Switch, SwitchRunner
from vbusfs.model import Attribute, Busy, InterfaceInfo, VbusError

from ._venet_common import (
    BURSTTHRESH,
    CLIENT_MAC,
    MAX_POLL_US,
    MTU,
    TXMITIGATION,
    Tuning,
    VenetClass,
    VenetConnection,
    fault_error,
    heard,
    random_mac,
    stop_waiting,
)


@dataclass(eq=False)
class SwitchPort:
    """One interface of a switch: its own client MAC and client count."""

    name: str
    client_mac: bytes
    clients: int = 0


@dataclass(eq=False)
class SwitchState:
    name: str
    ports: dict[str, SwitchPort] = field(default_factory=dict)
    # port name -> the client connected to it
    connections: dict[str, SwitchConnection] = field(default_factory=dict)
    # port name -> the small index its client has in `switch` (while connected)
    indices: dict[str, int] = field(default_factory=dict)
    # the data path: learned MAC -> port index, and forwarding in C
    switch: Switch = field(default_factory=Switch)
    tuning: Tuning = field(default_factory=Tuning)
    # the forwarding thread, started at the first LINKUP, stopped with the device
    runner: SwitchRunner | None = None

    def start(self) -> SwitchRunner:
        if self.runner is None:
            self.runner = SwitchRunner(self.switch, self._spin())
            self.tuning.listeners.append(self._retune)
        return self.runner

    def _spin(self) -> int:
        return min(self.tuning.burstthresh, MAX_POLL_US)

    def _retune(self) -> None:
        if self.runner is not None:
            self.runner.tune(self._spin(), max(1, self.tuning.txmitigation))

    def forget(self, index: int) -> None:
        """Forget every address learned on port `index` (the thread kept out meanwhile)."""
        if self.runner is None:
            self.switch.forget_port(index)
            return
        with self.runner.locked():
            self.switch.forget_port(index)

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


def _show_ports(state: SwitchState) -> str:
    return " ".join(state.ports)


class VenetSwitch(VenetClass):
    """A virtual Ethernet switch: one device on several buses, frames switched by MAC."""

    name = "venet-switch"
    multi_bus = True
    attributes = (
        Attribute(
            "ports",
            _show_ports,
            None,
            "The connected interfaces, as <bus>.<id>, separated by spaces.",
        ),
        MTU,
        BURSTTHRESH,
        TXMITIGATION,
    )
    interface_attributes = (CLIENT_MAC,)

    def create(self, device_name: str) -> SwitchState:
        return SwitchState(device_name)

    def attach(self, state: SwitchState, interface: InterfaceInfo) -> SwitchPort:
        port = SwitchPort(interface.name, random_mac(self._rng))
        state.ports[interface.name] = port
        return port

    def detach(self, state: SwitchState, interface_state: SwitchPort) -> None:
        state.ports.pop(interface_state.name, None)
        index = state.indices.get(interface_state.name)
        if index is not None:  # its client is dropped too; nothing goes there meanwhile
            state.forget(index)

    def destroy(self, state: SwitchState) -> None:
        state.stop()

    def open(
        self, state: SwitchState, interface_state: SwitchPort, version: int
    ) -> SwitchConnection:
        return SwitchConnection(state, interface_state)


class SwitchConnection(VenetConnection[SwitchPort]):
    """One port's client: frames are switched to the other ports by learned MAC.

    The switching runs on the switch's own C thread (:class:`vbusfs.ioq.SwitchRunner`),
    which sleeps on the linked ports' transmit rings: Python only hands it a port's rings
    at LINKUP and takes them back at LINKDOWN and close (before they are closed), and
    reads its counts. Each connected port has a small index, stable while its client
    stays (``indices``). A ring the thread finds broken is heard of on the connection's
    own fault eventfd, which the thread writes (:meth:`move` waits on it: nothing polls).
    """

    def __init__(self, switch: SwitchState, port: SwitchPort) -> None:
        super().__init__(port, switch.tuning)
        try:
            used = set(switch.indices.values())
            free = [i for i in range(Switch.MAX_PORTS) if i not in used]
            if not free:
                raise Busy(f"the switch has {Switch.MAX_PORTS} clients already")
            try:
                # this connection's own (made last: nothing to undo after it); no other
                # task ever waits on it
                fault = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            except OSError as exc:  # out of descriptors
                why = f"cannot open {port.name}: {exc}"
                raise VbusError(why, errno=exc.errno or errno.EAGAIN) from None
        except BaseException:  # refused: nothing changed
            port.clients -= 1  # undo super().__init__'s claim
            switch.tuning.clients -= 1
            raise
        self._fault = fault
        self.switch = switch
        self.port = port
        self.index = free[0]
        switch.indices[port.name] = self.index
        switch.connections[port.name] = self

    def linked(self) -> None:
        runner = self.switch.start()
        with runner.locked():
            # this port's format in C: frames to and from it are converted there
            self.switch.switch.set_port(self.index, header=self.sg, max_len=self.max_frame)
        runner.set_port(self.index, self.tx, self.rx, self.every(), self._fault)

    def unlinked(self) -> None:
        self._let_go()

    def _let_go(self) -> None:
        """The thread lets this port's rings go; what it counted is kept here."""
        runner = self.switch.runner
        if runner is None:
            return
        for name, value in self._counted(runner).items():
            self.counters[name] += value
        runner.set_port(self.index, None, None)

    @staticmethod
    def _mapped(got: RunCounts) -> dict[str, int]:
        return {
            "tx_frames": got.tx_frames,
            "oversize": got.bad_size,
            "gso_dropped": got.gso_dropped,
            "gso_segmented": got.gso_segmented,
            "tx_signals": got.signals,
            "rx_frames": got.rx_delivered,
            "dropped": got.rx_dropped,
            "polled": got.polled,
            "slept": got.slept,
        }

    def _counted(self, runner: SwitchRunner) -> dict[str, int]:
        return self._mapped(runner.counts(self.index))

    def stats(self) -> dict[str, int]:
        stats = dict(self.counters)
        runner = self.switch.runner
        if runner is not None and self.link_up and not self._closed:
            for name, value in self._counted(runner).items():
                stats[name] += value
        return stats

    def flush_rx(self) -> int:
        runner = self.switch.runner
        if runner is None:
            return super().flush_rx()
        with runner.locked():  # the thread may be filling this ring's buffers
            return super().flush_rx()

    async def move(self) -> None:
        # the frames move on the switch's thread; here only a broken ring is heard of
        while not self._closed:
            if not await heard(self._fault):
                return  # closed meanwhile
            if self._closed:  # readable, then closed before this task ran: the fd is gone
                return
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._fault)
            runner = self.switch.runner
            if runner is None or not self.link_up:
                continue  # the port was let go meanwhile: its fault went with it
            faulted = runner.counts(self.index).faulted
            if faulted:
                raise fault_error(faulted)

    def close(self) -> None:
        if not self._closed:
            self._let_go()  # before the rings close: the thread must be done with them
            # the thread has let go of the fault fd too; move() may be waiting on it
            stop_waiting(self._fault)
            os.close(self._fault)
        if self.switch.connections.get(self.port.name) is self:
            del self.switch.connections[self.port.name]
            del self.switch.indices[self.port.name]
            self.switch.forget(self.index)
        super().close()
