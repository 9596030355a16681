"""A south side that never trusts shared memory: forged descriptors and a hostile process."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import random
import signal
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vbusfs.ioq import Ioq, IoqEmpty, IoqError, IoqFault, IoqFull, Poller, lowlevel

HEAD, DESC = 56, 32
COUNT, SLOT = 8, 64
DATA = COUNT * SLOT


@pytest.fixture
def tx() -> Iterator[tuple[Ioq, Ioq, mmap.mmap]]:
    """A to-south ring with one message queued, and a raw view of the ring."""
    north = Ioq.create(COUNT, SLOT)
    south = Ioq.attach(north.fds, direction="to_south")
    ring = mmap.mmap(north.fds.ring, HEAD + DESC * COUNT)
    north.send_nowait(b"m" * 10)
    yield north, south, ring
    ring.close()
    south.close()
    north.close()


def forge(ring: mmap.mmap, fmt: str, offset: int, *values: int) -> None:
    # single-threaded here, so pack_into's non-atomic store is fine
    struct.pack_into(fmt, ring, offset, *values)


RECEIVES: dict[str, Callable[[Ioq], Any]] = {
    "one": lambda q: q.receive_nowait(),
    "batch": lambda q: q.receive_batch_nowait(8),
    "into": lambda q: q.receive_into_nowait(bytearray(DATA)),
    "views": lambda q: q.acquire_nowait(8),
    "pop": lambda q: lowlevel.pop(q, "inuse"),
}

FORGERIES = {
    "ptr-past-end": ("<Q", HEAD + 8, DATA),
    "len-past-end": ("<Q", HEAD + 16, DATA + 1),
    "ptr-plus-len-past-end": ("<QQ", HEAD + 8, DATA - 4, 5),
    "ptr-plus-len-wraps": ("<QQ", HEAD + 8, 2**64 - 8, 16),
    "sown-not-a-bit": ("<B", HEAD + 25, 7),
    "owned-but-not-valid": ("<B", HEAD + 24, 0),
}


@pytest.mark.parametrize("how", RECEIVES)
@pytest.mark.parametrize("forgery", FORGERIES)
def test_south_faults_on_a_forged_descriptor(
    tx: tuple[Ioq, Ioq, mmap.mmap], forgery: str, how: str
) -> None:
    _, south, ring = tx
    forge(ring, *FORGERIES[forgery])
    with pytest.raises(IoqFault) as info:
        RECEIVES[how](south)
    assert info.value.errno == errno.EPROTO
    assert south.faulted
    with pytest.raises(IoqFault):  # the handle stays dead
        south.receive_nowait()


@pytest.mark.parametrize("how", RECEIVES)
def test_south_receives_the_same_ring_unforged(tx: tuple[Ioq, Ioq, mmap.mmap], how: str) -> None:
    # the control for the test above: without the forgery, every form succeeds
    _, south, _ = tx
    RECEIVES[how](south)
    assert not south.faulted


@pytest.mark.parametrize("field", [HEAD - 56 + 24, 36 + 4], ids=["valid-head", "inuse-tail"])
def test_south_faults_on_an_index_out_of_range(tx: tuple[Ioq, Ioq, mmap.mmap], field: int) -> None:
    _, south, ring = tx
    forge(ring, "<I", field, COUNT)
    with pytest.raises(IoqFault):
        lowlevel.count_of(south, "valid" if field == 24 else "inuse")


def test_south_ignores_its_own_index_forged_by_north(tx: tuple[Ioq, Ioq, mmap.mmap]) -> None:
    # south is the only writer of inuse.head: a forged value there changes nothing
    _, south, ring = tx
    forge(ring, "<I", 36, 5)
    assert south.receive_nowait() == b"m" * 10


def test_south_sender_faults_on_a_forged_buffer() -> None:
    with Ioq.create(COUNT, SLOT, direction="to_north") as north:
        south = Ioq.attach(north.fds, direction="to_north")
        with mmap.mmap(north.fds.ring, HEAD + DESC * COUNT) as ring:
            forge(ring, "<Q", HEAD + 8, DATA)  # posted buffer 0 points past the segment
            with pytest.raises(IoqFault):
                south.send_nowait(b"x")
        south.close()


def test_north_receiver_faults_on_a_length_longer_than_its_buffer() -> None:
    with Ioq.create(COUNT, SLOT, direction="to_north") as north:
        south = Ioq.attach(north.fds, direction="to_north")
        south.send_nowait(b"x")
        with mmap.mmap(north.fds.ring, HEAD + DESC * COUNT) as ring:
            forge(ring, "<Q", HEAD + 16, SLOT + 1)  # south "filled" more than was posted
            with pytest.raises(IoqFault):
                north.receive_nowait()
        south.close()


def hostile_writer(ring_fd: int, efd: int, seed: int, ready: int) -> Callable[[], None]:
    def run() -> None:
        nonlocal ready
        size = os.fstat(ring_fd).st_size
        ring = mmap.mmap(ring_fd, size)
        rnd = random.Random(seed)
        # everything a live south reads: shm-signal flags, both indices, descriptors.
        # (magic, versions and count are read once at attach; tests above forge those)
        spans = [(16, 22), (24, 48), (HEAD, size)]
        while True:
            # bursts and pauses, so south meets both fresh garbage and settled garbage
            for _ in range(rnd.randrange(1, 200)):
                lo, hi = rnd.choice(spans)
                off = rnd.randrange(lo, hi)
                n = min(rnd.choice((1, 1, 1, 4, 8)), hi - off)
                ring[off : off + n] = rnd.randbytes(n)
            os.eventfd_write(efd, 1)
            if ready >= 0:  # south starts once garbage is really flowing
                os.write(ready, b"g")
                ready = -1
            time.sleep(0.0002)

    return run


def south_fuzzer(fds: Any, direction: str, iterations: int, report: int) -> Callable[[], None]:
    def run() -> None:
        rnd = random.Random(1)
        faults = moved = refused = 0

        def attach() -> Ioq:
            nonlocal refused
            while True:
                try:
                    return Ioq.attach(fds, direction=direction)  # type: ignore[arg-type]
                except IoqError as e:  # inuse.head, where south starts, is garbage now
                    assert e.errno == errno.EINVAL
                    refused += 1
                    assert refused < 100 * iterations, "could not re-attach"
                    # stand in for the next, honest client: start the index afresh
                    with mmap.mmap(fds.ring, HEAD) as head:
                        head[36:40] = bytes(4)

        q = attach()
        for _ in range(iterations):
            try:
                op = rnd.randrange(6)
                if op == 0 and q.sender:
                    q.send_batch_nowait([b"s" * rnd.randrange(SLOT)] * rnd.randrange(1, 9))
                elif op == 0:
                    for m in q.receive_batch_nowait(8):
                        assert len(m) <= DATA
                elif op == 1:
                    views = q.acquire_nowait(8)
                    assert all(len(v) <= DATA for v in views)
                    q.commit(len(views), [0] * len(views) if q.sender else None)
                elif op == 2:
                    lowlevel.count_of(q, rnd.choice(("valid", "inuse")))
                elif op == 3:
                    (q.wait_sendable if q.sender else q.wait_receivable)(0.001)
                elif op == 4 and not q.sender:
                    lowlevel.pop(q, "inuse")
                else:
                    lowlevel.seek(
                        q, rnd.choice(("valid", "inuse")), rnd.choice(("head", "tail")), 3
                    )
                moved += 1
            except IoqFault:
                faults += 1
                q.close()
                q = attach()
            except (IoqEmpty, IoqFull, TimeoutError):
                pass
        os.write(report, f"{faults} {moved} {refused}\n".encode())

    return run


@pytest.mark.parametrize("direction", ["to_south", "to_north"])
def test_south_survives_a_hostile_process_scribbling_on_the_ring(
    children: Any, direction: str
) -> None:
    r, w = os.pipe()
    with Ioq.create(COUNT, SLOT, direction=direction) as north:  # type: ignore[arg-type]
        try:
            vandal = children.fork(hostile_writer(north.fds.ring, north.fds.to_south, 7, w))
            assert os.read(r, 1) == b"g"
            fuzz = children.fork(south_fuzzer(north.fds, direction, 3000, w))
            start = time.monotonic()
            status = children.wait(fuzz, timeout=60)
            assert time.monotonic() - start < 60, "south hung"
            # a crash (SIGSEGV, SIGBUS) or a failed check shows here
            assert status == 0, f"south fuzzer exited with {status}"
            os.kill(vandal, signal.SIGKILL)
            line = os.read(r, 200).decode()
            faults, moved, _ = map(int, line.split())
            print("fuzz:", direction, line)
            assert faults > 0, "random bytes never caught: the checks are not running"
            assert moved > 0
        finally:
            os.close(r)
            os.close(w)


def eventfd_flooder(efd: int, ready: int) -> Callable[[], None]:
    def run() -> None:
        os.write(ready, b"f")
        while True:
            os.eventfd_write(efd, 1)

    return run


@pytest.mark.parametrize("wait", ["poller", "ring"])
def test_a_wait_backs_off_a_peer_that_writes_the_eventfd_in_a_loop(
    children: Any, wait: str
) -> None:
    # nothing is ever ready: every wake-up is for nothing, and costs the waiter
    r, w = os.pipe()
    with Ioq.create(COUNT, SLOT) as north, Poller() as poller:
        south = Ioq.attach(north.fds, direction="to_south")
        try:
            poller.add(south, "receive")
            children.fork(eventfd_flooder(north.fds.to_south, w))
            assert os.read(r, 1) == b"f"
            start, cpu = time.monotonic(), time.thread_time()
            with pytest.raises(TimeoutError):
                if wait == "poller":
                    poller.wait(timeout=0.5)
                else:
                    south.wait_receivable(timeout=0.5)
            elapsed, used = time.monotonic() - start, time.thread_time() - cpu
            assert 0.5 <= elapsed < 5, "the wait did not end at its timeout"
            # backed off: a few percent of a CPU (without it, all the CPU it could get)
            assert used < 0.1, f"{used:.3f} s of CPU in a {elapsed:.3f} s wait"
        finally:
            south.close()
            os.close(r)
            os.close(w)


def test_a_poller_survives_a_hostile_process_scribbling_on_one_of_its_rings(
    children: Any,
) -> None:
    r, w = os.pipe()
    with Ioq.create(COUNT, SLOT) as hostile_north, Ioq.create(COUNT, SLOT) as honest:
        vandal = children.fork(
            hostile_writer(hostile_north.fds.ring, hostile_north.fds.to_south, 3, w)
        )
        assert os.read(r, 1) == b"g"
        faults = refused = received = sent = 0

        def attach_bad() -> Ioq:
            nonlocal refused
            while True:
                try:
                    return Ioq.attach(hostile_north.fds, direction="to_south")
                except IoqError:  # inuse.head is garbage: start it afresh, as a new client
                    refused += 1
                    with mmap.mmap(hostile_north.fds.ring, HEAD) as head:
                        head[36:40] = bytes(4)

        poller = Poller()
        good = Ioq.attach(honest.fds, direction="to_south")
        bad = attach_bad()
        deadline = time.monotonic() + 60
        try:
            good_bit, bad_bit = poller.add(good, "receive"), poller.add(bad, "receive")
            for i in range(2000):
                assert time.monotonic() < deadline, "the poller hung"
                if i % 4 == 0:
                    with contextlib.suppress(IoqFull):
                        honest.send_nowait(i.to_bytes(4, "little"))
                        sent += 1
                try:
                    ready = poller.wait(timeout=0.002)
                except TimeoutError:
                    continue
                if ready & good_bit:
                    received += len(good.receive_batch_nowait())
                if ready & bad_bit:
                    try:
                        for m in bad.receive_batch_nowait(8, max_length=SLOT):
                            assert len(m) <= SLOT
                    except IoqFault:
                        faults += 1
                        poller.remove(bad)
                        bad.close()
                        bad = attach_bad()
                        bad_bit = poller.add(bad, "receive")
                    except IoqEmpty:
                        pass
            os.kill(vandal, signal.SIGKILL)
            with contextlib.suppress(IoqEmpty):
                received += len(good.receive_batch_nowait())
            assert faults > 0, "random bytes never caught: the checks are not running"
            assert received == sent > 0  # the honest ring never suffered for the other
        finally:
            poller.close()
            good.close()
            bad.close()
            os.close(r)
            os.close(w)


def test_a_count_written_without_pending_wakes_a_ring_wait_once_and_is_drained() -> None:
    # a wait drains its eventfd only when the peer set pending or a wake-up came through
    # it: a peer writing the fd without pending must cost one early wake-up, after which
    # the wait drains the count and sleeps, rather than be woken by it again and again
    with Ioq.create(COUNT, SLOT) as north:
        south = Ioq.attach(north.fds, direction="to_south")
        try:
            with pytest.raises(TimeoutError):  # the first arm drains whatever is there
                south.wait_receivable(timeout=0.01)
            os.eventfd_write(north.fds.to_south, 1)  # no pending flag set
            start, cpu = time.monotonic(), time.thread_time()
            with pytest.raises(TimeoutError):
                south.wait_receivable(timeout=0.3)
            elapsed, used = time.monotonic() - start, time.thread_time() - cpu
            assert 0.3 <= elapsed < 5, "the wait did not end at its timeout"
            assert used < 0.05, f"{used:.3f} s of CPU in a {elapsed:.3f} s wait"
            with pytest.raises(BlockingIOError):  # the wait drained the stray count
                os.eventfd_read(north.fds.to_south)
        finally:
            south.close()
