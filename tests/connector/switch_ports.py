"""A venet-switch's ports as the switch's C tests drive them (imported by name: the test
directory is on sys.path): each port's two rings with both of their ends, and a batch
forwarded from one port to all the others."""

from __future__ import annotations

from dataclasses import dataclass

from vbusfs.connector import venet as abi
from vbusfs.ioq import Ioq, IoqEmpty, Switch


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


@dataclass
class Port:
    """A port's transmit and receive rings: the client's end (`_north`) and the switch's."""

    tx_north: Ioq
    tx: Ioq
    rx_north: Ioq
    rx: Ioq

    def received(self) -> list[bytes]:
        """Every frame the switch delivered to this port's client so far."""
        try:
            return self.rx_north.receive_batch_nowait(256)
        except IoqEmpty:
            return []

    def close(self) -> None:
        for q in (self.tx, self.tx_north, self.rx, self.rx_north):
            q.close()


def make_port(
    rx_count: int, rx_slot: int, *, tx_count: int = 4, tx_slot: int = abi.MAX_SG_MESSAGE
) -> Port:
    tx_north = Ioq.create(tx_count, tx_slot, direction="to_south")
    rx_north = Ioq.create(rx_count, rx_slot, direction="to_north")
    return Port(
        tx_north,
        Ioq.attach(tx_north.fds, direction="to_south"),
        rx_north,
        Ioq.attach(rx_north.fds, direction="to_north"),
    )


def send(sw: Switch, ports: list[Port], src: int, *messages: bytes):
    """`messages` sent by port `src`'s client, then one forward of them to the others."""
    ports[src].tx_north.send_batch_nowait(list(messages))
    return sw.forward(src, ports[src].tx, [p.rx for p in ports])
