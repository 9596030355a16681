"""venet-switch: one device on several buses, frames switched between them by MAC.

Its type, attribute tables (behaviour §4, "other built-in classes") and data path sit
here together. Each link into a bus is a port with its own `client_mac`; the
device's `ports` lists them. The switching is C's (:class:`vbusfs.ioq.Switch`):
a batch per call goes from one client's transmit ring straight into the buffers
the other clients posted on their receive rings. Each port keeps its client's
format (SG granted: a virtio-net header first); C converts between formats.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import trio

from vbusfs.ioq import IoqEmpty, IoqFault, Switch
from vbusfs.model import Attribute, Busy, InterfaceInfo

from ._venet_common import (
    BATCH,
    BURSTTHRESH,
    CLIENT_MAC,
    MTU,
    TXMITIGATION,
    Tuning,
    VenetClass,
    VenetConnection,
    random_mac,
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
            state.switch.forget_port(index)

    def open(
        self, state: SwitchState, interface_state: SwitchPort, version: int
    ) -> SwitchConnection:
        return SwitchConnection(state, interface_state)


class SwitchConnection(VenetConnection[SwitchPort]):
    """One port's client: frames are switched to the other ports by learned MAC.

    Python only waits, hands over the rings and counts. Each connected port has
    a small index, stable while its client stays (``indices``).
    """

    def __init__(self, switch: SwitchState, port: SwitchPort) -> None:
        super().__init__(port, switch.tuning)
        used = set(switch.indices.values())
        free = [i for i in range(Switch.MAX_PORTS) if i not in used]
        if not free:
            port.clients -= 1  # undo super().__init__'s claim
            switch.tuning.clients -= 1
            raise Busy(f"the switch has {Switch.MAX_PORTS} clients already")
        self.switch = switch
        self.port = port
        self.index = free[0]
        switch.indices[port.name] = self.index
        switch.connections[port.name] = self
        # set by another port's forward when this client's receive ring is found broken
        self._rx_broken = False
        self._wake = trio.CancelScope()

    def linked(self) -> None:
        # this port's format in C: frames to and from it are converted there
        self.switch.switch.set_port(self.index, header=self.sg, max_len=self.max_frame)

    def _peers(self) -> list[SwitchConnection | None]:
        """The connected clients, by port index."""
        indices = self.switch.indices
        peers: list[SwitchConnection | None] = [None] * (max(indices.values()) + 1)
        for name, index in indices.items():
            peers[index] = self.switch.connections.get(name)
        return peers

    def _break_rx(self) -> None:
        """This client's receive ring broke the protocol: its own run ends with IoqFault."""
        self._rx_broken = True
        self._wake.cancel()

    async def move(self) -> None:
        assert self.tx is not None
        forward = self.switch.switch.forward
        while True:
            if self._rx_broken:
                raise IoqFault(errno.EPROTO, "the receive queue broke the protocol")
            self._wake = trio.CancelScope()
            with self._wake:
                await self.wait_transmitted()
            if self._rx_broken:
                continue
            peers = self._peers()
            rings = [
                None
                if p is None or not p.link_up or p.rx is None or p.rx.closed or p.rx.faulted
                else p.rx
                for p in peers
            ]
            try:
                # IoqFault here is this client's transmit ring: it goes, the others stay;
                # its slots go back every txmitigation frames copied
                got = forward(self.index, self.tx, rings, BATCH, signal_every=self.every())
            except IoqEmpty:
                continue
            self.counters["tx_signals"] += got.signals
            self.counters["tx_frames"] += got.frames
            self.counters["oversize"] += got.bad_size
            self.counters["gso_dropped"] += got.gso_dropped
            for peer, delivered, dropped in zip(peers, got.delivered, got.dropped, strict=True):
                if peer is not None and (delivered or dropped):
                    peer.counters["rx_frames"] += delivered
                    peer.counters["dropped"] += dropped
            for index in got.faulted:
                peer = peers[index]
                if peer is not None:
                    peer._break_rx()

    def close(self) -> None:
        if self.switch.connections.get(self.port.name) is self:
            del self.switch.connections[self.port.name]
            del self.switch.indices[self.port.name]
            self.switch.switch.forget_port(self.index)
        super().close()
