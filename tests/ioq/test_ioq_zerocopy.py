"""Zero-copy in sub-batches: acquire adds, commit hands over the oldest, the rest stay valid."""

from __future__ import annotations

import array
import errno
from collections.abc import Iterator
from typing import Any

import pytest

from vbusfs.ioq import Ioq, IoqEmpty, IoqError, IoqFull, Switch


@pytest.fixture
def tx() -> Iterator[tuple[Ioq, Ioq]]:
    north = Ioq.create(8, 32)
    south = Ioq.attach(north.fds, direction="to_south")
    yield north, south
    south.close()
    north.close()


@pytest.fixture
def rx() -> Iterator[tuple[Ioq, Ioq]]:
    """A to-north ring: south fills the buffers north posted."""
    north = Ioq.create(8, 32, direction="to_north")
    south = Ioq.attach(north.fds, direction="to_north")
    yield north, south
    south.close()
    north.close()


def test_slot_size_and_count_are_the_same_on_both_sides() -> None:
    with Ioq.create(16, 100) as north, Ioq.attach(north.fds, direction="to_south") as south:
        assert (north.count, north.slot_size) == (south.count, south.slot_size) == (16, 100)
        # a device's largest message is the client's slot, not the whole segment
        assert north.max_message == south.max_message == 100


def test_south_sender_refuses_a_message_longer_than_the_clients_slot(
    rx: tuple[Ioq, Ioq],
) -> None:
    _, south = rx
    with pytest.raises(ValueError):
        south.send_nowait(b"x" * 33)
    south.send_nowait(b"x" * 32)


def test_south_streams_responses_in_sub_batches(rx: tuple[Ioq, Ioq]) -> None:
    north, south = rx
    views = south.acquire_nowait(6)
    assert len(views) == 6 and all(len(v) == 32 for v in views)
    for i, v in enumerate(views):
        v[:2] = b"r%d" % i
    south.commit(2, [2, 2])
    assert north.receive_batch_nowait() == [b"r0", b"r1"]  # delivered while 4 are held
    assert south.acquired == 4
    views[2][2:3] = b"!"  # the rest are still ours, and still valid
    south.commit(3, array.array("I", [3, 2, 2]))
    assert north.receive_batch_nowait() == [b"r2!", b"r3", b"r4"]
    more = south.acquire_nowait(8)  # adds after the one still held
    assert len(more) == 8 - 1 - 0  # north reposted the five it read
    assert south.acquired == 8
    views[5][:2] = b"r5"
    more[0][:2] = b"r6"
    south.commit(2, (2, 2))
    assert north.receive_batch_nowait() == [b"r5", b"r6"]
    south.unacquire()
    assert south.acquired == 0


def test_receiver_commits_the_oldest_and_keeps_the_rest(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    north.send_batch_nowait([b"a", b"b", b"c"])
    first = south.acquire_nowait(2)
    north.send_nowait(b"d")
    second = south.acquire_nowait(8)  # only the new ones
    assert [bytes(v) for v in first + second] == [b"a", b"b", b"c", b"d"]
    south.commit(1)
    with pytest.raises(ValueError):
        first[0][0]  # handed back: released
    assert bytes(first[1]) == b"b"
    assert north.sendable()
    south.commit(3)
    with pytest.raises(IoqEmpty):
        south.acquire_nowait()


def test_sender_sub_batches_arrive_in_order(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    views = north.acquire_nowait(5)
    for i, v in enumerate(views):
        v[:1] = bytes([65 + i])
    north.commit(2, [1, 1])
    assert south.receive_batch_nowait() == [b"A", b"B"]
    north.commit(3, [1, 1, 1])
    assert south.receive_batch_nowait() == [b"C", b"D", b"E"]


def test_acquire_stops_at_the_ring_count(tx: tuple[Ioq, Ioq]) -> None:
    north, _ = tx
    assert len(north.acquire_nowait(5)) == 5
    assert len(north.acquire_nowait(5)) == 3
    with pytest.raises(IoqFull):
        north.acquire_nowait()


def test_unacquire_gives_back_the_newest_and_the_next_acquire_finds_them(
    tx: tuple[Ioq, Ioq],
) -> None:
    north, south = tx
    north.send_batch_nowait([b"1", b"2", b"3"])
    views = south.acquire_nowait()
    south.unacquire(2)
    with pytest.raises(ValueError):
        views[2][0]
    assert bytes(views[0]) == b"1" and south.acquired == 1
    again = south.acquire_nowait()
    assert [bytes(v) for v in again] == [b"2", b"3"]
    with pytest.raises(ValueError):
        south.unacquire(4)
    south.commit(3)
    assert north.sendable()


@pytest.mark.parametrize(
    "call",
    [
        lambda n, s: n.send_nowait(b"x"),
        lambda n, s: n.send_batch_nowait([b"x"]),
        lambda n, s: n.send_packed_nowait(b"x", [1]),
        lambda n, s: n.send(b"x", timeout=0),
    ],
    ids=["send_nowait", "send_batch", "send_packed", "send"],
)
def test_copying_sends_are_refused_while_buffers_are_acquired(
    tx: tuple[Ioq, Ioq], call: Any
) -> None:
    north, south = tx
    views = north.acquire_nowait(2)
    with pytest.raises(IoqError) as info:
        call(north, south)
    assert info.value.errno == errno.EBUSY
    with pytest.raises(IoqEmpty):
        south.receive_nowait()  # nothing went out
    assert north.acquired == 2 and len(views[1]) == 32  # and the views still hold


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.receive_nowait(),
        lambda s: s.receive_batch_nowait(),
        lambda s: s.receive_into_nowait(bytearray(256)),
        lambda s: s.discard_nowait(),
        lambda s: s.receive(timeout=0),
    ],
    ids=["receive_nowait", "receive_batch", "receive_into", "discard", "receive"],
)
def test_copying_receives_are_refused_while_buffers_are_acquired(
    tx: tuple[Ioq, Ioq], call: Any
) -> None:
    north, south = tx
    north.send_batch_nowait([b"a", b"b"])
    south.acquire_nowait(1)
    with pytest.raises(IoqError) as info:
        call(south)
    assert info.value.errno == errno.EBUSY
    south.commit(1)
    assert south.receive_nowait() == b"b"  # nothing was consumed by the refused call


