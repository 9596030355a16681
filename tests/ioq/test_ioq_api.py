"""The Python surface of vbusfs.ioq: argument checks, errors, zero-copy views, trio waits."""

from __future__ import annotations

import array
import errno
import gc
import inspect
import os
from collections.abc import Iterator

import pytest
import trio

from vbusfs import ioq
from vbusfs.ioq import AsyncIoq, Ioq, IoqClosed, IoqEmpty, IoqError, IoqFull, lowlevel


@pytest.fixture
def tx() -> Iterator[tuple[Ioq, Ioq]]:
    north = Ioq.create(4, 32)
    south = Ioq.attach(north.fds, direction="to_south")
    yield north, south
    south.close()
    north.close()


@pytest.fixture
def atx() -> Iterator[tuple[AsyncIoq, AsyncIoq]]:
    """The same ring as `tx`, both ends with the trio face."""
    north = AsyncIoq.create(4, 32)
    south = AsyncIoq.attach(north.fds, direction="to_south")
    yield north, south
    south.close()
    north.close()


def test_ioq_public_names_are_few() -> None:
    assert sorted(ioq.__all__) == [
        "AsyncIoq",
        "BlockCounts",  # a block protocol served in C (its layout and counts)
        "BlockLayout",
        "BlockServer",
        "Descriptor",
        "FdBatch",
        "FdPump",  # the vbus-enet driver's loop (with what it returns and counts)
        "Ioq",
        "IoqClosed",
        "IoqEmpty",
        "IoqError",
        "IoqFault",
        "IoqFds",
        "IoqFull",
        "Poller",
        "PumpCounts",
        "PumpEnd",
        "RunCounts",
        "Switch",
        "SwitchCounts",
        "SwitchRunner",  # the switch's forwarding on a thread of its own
        "TapCounts",
        "TapRunner",  # venet-tap's frames on a thread of its own
        # venet's helpers (a spin that never sleeps; completions every N of a batch)
        "poll_ready",
        "receive_into_every",
        "receive_to_fd_every",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 0},
        {"count": 65537},
        {"slot_size": 0},
        {"count": 1024, "slot_size": 2**21},
        {"direction": "sideways"},
    ],
)
def test_ioq_create_checks_arguments_before_c(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Ioq.create(**kwargs)  # type: ignore[arg-type]


def test_ioq_errors_carry_an_errno(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    with pytest.raises(IoqEmpty) as empty:
        south.receive_nowait()
    assert empty.value.errno == errno.EAGAIN
    for _ in range(4):
        north.send_nowait(b"x")
    with pytest.raises(IoqFull) as full:
        north.send_nowait(b"x")
    assert full.value.errno == errno.ENOBUFS
    assert isinstance(full.value, IoqError) and isinstance(full.value, OSError)


def test_ioq_faces_follow_the_naming_rules() -> None:
    # trio's rules (vbusfs.ioq's docstring): the trio face awaits with plain names, no
    # name carries _async, *_nowait never waits, raw index operations are lowlevel's
    waits = ("send", "receive", "receive_batch", "wait_sendable", "wait_receivable")
    for name in waits:
        assert inspect.iscoroutinefunction(getattr(AsyncIoq, name)), name
        assert not inspect.iscoroutinefunction(getattr(Ioq, name)), name
    for face in (Ioq, AsyncIoq):
        names = [n for n in dir(face) if not n.startswith("_")]
        assert not [n for n in names if n.endswith("_async")]
        assert not [
            n
            for n in names
            if n.endswith("_nowait") and inspect.iscoroutinefunction(getattr(face, n))
        ]
        raw = {"push", "pop", "count_of", "remain", "is_full", "is_empty", "seek", "descriptor"}
        assert raw.isdisjoint(names) and raw <= set(lowlevel.__all__)
        assert "inject" in names and "signal" not in names


def test_ioq_wrong_side_is_refused_with_eperm(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    with pytest.raises(IoqError) as info:
        south.send_nowait(b"x")
    assert info.value.errno == errno.EPERM
    with pytest.raises(IoqError):
        north.receive_nowait()
    with pytest.raises(IoqError):
        lowlevel.push(south, "both", 1, 0, 1)
    with pytest.raises(IoqError):
        lowlevel.pop(north, "inuse")
    with pytest.raises(ValueError):
        lowlevel.pop(north, "both")


def test_ioq_send_refuses_a_message_longer_than_a_slot(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    with pytest.raises(ValueError):
        north.send_nowait(b"x" * 33)
    north.send_nowait(b"x" * 32)
    assert south.receive_nowait() == b"x" * 32


def test_ioq_large_messages_arrive_intact() -> None:
    with Ioq.create(4, 65536) as north, Ioq.attach(north.fds, direction="to_south") as south:
        big = os.urandom(65536)
        north.send_nowait(bytearray(big))
        north.send_nowait(memoryview(big)[:40000])
        assert south.receive_nowait() == big  # past the small-message buffer
        assert south.receive_batch_nowait() == [big[:40000]]


def test_ioq_closed_handle_raises_closed(tx: tuple[Ioq, Ioq]) -> None:
    _, south = tx
    south.close()
    south.close()  # idempotent
    assert south.closed
    with pytest.raises(IoqClosed):
        south.receive_nowait()
    with pytest.raises(IoqClosed):
        south.wait_receivable(0)


def test_ioq_views_die_at_commit(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    views = north.acquire_nowait(2)
    assert [len(v) for v in views] == [32, 32]
    views[0][:3] = b"abc"
    views[1][:2] = b"de"
    north.commit(2, [3, 2])
    with pytest.raises(ValueError):
        views[0][0]  # released: the slot belongs to south now
    got = south.acquire_nowait()
    assert [bytes(v) for v in got] == [b"abc", b"de"]
    south.commit(1)
    with pytest.raises(ValueError):
        got[0][0]
    # since ABI 8 the rest stay acquired and valid (it used to release every view)
    assert bytes(got[1]) == b"de" and south.acquired == 1
    south.commit(1)
    assert south.acquired == 0
    with pytest.raises(IoqEmpty):
        south.receive_nowait()


def test_ioq_commit_checks_lengths(tx: tuple[Ioq, Ioq]) -> None:
    north, _ = tx
    north.acquire_nowait(1)
    with pytest.raises(ValueError):
        north.commit(1, [33])
    with pytest.raises(ValueError):
        north.commit(2, [1, 1])


def test_ioq_close_with_live_views_keeps_memory_valid(tx: tuple[Ioq, Ioq]) -> None:
    north, _ = tx
    data = north.data
    north.close()
    data[0] = 1  # the Python mapping outlives the handle while a view exists
    data.release()


def test_ioq_blocking_receive_times_out(tx: tuple[Ioq, Ioq]) -> None:
    _, south = tx
    with pytest.raises(TimeoutError):
        south.receive(timeout=0.01)
    with pytest.raises(TimeoutError):
        south.receive(timeout=0.01, spin_us=100)


def test_ioq_send_batch_blocks_until_everything_is_sent(tx: tuple[Ioq, Ioq]) -> None:
    north, _ = tx
    north.send_batch([b"a", b"b", b"c"], timeout=0)
    with pytest.raises(TimeoutError):
        north.send_batch([b"d", b"e"], timeout=0.01)


def test_ioq_trio_wait_wakes_when_the_peer_sends(atx: tuple[AsyncIoq, AsyncIoq]) -> None:
    north, south = atx

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                for i in range(20):
                    await trio.sleep(0.001)
                    await north.send(bytes([i]))

            nursery.start_soon(sender)
            with trio.fail_after(10):
                while len(got) < 20:
                    got.extend(await south.receive_batch(8))
        return got

    assert trio.run(main) == [bytes([i]) for i in range(20)]


def test_ioq_trio_wait_is_cancellable(atx: tuple[AsyncIoq, AsyncIoq]) -> None:
    _, south = atx

    async def main() -> bool:
        with trio.move_on_after(0.05) as scope:
            await south.wait_receivable()
        return scope.cancelled_caught

    assert trio.run(main)
    with pytest.raises(IoqEmpty):
        south.receive_nowait()


def test_ioq_trio_send_waits_for_room(atx: tuple[AsyncIoq, AsyncIoq]) -> None:
    north, south = atx

    async def main() -> None:
        for _ in range(4):
            north.send_nowait(b"x")
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                await trio.sleep(0.01)
                south.receive_batch_nowait()

            nursery.start_soon(drain)
            with trio.fail_after(10):
                await north.send(b"y", spin_us=10)

    trio.run(main)
    assert south.receive_nowait() == b"y"


def test_ioq_inject_is_a_no_op_while_the_peer_is_not_waiting(tx: tuple[Ioq, Ioq]) -> None:
    north, _ = tx
    assert north.inject() is False


def test_ioq_send_packed_refuses_lengths_that_overrun_the_buffer(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    # C trusts the sum of the lengths: Python must refuse a sum past the buffer
    with pytest.raises(ValueError):
        north.send_packed_nowait(b"abc", [2, 2])
    with pytest.raises(ValueError):
        north.send_packed_nowait(b"a" * 40, [40])
    assert north.send_packed_nowait(b"abcde", array.array("I", [2, 3])) == 2
    assert south.receive_batch_nowait() == [b"ab", b"cde"]


def test_ioq_receive_into_a_too_small_buffer_keeps_the_message(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    north.send_nowait(b"x" * 10)
    with pytest.raises(IoqError) as info:
        south.receive_into_nowait(bytearray(4))
    assert info.value.errno == errno.EMSGSIZE
    assert south.receive_nowait() == b"x" * 10


def test_ioq_seek_and_descriptor_follow_the_ring(tx: tuple[Ioq, Ioq]) -> None:
    north, south = tx
    north.send_batch_nowait([b"a", b"bb", b"ccc"])
    assert lowlevel.seek(south, "inuse", "head") == 0
    assert lowlevel.seek(south, "inuse", "tail") == 3
    assert lowlevel.seek(south, "inuse", "set", 2) == 2
    assert lowlevel.seek(south, "inuse", "next") == 3
    assert lowlevel.seek(south, "inuse", "next") == 0  # wraps at count
    assert lowlevel.seek(south, "inuse", "prev") == 3
    d = lowlevel.descriptor(south, 2)
    assert (d.ptr, d.len, d.valid, d.sown) == (2 * 32, 3, True, True)
    with pytest.raises(ValueError):
        lowlevel.seek(south, "inuse", "set", 4)
    with pytest.raises(ValueError):
        lowlevel.descriptor(south, 4)


def test_ioq_trio_adaptive_wait_spins_then_sleeps(atx: tuple[AsyncIoq, AsyncIoq]) -> None:
    north, south = atx

    async def main() -> bytes:
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                await trio.sleep(0.02)  # longer than the spin: the eventfd must wake us
                north.send_nowait(b"late")

            nursery.start_soon(later)
            with trio.fail_after(10):
                return await south.receive(spin_us=200)
        raise AssertionError("unreachable")

    assert trio.run(main) == b"late"


def test_ioq_dropped_without_close_releases_its_fds() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        north = Ioq.create(4, 32)
        Ioq.attach(north.fds, direction="to_south")  # dropped at once
        del north
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before + 2
