"""venet's transmit paths in C (txmitigation): a batch taken in one call, its completions
handed back to north every N messages, each hand-back one signal."""

from __future__ import annotations

import socket

import pytest

from vbusfs.ioq import Ioq, IoqEmpty, IoqError, receive_into_every, receive_to_fd_every


@pytest.fixture
def rings():
    north = Ioq.create(32, 256, direction="to_south")
    south = Ioq.attach(north.fds, direction="to_south")
    yield north, south
    south.close()
    north.close()


def test_receive_into_hands_completions_back_every_n(rings):
    north, south = rings
    messages = [bytes([i]) * (i + 1) for i in range(25)]
    assert north.send_batch_nowait(messages) == 25
    buffer = bytearray(4096)
    lengths, signals = receive_into_every(south, buffer, 64, 10)
    assert lengths == [len(m) for m in messages] and signals == 3  # 10, 10, then the 5 left
    assert bytes(buffer[: sum(lengths)]) == b"".join(messages)
    assert north.send_batch_nowait([b"x"] * 32) == 32  # every slot came back to north
    lengths, signals = receive_into_every(south, buffer, 64, 1)
    assert len(lengths) == 32 and signals == 32  # one per frame
    with pytest.raises(IoqEmpty):
        receive_into_every(south, buffer, 64, 10)
    with pytest.raises(ValueError):
        receive_into_every(south, buffer, 64, 0)


def test_receive_into_keeps_what_does_not_fit_for_the_next_call(rings):
    north, south = rings
    north.send_batch_nowait([b"a" * 100, b"b" * 100, b"c" * 100])
    buffer = bytearray(250)
    assert receive_into_every(south, buffer, 64, 10) == ([100, 100], 1)
    assert receive_into_every(south, buffer, 64, 10) == ([100], 1)
    north.send_nowait(b"d" * 256)
    with pytest.raises(IoqError):  # EMSGSIZE: the first does not fit at all
        receive_into_every(south, bytearray(10), 64, 10)
    assert receive_into_every(south, bytearray(256), 64, 10) == ([256], 1)


def test_receive_to_fd_writes_each_and_hands_back_every_n():
    north = Ioq.create(32, 256, direction="to_south")
    south = Ioq.attach(north.fds, direction="to_south")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        messages = [b"m%02d" % i + bytes(20) for i in range(23)] + [b"short", bytes(200)]
        north.send_batch_nowait(messages)
        got, signals = receive_to_fd_every(
            south, ours.fileno(), 64, 10, min_length=10, max_length=100
        )
        assert (got.messages, got.bad_size, got.dropped, signals) == (25, 2, 0, 3)
        assert [theirs.recv(512) for _ in range(23)] == messages[:23]
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(512)  # the two outside the bounds were never written
    finally:
        for s in (ours, theirs):
            s.close()
        south.close()
        north.close()
