"""Poller: one wait on several rings, its registrations kept, its peers watched."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from vbusfs.ioq import AsyncIoq, Ioq, IoqClosed, IoqFault, Poller

ROOT = Path(__file__).resolve().parents[2]


class Pair:
    """A to-south ring (north sends, south receives) and its two ends."""

    def __init__(self, count: int = 4, direction: str = "to_south") -> None:
        self.north = Ioq.create(count, 64, direction=direction)  # type: ignore[arg-type]
        self.south = Ioq.attach(self.north.fds, direction=direction)  # type: ignore[arg-type]

    def close(self) -> None:
        self.south.close()
        self.north.close()


@pytest.fixture
def pairs() -> Iterator[list[Pair]]:
    made = [Pair() for _ in range(3)]
    yield made
    for p in made:
        p.close()


@pytest.fixture
def poller() -> Iterator[Poller]:
    with Poller() as p:
        yield p


def test_poller_reports_the_ring_that_became_ready(pairs: list[Pair], poller: Poller) -> None:
    bits = [poller.add(p.south, "receive") for p in pairs]
    assert bits == [1, 2, 4]
    pairs[1].north.send_nowait(b"one")
    assert poller.wait(timeout=5) == bits[1]
    pairs[0].north.send_nowait(b"zero")
    pairs[2].north.send_nowait(b"two")
    assert poller.wait(timeout=5) == bits[0] | bits[1] | bits[2]
    assert poller.ring(bits[2]) is pairs[2].south


def test_poller_wait_sleeps_until_a_peer_sends(pairs: list[Pair], poller: Poller) -> None:
    for p in pairs:
        poller.add(p.south, "receive")
    timer = threading.Timer(0.05, lambda: pairs[2].north.send_nowait(b"late"))
    timer.start()
    try:
        start = time.monotonic()
        assert poller.wait(timeout=10) == 4
        assert time.monotonic() - start >= 0.04
    finally:
        timer.join()
    assert pairs[2].south.receive_nowait() == b"late"


def test_poller_ignores_rings_outside_the_mask(pairs: list[Pair], poller: Poller) -> None:
    a, b, _ = (poller.add(p.south, "receive") for p in pairs)
    pairs[1].north.send_nowait(b"b")
    with pytest.raises(TimeoutError):
        poller.wait(timeout=0.05, mask=a)
    # a wake-up for b that came while only a was waited for does not end a's next wait
    poller.wait(timeout=0.05, mask=b)
    pairs[1].south.receive_nowait()
    timer = threading.Timer(0.02, lambda: pairs[1].north.send_nowait(b"b2"))
    timer.start()
    try:
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.1, mask=a)
    finally:
        timer.join()
    assert poller.wait(timeout=0, mask=a | b) == b


def test_poller_times_out_and_timeout_zero_never_sleeps(pairs: list[Pair], poller: Poller) -> None:
    poller.add(pairs[0].south, "receive")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        poller.wait(timeout=0)
    with pytest.raises(TimeoutError):
        poller.wait(timeout=0.1)
    elapsed = time.monotonic() - start
    assert 0.1 <= elapsed < 5


def test_poller_waits_for_room_on_a_sending_ring(poller: Poller) -> None:
    pair = Pair(count=2)
    try:
        bit = poller.add(pair.north, "send")
        pair.north.send_batch_nowait([b"a", b"b"])
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.02)
        pair.south.receive_nowait()
        assert poller.wait(timeout=5) == bit
    finally:
        pair.close()


def test_poller_waits_on_both_directions_and_both_sides(poller: Poller) -> None:
    down, up = Pair(direction="to_south"), Pair(direction="to_north")
    try:
        requests = poller.add(down.south, "receive")
        responses = poller.add(up.south, "send")  # posted buffers to fill
        assert poller.wait(timeout=0) == responses
        assert poller.wait(timeout=0.01, mask=requests | responses) == responses
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.01, mask=requests)
        down.north.send_nowait(b"req")
        assert poller.wait(timeout=5, mask=requests) == requests
    finally:
        down.close()
        up.close()


def test_poller_refuses_bad_arguments(pairs: list[Pair], poller: Poller) -> None:
    with pytest.raises(ValueError):
        poller.add(pairs[0].south, "send")  # a receiving side
    with pytest.raises(ValueError):
        poller.add(pairs[0].south, "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        poller.wait(timeout=0)  # no member yet
    bit = poller.add(pairs[0].south, "receive")
    assert poller.add(pairs[0].south, "receive") == bit  # the same pair, the same bit
    assert len(poller) == 1
    with pytest.raises(ValueError):
        poller.wait(timeout=0, mask=bit << 1)  # names no member
    with pytest.raises(KeyError):
        poller.remove(pairs[1].south)
    poller.close()
    poller.close()  # idempotent
    with pytest.raises(IoqClosed):
        poller.wait(timeout=0)
    with pytest.raises(IoqClosed):
        poller.add(pairs[1].south, "receive")


def test_poller_holds_at_most_64_members() -> None:
    made = [Pair(count=1) for _ in range(65)]
    try:
        with Poller() as p:
            bits = [p.add(m.south, "receive") for m in made[:64]]
            assert sorted(bits) == [1 << i for i in range(64)]
            with pytest.raises(OSError):
                p.add(made[64].south, "receive")
            p.remove(made[3].south)
            assert p.add(made[64].south, "receive") == 1 << 3  # the freed bit
    finally:
        for m in made:
            m.close()


def test_poller_reports_a_faulted_ring_ready_so_its_next_operation_raises(
    pairs: list[Pair], poller: Poller
) -> None:
    import mmap
    import struct

    bits = [poller.add(p.south, "receive") for p in pairs]
    pairs[0].north.send_nowait(b"x")
    with mmap.mmap(pairs[0].north.fds.ring, 56 + 32 * 4) as ring:
        struct.pack_into("<Q", ring, 56 + 8, 1 << 40)  # the descriptor points far away
    assert poller.wait(timeout=5) == bits[0]
    with pytest.raises(IoqFault):
        pairs[0].south.receive_nowait()
    assert poller.wait(timeout=0) == bits[0]  # still: every operation raises now
    with pytest.raises(TimeoutError):
        poller.wait(timeout=0, mask=bits[1] | bits[2])


def test_poller_reports_a_ring_closed_under_it_until_removed(
    pairs: list[Pair], poller: Poller
) -> None:
    bits = [poller.add(p.south, "receive") for p in pairs]
    pairs[1].south.close()
    assert poller.wait(timeout=5) == bits[1]
    with pytest.raises(IoqClosed):
        pairs[1].south.receive_nowait()
    poller.remove(pairs[1].south)
    with pytest.raises(TimeoutError):
        poller.wait(timeout=0.01)


def test_poller_closed_before_its_rings_leaves_them_usable(pairs: list[Pair]) -> None:
    p = Poller()
    p.add(pairs[0].south, "receive")
    p.close()
    pairs[0].north.send_nowait(b"x")
    pairs[0].south.wait_receivable(timeout=5)
    assert pairs[0].south.receive_nowait() == b"x"


def test_poller_ends_with_closed_when_a_watched_peer_hangs_up(
    pairs: list[Pair], poller: Poller
) -> None:
    mine, theirs = socket.socketpair()
    try:
        pairs[0].south.watch_peer(mine)
        a = poller.add(pairs[0].south, "receive")
        b = poller.add(pairs[1].south, "receive")
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.02)
        threading.Timer(0.02, theirs.close).start()
        with pytest.raises(IoqClosed):
            poller.wait(timeout=10)
        with pytest.raises(IoqClosed):
            poller.wait(timeout=10)  # for good
        # a ready ring is reported first; a hang-up outside the mask ends nothing
        pairs[1].north.send_nowait(b"b")
        assert poller.wait(timeout=0) == b
        pairs[1].south.receive_nowait()
        cpu = time.thread_time()
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.2, mask=b)
        assert time.thread_time() - cpu < 0.1, "the dead peer outside the mask spun the wait"
        pairs[0].north.send_nowait(b"a")
        assert poller.wait(timeout=0, mask=a) == a
    finally:
        pairs[0].south.watch_peer(None)
        mine.close()
        theirs.close()


def test_poller_follows_a_watch_peer_made_after_add(pairs: list[Pair], poller: Poller) -> None:
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    try:
        poller.add(pairs[0].south, "receive")
        pairs[0].south.watch_peer(first)
        pairs[0].south.watch_peer(second)  # moves the registration
        first_peer.close()
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.05)  # no longer watched
        second_peer.close()
        with pytest.raises(IoqClosed):
            poller.wait(timeout=10)
        pairs[0].south.watch_peer(None)
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.02)
    finally:
        for s in (first, first_peer, second, second_peer):
            s.close()


def test_poller_shares_one_peer_between_rings(pairs: list[Pair], poller: Poller) -> None:
    mine, theirs = socket.socketpair()
    try:
        for p in pairs:
            p.south.watch_peer(mine)
            poller.add(p.south, "receive")
        poller.remove(pairs[0].south)  # one reference gone; the others still watch
        theirs.close()
        with pytest.raises(IoqClosed):
            poller.wait(timeout=10)
    finally:
        for p in pairs:
            p.south.watch_peer(None)
        mine.close()


def test_poller_runs_signal_handlers_and_keeps_waiting(pairs: list[Pair], poller: Poller) -> None:
    poller.add(pairs[0].south, "receive")
    hits: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            poller.wait(timeout=0.2)
        assert time.monotonic() - start >= 0.19
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert hits


def test_poller_wait_is_ended_by_an_exception_from_a_signal_handler(
    pairs: list[Pair], poller: Poller
) -> None:
    poller.add(pairs[0].south, "receive")

    class Stop(Exception):
        pass

    def stop(*_: object) -> None:
        raise Stop

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.02)
    try:
        with pytest.raises(Stop):
            poller.wait(timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_poller_spins_before_sleeping(pairs: list[Pair]) -> None:
    def cpu_of_a_wait(spin_us: int) -> float:
        with Poller(spin_us=spin_us) as p:
            p.add(pairs[0].south, "receive")
            cpu = time.thread_time()
            with pytest.raises(TimeoutError):
                p.wait(timeout=0.25)
            return time.thread_time() - cpu

    # polls for 200 ms, then sleeps. The poll yields the CPU between polls, so on a busy
    # machine it gets only part of one (1.1 ms of the 200 with a full test run beside it,
    # against 0.14 ms for a sleep); a sleep next to none
    spun, slept = cpu_of_a_wait(200000), cpu_of_a_wait(0)
    assert slept < 0.02
    assert spun >= 0.0005 and spun > 4 * slept, (spun, slept)
    with pytest.raises(ValueError):
        Poller(spin_us=-1)


def test_poller_trio_wait_wakes_and_is_cancellable() -> None:
    down = AsyncIoq.create(4, 32)
    south = AsyncIoq.attach(down.fds, direction="to_south")
    other = Pair()
    poller = Poller()
    try:
        bit = poller.add(south, "receive")
        poller.add(other.south, "receive")

        async def main() -> tuple[int, bool]:
            with trio.move_on_after(0.05) as scope:
                await poller.wait_async()
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    await trio.sleep(0.02)
                    down.send_nowait(b"x")

                nursery.start_soon(sender)
                with trio.fail_after(10):
                    got = await poller.wait_async(mask=bit)
            return got, scope.cancelled_caught

        assert trio.run(main) == (bit, True)
        assert south.receive_nowait() == b"x"
    finally:
        poller.close()
        other.close()
        south.close()
        down.close()


def test_poller_trio_wait_ends_with_closed_on_hang_up(pairs: list[Pair], poller: Poller) -> None:
    mine, theirs = socket.socketpair()
    try:
        pairs[0].south.watch_peer(mine)
        poller.add(pairs[0].south, "receive")

        async def main() -> None:
            async with trio.open_nursery() as nursery:

                async def hang_up() -> None:
                    await trio.sleep(0.02)
                    theirs.close()

                nursery.start_soon(hang_up)
                with trio.fail_after(10), pytest.raises(IoqClosed):
                    await poller.wait_async()

        trio.run(main)
    finally:
        pairs[0].south.watch_peer(None)
        mine.close()
        theirs.close()


def test_poller_across_processes_loses_no_wake_up(children: Any) -> None:
    # the child sends on one of three rings at a time; the parent waits on all three
    rounds = 3000
    made = [Ioq.create(4, 16) for _ in range(3)]
    back = Ioq.create(4, 16, direction="to_north")
    fds = [q.fds for q in made]

    def client() -> None:
        for i in range(rounds):
            made[i % 3].send(i.to_bytes(4, "little"), timeout=10)
            if i % 7 == 0:
                back.receive(timeout=10)  # lets the device sleep now and then

    try:
        south = [Ioq.attach(f, direction="to_south") for f in fds]
        reply = Ioq.attach(back.fds, direction="to_north")
        pid = children.fork(client)
        got = []
        with Poller() as p:
            bits = [p.add(q, "receive") for q in south]
            while len(got) < rounds:
                ready = p.wait(timeout=10)  # a lost wake-up shows as TimeoutError
                for bit, q in zip(bits, south, strict=True):
                    if ready & bit:
                        for m in q.receive_batch_nowait():
                            got.append(int.from_bytes(m, "little"))
                            if got[-1] % 7 == 0:
                                reply.send_nowait(b"k")  # the client waits for it
        assert sorted(got) == list(range(rounds))
        for k in range(3):
            assert [n for n in got if n % 3 == k] == list(range(k, rounds, 3))
        assert children.wait(pid) == 0
        for q in [*south, reply]:
            q.close()
    finally:
        for q in [*made, back]:
            q.close()


STRACE_SCRIPT = """
import os, socket, sys, threading
from vbusfs.ioq import Ioq, Poller
waits = int(sys.argv[1])
north = Ioq.create(4, 64)
south = Ioq.attach(north.fds, direction="to_south")
other = Ioq.attach(north.fds, direction="to_south")
a, b = socket.socketpair()
south.watch_peer(a)
p = Poller()
p.add(south, "receive")
for _ in range(waits):
    north.send_nowait(b"x")
    p.wait(5)
    south.receive_nowait()
    try:
        p.wait(0)
    except TimeoutError:
        pass
    try:
        other.wait_receivable(0)  # the single-ring wait, on its own epoll fd
    except TimeoutError:
        pass