def test_commit_refuses_a_length_over_capacity_and_changes_nothing(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    views = north.acquire_nowait(2)
    views[0][:1] = b"a"
    for bad in ([1, 33], [1, -1], [1, 2**32]):
        with pytest.raises(ValueError):
            north.commit(2, bad)
    with pytest.raises(ValueError):
        north.commit(3, [1, 1, 1])  # more than acquired
    with pytest.raises(ValueError):
        north.commit(1)  # a sender gives lengths
    with pytest.raises(ValueError):
        south.commit(0, [])  # a receiver gives none
    assert north.acquired == 2
    with pytest.raises(IoqEmpty):
        south.receive_nowait()
    north.commit(1, [1])
    assert south.receive_nowait() == b"a"


def test_the_switch_refuses_a_ring_with_buffers_acquired() -> None:
    sw = Switch()
    with Ioq.create(4, 2048) as tx_north, Ioq.create(4, 2048, direction="to_north") as rx_north:
        tx = Ioq.attach(tx_north.fds, direction="to_south")
        rx = Ioq.attach(rx_north.fds, direction="to_north")
        rx.acquire_nowait(1)
        with pytest.raises(ValueError):
            sw.forward(0, tx, [None, rx])
        rx.unacquire()
        tx_north.send_nowait(b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00")
        assert sw.forward(0, tx, [None, rx]).frames == 1
        tx.close()
        rx.close()


def test_commit_with_acquire_streams_one_call_per_message(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    views = north.acquire_nowait(1)
    views[0][:1] = b"\0"
    views = north.commit(1, [1], acquire=1)
    held = south.acquire_nowait(1)  # message 0
    for i in range(1, 20):  # through the 8-slot ring more than twice
        views[0][:1] = bytes([i])
        views = north.commit(1, [1], acquire=1)  # sends i, takes the next buffer
        assert len(views) == 1
        assert bytes(held[0]) == bytes([i - 1])
        held = south.commit(1, acquire=1)  # hands back i - 1, takes i
        assert len(held) == 1
    assert bytes(held[0]) == bytes([19])
    assert south.commit(1, acquire=1) == []  # nothing more: the commit stands
    assert south.acquired == 0 and north.acquired == 1
    north.unacquire()


def test_commit_with_acquire_returns_what_there_is(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    north.send_batch_nowait([b"a", b"b", b"c"])
    first = south.acquire_nowait(1)
    more = south.commit(1, acquire=8)
    assert [bytes(v) for v in more] == [b"b", b"c"]
    with pytest.raises(ValueError):
        first[0][0]
    assert south.commit(2, acquire=8) == []
    assert south.commit(0) == []
    with pytest.raises(ValueError):
        south.commit(0, acquire=-1)
    north.acquire_nowait(8)
    assert north.commit(8, [0] * 8, acquire=1) == []  # the ring is full: none to take


def test_a_fault_found_by_commit_with_acquire_kills_the_handle_after_the_commit(
    tx: tuple[Ioq, Ioq],
) -> None:
    import mmap
    import struct

    from vbusfs.ioq import IoqFault

    north, south = tx
    north.send_batch_nowait([b"a", b"b"])
    first = south.acquire_nowait(1)
    with mmap.mmap(north.fds.ring, 56 + 32 * 8) as ring:
        struct.pack_into("<Q", ring, 56 + 32 + 8, 1 << 40)  # b's buffer points away
    with pytest.raises(IoqFault):
        south.commit(1, acquire=1)
    with pytest.raises(ValueError):
        first[0][0]  # every view is gone with the handle's good standing
    assert south.acquired == 0 and south.faulted
    assert north.acquire_nowait(8)  # "a" came back to north: the commit stood
