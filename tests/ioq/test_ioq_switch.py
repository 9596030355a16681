"""The venet-switch data path in C: learning, flooding, unicast, drops and hostile rings."""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vbusfs.ioq import Ioq, IoqEmpty, IoqFault, Switch

HEAD, DESC = 56, 32
COUNT, SLOT = 8, 2048
BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def eth(dst: bytes, src: bytes, payload: bytes = b"x") -> bytes:
    return dst + src + b"\x88\xb5" + payload.ljust(46, b"\0")


@dataclass
class Port:
    """One client of the switch: its north ends and the daemon's south ends."""

    tx_north: Ioq
    tx: Ioq
    rx_north: Ioq
    rx: Ioq

    def send(self, *frames: bytes) -> None:
        assert self.tx_north.send_batch_nowait(list(frames)) == len(frames)

    def received(self) -> list[bytes]:
        try:
            return self.rx_north.receive_batch_nowait(64)
        except IoqEmpty:
            return []

    def close(self) -> None:
        for q in (self.tx, self.tx_north, self.rx, self.rx_north):
            q.close()


def make_port(rx_count: int = COUNT, rx_slot: int = SLOT) -> Port:
    tx_north = Ioq.create(COUNT, SLOT, direction="to_south")
    rx_north = Ioq.create(rx_count, rx_slot, direction="to_north")
    return Port(
        tx_north,
        Ioq.attach(tx_north.fds, direction="to_south"),
        rx_north,
        Ioq.attach(rx_north.fds, direction="to_north"),
    )


@pytest.fixture
def ports() -> Iterator[list[Port]]:
    made = [make_port() for _ in range(3)]
    yield made
    for p in made:
        p.close()


def rings(ports: list[Port]) -> list[Ioq | None]:
    return [p.rx for p in ports]


def test_switch_floods_unknown_to_every_other_port_and_learns(ports: list[Port]) -> None:
    sw = Switch()
    frame = eth(mac(9), mac(1))
    ports[0].send(frame)
    got = sw.forward(0, ports[0].tx, rings(ports))
    assert (got.frames, got.flooded, got.delivered) == (1, 1, (0, 1, 1))
    assert [p.received() for p in ports] == [[], [frame], [frame]]
    assert sw.lookup(mac(1)) == 0 and len(sw) == 1


def test_switch_floods_broadcast_and_multicast_even_when_learned(ports: list[Port]) -> None:
    sw = Switch()
    ports[1].send(eth(mac(9), mac(2)))
    sw.forward(1, ports[1].tx, rings(ports))
    for p in ports:
        p.received()
    group = bytes([1, 0, 0x5E, 0, 0, 1])
    ports[0].send(eth(BROADCAST, mac(1)), eth(group, mac(1)))
    got = sw.forward(0, ports[0].tx, rings(ports))
    assert got.flooded == 2 and got.delivered == (0, 2, 2)
    assert sw.lookup(BROADCAST) is None  # group addresses are never learned


def test_switch_sends_learned_unicast_to_its_port_only(ports: list[Port]) -> None:
    sw = Switch()
    ports[2].send(eth(BROADCAST, mac(3)))
    sw.forward(2, ports[2].tx, rings(ports))
    for p in ports:
        p.received()
    frame = eth(mac(3), mac(1), b"to three")
    ports[0].send(frame)
    got = sw.forward(0, ports[0].tx, rings(ports))
    assert got.flooded == 0 and got.delivered == (0, 0, 1)
    assert [p.received() for p in ports] == [[], [], [frame]]


def test_switch_never_sends_back_to_the_sender(ports: list[Port]) -> None:
    sw = Switch()
    ports[0].send(eth(BROADCAST, mac(1)), eth(mac(1), mac(4)))  # mac 4 is on port 0 too
    got = sw.forward(0, ports[0].tx, rings(ports))
    assert got.filtered == 1 and got.delivered == (0, 1, 1)
    assert ports[0].received() == []