# a wake-up for a ring outside the next wait's mask must not wake that wait
n2 = Ioq.create(4, 64)
r2 = Ioq.attach(n2.fds, direction="to_south")
q = Poller()
bit_a, bit_b = q.add(other, "receive"), q.add(r2, "receive")
t = threading.Timer(0.02, lambda: n2.send_nowait(b"y"))
t.start()
assert q.wait(5) == bit_b
t.join()
os.getppid()  # marker: the next wait starts
try:
    q.wait(0.1, mask=bit_a)
except TimeoutError:
    pass
os.getppid()
print("ok")
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_poller_and_ring_waits_register_once_never_per_wait(tmp_path: Path) -> None:
    script = tmp_path / "waits.py"
    script.write_text(STRACE_SCRIPT)

    def trace(waits: int) -> list[str]:
        out = tmp_path / f"trace-{waits}"
        done = subprocess.run(
            ["strace", "-f", "-qq", "-o", str(out), "-e", "trace=epoll_ctl,epoll_wait,getppid",
             sys.executable, str(script), str(waits)],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        )  # fmt: skip
        if done.returncode != 0 and "ptrace" in done.stderr:
            pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
        assert done.stdout.strip() == "ok", done.stderr
        return out.read_text().splitlines()

    def count(lines: list[str], call: str) -> int:
        return sum(f"{call}(" in line for line in lines)

    few, many = trace(5), trace(60)
    # the first poller: its eventfd and the peer's socket; the ring's own epoll: its
    # eventfd; the second poller: two eventfds (the rings' closing at exit deletes them)
    assert count(few, "epoll_ctl") == count(many, "epoll_ctl")
    changes = [line for line in many if "EPOLL_CTL_ADD" in line or "EPOLL_CTL_MOD" in line]
    assert len(changes) == 5, changes
    assert count(many, "epoll_wait") > count(few, "epoll_wait") >= 10  # waits reach epoll
    marks = [i for i, line in enumerate(many) if "getppid(" in line]
    between = many[marks[-2] : marks[-1]]
    # one sleep that times out: the earlier wake-up for the other ring was consumed
    assert count(between, "epoll_wait") == 1, between


def test_ring_wait_keeps_one_epoll_fd_across_waits(pairs: list[Pair]) -> None:
    def epoll_fds() -> set[int]:
        found = set()
        for name in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[eventpoll]":
                    found.add(int(name))
            except OSError:
                pass
        return found

    south = pairs[0].south
    before = epoll_fds()
    with pytest.raises(TimeoutError):
        south.wait_receivable(timeout=0)
    made = epoll_fds() - before
    assert len(made) == 1
    for _ in range(20):
        with pytest.raises(TimeoutError):
            south.wait_receivable(timeout=0)
    assert epoll_fds() - before == made
    south.close()
    assert epoll_fds() - before == set()  # closed with the handle