def test_switch_drops_frames_outside_the_ethernet_sizes(ports: list[Port]) -> None:
    sw = Switch()
    ports[0].send(b"short", eth(BROADCAST, mac(1)).ljust(1515, b"z"), eth(BROADCAST, mac(1)))
    got = sw.forward(0, ports[0].tx, rings(ports))
    assert (got.frames, got.bad_size, got.delivered) == (3, 2, (0, 1, 1))
    big = eth(BROADCAST, mac(1)).ljust(1514, b"z")
    ports[0].send(big)
    assert sw.forward(0, ports[0].tx, rings(ports)).bad_size == 0
    assert ports[1].received()[-1] == big


def test_switch_full_destination_drops_only_its_copy() -> None:
    ports = [make_port(), make_port(rx_count=2), make_port()]
    try:
        sw = Switch()
        frames = [eth(BROADCAST, mac(1), b"%d" % i) for i in range(4)]
        ports[0].send(*frames)
        got = sw.forward(0, ports[0].tx, rings(ports))
        assert got.delivered == (0, 2, 4) and got.dropped == (0, 2, 0)
        assert ports[1].received() == frames[:2] and ports[2].received() == frames
    finally:
        for p in ports:
            p.close()


def test_switch_drops_a_copy_its_destination_buffer_cannot_hold() -> None:
    ports = [make_port(), make_port(rx_slot=64), make_port()]
    try:
        sw = Switch()
        big, small = eth(BROADCAST, mac(1), b"b" * 100), eth(BROADCAST, mac(1))
        ports[0].send(big, small)
        got = sw.forward(0, ports[0].tx, rings(ports))
        assert got.delivered == (0, 1, 2) and got.dropped == (0, 1, 0)
        assert ports[1].received() == [small]
    finally:
        for p in ports:
            p.close()


def test_switch_skips_ports_without_a_client(ports: list[Port]) -> None:
    sw = Switch()
    ports[0].send(eth(BROADCAST, mac(1)))
    got = sw.forward(0, ports[0].tx, [ports[0].rx, None, ports[2].rx])
    assert got.delivered == (0, 0, 1)
    assert ports[1].received() == []


def test_switch_floods_to_a_learned_port_that_has_no_client_now(ports: list[Port]) -> None:
    sw = Switch()
    ports[1].send(eth(BROADCAST, mac(2)))
    sw.forward(1, ports[1].tx, rings(ports))
    ports[0].send(eth(mac(2), mac(1)))
    got = sw.forward(0, ports[0].tx, [ports[0].rx, None, ports[2].rx])
    assert got.flooded == 1 and got.delivered == (0, 0, 1)


def test_switch_forgets_a_port(ports: list[Port]) -> None:
    sw = Switch()
    for i, p in enumerate(ports):
        p.send(eth(BROADCAST, mac(i)), eth(BROADCAST, mac(10 + i)))
        sw.forward(i, p.tx, rings(ports))
    assert len(sw) == 6
    assert sw.forget_port(1) == 2
    assert sw.lookup(mac(1)) is None and sw.lookup(mac(11)) is None
    assert [sw.lookup(mac(n)) for n in (0, 10, 2, 12)] == [0, 0, 2, 2]


def test_switch_table_full_stops_learning_and_floods(ports: list[Port]) -> None:
    sw = Switch()
    unlearned = 0
    for base in range(0, Switch.LEARN_MAX + 64, 8):
        ports[1].send(
            *(eth(BROADCAST, b"\x02\x00" + (base + j).to_bytes(4, "big")) for j in range(8))
        )
        unlearned += sw.forward(1, ports[1].tx, rings(ports)).unlearned
        for p in ports:
            p.received()
    assert len(sw) == Switch.LEARN_MAX and unlearned == 64
    late = b"\x02\x00" + (Switch.LEARN_MAX + 1).to_bytes(4, "big")
    ports[0].send(eth(late, mac(1)))
    assert sw.forward(0, ports[0].tx, rings(ports)).flooded == 1  # not learned: flooded


def test_switch_moves_a_learned_address_to_its_new_port(ports: list[Port]) -> None:
    sw = Switch()
    ports[0].send(eth(BROADCAST, mac(5)))
    sw.forward(0, ports[0].tx, rings(ports))
    ports[2].send(eth(BROADCAST, mac(5)))
    sw.forward(2, ports[2].tx, rings(ports))
    assert sw.lookup(mac(5)) == 2


def test_switch_empty_source_raises_empty(ports: list[Port]) -> None:
    with pytest.raises(IoqEmpty):
        Switch().forward(0, ports[0].tx, rings(ports))


def test_switch_takes_at_most_max_messages(ports: list[Port]) -> None:
    sw = Switch()
    ports[0].send(*(eth(BROADCAST, mac(1)) for _ in range(5)))
    assert sw.forward(0, ports[0].tx, rings(ports), max_messages=3).frames == 3
    assert sw.forward(0, ports[0].tx, rings(ports)).frames == 2


def test_switch_refuses_bad_arguments(ports: list[Port]) -> None:
    sw = Switch()
    with pytest.raises(ValueError):
        sw.forward(3, ports[0].tx, rings(ports))
    with pytest.raises(ValueError):
        sw.forward(0, ports[0].rx, rings(ports))  # not a to_south ring
    with pytest.raises(ValueError):
        sw.forward(0, ports[0].tx, [ports[0].rx, ports[1].tx])  # not a to_north ring
    with pytest.raises(ValueError):
        sw.forward(0, ports[0].tx, [ports[0].rx, ports[1].rx, ports[1].rx])  # one ring twice
    with pytest.raises(ValueError):
        sw.forward(0, ports[0].tx, [])
    with pytest.raises(ValueError):
        sw.forward(0, ports[0].tx, rings(ports), max_messages=0)
    with pytest.raises(ValueError):
        sw.forget_port(Switch.MAX_PORTS)
    with pytest.raises(ValueError):
        sw.lookup(b"\x01")


FORGERIES = {
    "ptr-past-end": ("<Q", HEAD + 8, COUNT * SLOT),
    "len-past-end": ("<Q", HEAD + 16, COUNT * SLOT + 1),
    "ptr-plus-len-wraps": ("<QQ", HEAD + 8, 2**64 - 8, 16),
    "sown-not-a-bit": ("<B", HEAD + 25, 7),
}


@pytest.mark.parametrize("how", FORGERIES)
def test_switch_forged_source_ring_faults_and_copies_nothing(ports: list[Port], how: str) -> None:
    sw = Switch()
    ports[0].send(eth(BROADCAST, mac(1)))
    fmt, offset, *values = FORGERIES[how]
    with mmap.mmap(ports[0].tx_north.fds.ring, HEAD + DESC * COUNT) as ring:
        struct.pack_into(fmt, ring, offset, *values)
    with pytest.raises(IoqFault):
        sw.forward(0, ports[0].tx, rings(ports))
    assert ports[0].tx.faulted and not any(p.rx.faulted for p in ports)
    assert [p.received() for p in ports] == [[], [], []]
    assert len(sw) == 0


@pytest.mark.parametrize("how", FORGERIES)
def test_switch_forged_destination_ring_is_that_destinations_fault(
    ports: list[Port], how: str
) -> None:
    sw = Switch()
    fmt, offset, *values = FORGERIES[how]
    with mmap.mmap(ports[1].rx_north.fds.ring, HEAD + DESC * COUNT) as ring:
        struct.pack_into(fmt, ring, offset, *values)
    frame = eth(BROADCAST, mac(1))
    ports[0].send(frame)
    got = sw.forward(0, ports[0].tx, rings(ports))  # no exception: the sender is fine
    assert got.faulted == (1,) and got.delivered == (0, 0, 1) and got.dropped == (0, 1, 0)
    assert ports[1].rx.faulted and not ports[0].tx.faulted
    assert ports[2].received() == [frame]
    ports[0].send(frame)  # the switch goes on serving the others
    assert sw.forward(0, ports[0].tx, rings(ports)).delivered == (0, 0, 1)
