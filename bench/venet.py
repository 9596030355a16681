"""Benchmark: Ethernet frames through venet-loopback end to end, against a Unix socketpair.

    .venv/bin/python bench/venet.py [--quick]

Both sides measure the same thing: a round trip of the same frames between two
processes, for 64-byte and 1500-byte frames.

* **vbusfs**: this process is a member of a bus and sends frames through a
  venet-loopback device (`vbusfs.client`, batched `send_batch`/`recv_batch`);
  the vbusfs daemon, a second process, carries each batch from the transmit
  ioq back into the receive ioq.
* **socketpair**: `socket.socketpair(AF_UNIX, SOCK_DGRAM)` to a forked echo
  process that sends every datagram straight back.

Each keeps the same window of frames in flight (128 by default): it sends up
to a window, reads what has come back, and tops the window up again whenever
half of it has returned. The socketpair sends without blocking and reads as
soon as its send buffer is full (the largest window it reached is printed).

Rounds alternate between the two transports and the best round of each is
reported, so that noise on this machine hits both alike; the numbers still
move with whatever else runs here. The benchmark mounts its own vbusfs on a
temporary directory and unmounts it in a `finally`; the echo process and the
daemon are ended by their pids, never by name.  It asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from _stats import median

from vbusfs import client
from vbusfs.testing import LiveMount

SIZES = (64, 1500)
WINDOW = 128  # frames in flight
SPIN_US = 50  # the vbusfs client polls its receive ring this long before it sleeps
TARGET_64 = 3.0  # issue 5: vbusfs frames/s at least 3x the socketpair's, 64-byte frames
BUS = "bench"
DEVICE = "bench-loop"
ETHERTYPE = b"\x88\xb5"

# --pin puts the client on one CPU and its peer (the daemon, the echo process)
# on another. Off by default: on this shared 2-CPU VM, pinned runs were slower
# and far noisier for both transports (a pinned process cannot move away from
# whatever else lands on its CPU).
_CPUS = sorted(os.sched_getaffinity(0))
PIN = (_CPUS[0], _CPUS[1]) if len(_CPUS) >= 2 else None


def frames_of(size: int, count: int) -> list[bytes]:
    """`count` distinct Ethernet frames of `size` bytes (broadcast, ethertype 0x88b5)."""
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + ETHERTYPE
    return [head + i.to_bytes(4, "little") + bytes(size - len(head) - 4) for i in range(count)]


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of process `pid` to `cpu`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {cpu})


# ---- the two transports -------------------------------------------------------


class Transport:
    """One end of a round trip: frames go out, the same frames come back."""

    name = ""

    def __init__(self, window: int) -> None:
        self.window = window

    def send(self, frames: list[bytes]) -> int:
        """Send a prefix of `frames`, at least one when nothing is in flight; how many."""
        raise NotImplementedError

    def receive(self) -> list[bytes]:
        """Wait for at least one returning frame; take every one already there."""
        raise NotImplementedError


class VbusfsTransport(Transport):
    name = "vbusfs"

    def __init__(self, nic: client.Venet, window: int, spin_us: int) -> None:
        super().__init__(window)
        self.nic = nic
        self.spin_us = spin_us

    def send(self, frames: list[bytes]) -> int:
        self.nic.send_batch(frames, timeout=10)
        return len(frames)

    def receive(self) -> list[bytes]:
        # Venet.recv_batch has no spin_us: wait on its receive ioq directly
        return self.nic.rx.receive_batch(self.window, timeout=10, spin_us=self.spin_us)


class SocketpairTransport(Transport):
    name = "socketpair"

    def __init__(self, sock: socket.socket, window: int) -> None:
        super().__init__(window)
        self.sock = sock
        self.peak = 0  # the most frames the kernel ever let us have in flight
        self.in_flight = 0

    def send(self, frames: list[bytes]) -> int:
        sent = 0
        send = self.sock.send
        for frame in frames:
            try:
                send(frame, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break  # the echo process's queue is full: read first
            sent += 1
        self.in_flight += sent
        self.peak = max(self.peak, self.in_flight)
        return sent

    def receive(self) -> list[bytes]:
        recv = self.sock.recv
        got = [recv(2048)]
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(recv(2048, socket.MSG_DONTWAIT))
        self.in_flight -= len(got)
        return got


def echo(sock: socket.socket) -> None:
    """The socketpair's far end: send every datagram straight back."""
    recv, send = sock.recv, sock.send
    while True:
        data = recv(2048)
        if not data:
            return
        send(data)


# ---- measuring ----------------------------------------------------------------


@dataclass
class Result:
    frames: int
    nbytes: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / 1e6


def round_trip(transport: Transport, frames: list[bytes], duration: float) -> Result:
    """Keep a window of frames in flight for `duration` seconds; count what came back."""
    window = transport.window
    clock = time.perf_counter
    sent = got = nbytes = 0
    start = clock()
    deadline = start + duration
    sending = True
    while sending or got < sent:
        in_flight = sent - got
        if sending and in_flight <= window // 2:
            if clock() >= deadline:
                sending = False
            else:
                sent += transport.send(frames[: window - in_flight])
        if got < sent:
            back = transport.receive()
            got += len(back)
            nbytes += sum(map(len, back))
    return Result(got, nbytes, clock() - start)


def check(transport: Transport, frames: list[bytes]) -> None:
    """The frames that come back are the frames sent, in order."""
    back: list[bytes] = []
    sent = 0
    while len(back) < len(frames):
        if sent < len(frames) and sent - len(back) <= transport.window // 2:
            sent += transport.send(frames[sent : len(back) + transport.window])
        back += transport.receive()
    if back != frames:
        raise RuntimeError(f"{transport.name}: the frames that came back differ from those sent")


# ---- set-up and clean-up ----------------------------------------------------------


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@contextlib.contextmanager
def vbusfs_mount() -> Iterator[tuple[str, int]]:
    """A fresh vbusfs on a temporary directory, and its daemon's pid; always unmounted.

    The library's LiveMount: a daemon child of ours, stopped (and reaped) on the way out.
    """
    path = tempfile.mkdtemp(prefix="vbusfs-bench-")
    try:
        with LiveMount(path, debug=False) as mount:
            yield path, mount.pid
    finally:
        os.rmdir(path)


@contextlib.contextmanager
def loopback_nic(mnt: str, slots: int) -> Iterator[client.Venet]:
    """Join a bus holding an enabled venet-loopback device and open it; undo it all after."""
    bus_dir = os.path.join(mnt, "config/vbus/instances", BUS)
    device_dir = os.path.join(mnt, "config/vbus/devices", DEVICE)
    membership = os.path.join(mnt, "proc/self/vbus")
    with contextlib.ExitStack() as undo:
        os.mkdir(bus_dir)
        undo.callback(os.rmdir, bus_dir)
        os.mkdir(device_dir)
        undo.callback(os.rmdir, device_dir)
        write(os.path.join(device_dir, "type"), "venet-loopback")
        write(os.path.join(mnt, "sys/vbus/devices", DEVICE, "enabled"), "1")
        os.symlink(device_dir, os.path.join(bus_dir, DEVICE))
        undo.callback(os.unlink, os.path.join(bus_dir, DEVICE))
        write(membership, BUS)
        undo.callback(write, membership, "0")
        bus = undo.enter_context(client.connect(mnt))
        yield undo.enter_context(bus.open_venet(0, slots=slots))


@contextlib.contextmanager
def echo_process(cpu: int | None) -> Iterator[socket.socket]:
    """A forked process echoing datagrams on the other end of a socketpair; killed by pid."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with mine:
        with theirs:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                status = 0
                try:
                    mine.close()
                    if cpu is not None:
                        os.sched_setaffinity(0, {cpu})
                    echo(theirs)
                except BaseException:
                    status = 1
                finally:
                    os._exit(status)
        try:
            yield mine
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


# ---- the run ----------------------------------------------------------------------


def run(
    rounds: int, duration: float, window: int, spin_us: int, pin_cpus: tuple[int, int] | None
) -> None:
    print(
        f"venet-loopback end to end vs an AF_UNIX SOCK_DGRAM socketpair echo: "
        f"window {window} frames, client spin {spin_us} us,\n"
        f"best of {rounds} alternating rounds of {duration:.1f} s each"
        + (f", client on CPU {pin_cpus[0]}, peer on CPU {pin_cpus[1]}" if pin_cpus else "")
    )
    if pin_cpus:
        os.sched_setaffinity(0, {pin_cpus[0]})
    peer_cpu = pin_cpus[1] if pin_cpus else None
    # the echo process is forked first, so it holds none of the vbusfs client's descriptors
    with (
        echo_process(peer_cpu) as sock,
        vbusfs_mount() as (mnt, daemon),
        loopback_nic(mnt, max(256, 2 * window)) as nic,
    ):
        print(f"vbusfs mounted on {mnt} (daemon pid {daemon})")
        if peer_cpu is not None:
            pin(daemon, peer_cpu)
        pair = SocketpairTransport(sock, window)
        transports: list[Transport] = [VbusfsTransport(nic, window, spin_us), pair]
        for size in SIZES:
            for transport in transports:
                check(transport, frames_of(size, 3 * window))
        results: dict[tuple[str, int], list[Result]] = {}
        for r in range(rounds):
            # alternate which transport goes first, so neither always runs warm
            order = transports if r % 2 == 0 else transports[::-1]
            for size in SIZES:
                frames = frames_of(size, window)
                for transport in order:
                    result = round_trip(transport, frames, duration)
                    results.setdefault((transport.name, size), []).append(result)
        stats = nic.stats()
    report(results, stats, pair.peak)


def report(
    results: dict[tuple[str, int], list[Result]], stats: dict[str, int], socket_window: int
) -> None:
    def best(name: str, size: int) -> Result:
        return max(results[(name, size)], key=lambda r: r.fps)

    def median_fps(name: str, size: int) -> float:
        return median(r.fps for r in results[(name, size)])

    print()
    print(
        f"{'frame':>5} | {'transport':<10} | {'best frames/s':>13} | {'best MB/s':>9} | "
        f"{'median fr/s':>11} | best vbusfs/socketpair"
    )
    print("-" * 84)
    for size in SIZES:
        ours, theirs = best("vbusfs", size), best("socketpair", size)
        for name, result in (("vbusfs", ours), ("socketpair", theirs)):
            ratio = f"{ours.fps / theirs.fps:.2f}x" if name == "vbusfs" else ""
            print(
                f"{size:>5} | {name:<10} | {result.fps:>13,.0f} | {result.mbps:>9,.1f} | "
                f"{median_fps(name, size):>11,.0f} | {ratio}"
            )
    ratio_64 = best("vbusfs", 64).fps / best("socketpair", 64).fps
    verdict = "met" if ratio_64 >= TARGET_64 else "NOT met"
    print()
    print(
        f"target (issue 5): vbusfs >= {TARGET_64:.0f}x the socketpair's frames/s at 64 bytes: "
        f"{verdict} ({ratio_64:.2f}x best, "
        f"{median_fps('vbusfs', 64) / median_fps('socketpair', 64):.2f}x median)"
    )
    print(
        "frames/s counts frames that completed the round trip (each crossed between the\n"
        "two processes twice); MB/s is those frames' bytes."
    )
    print(f"socketpair: at most {socket_window} frames were in flight at once")
    print(f"vbusfs device counters after the run: {stats}")
    print(
        "noise: this is a shared VM; a round can move by 30% or more with other load. Rounds\n"
        "alternate between the transports and the best of each is kept, so noise hits both alike."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~10 s)")
    parser.add_argument("--rounds", type=int, help="rounds per number (the best is kept)")
    parser.add_argument("--seconds", type=float, help="seconds per round")
    parser.add_argument("--window", type=int, default=WINDOW, help="frames in flight")
    parser.add_argument(
        "--spin-us", type=int, default=SPIN_US, help="vbusfs client polling before it sleeps"
    )
    parser.add_argument(
        "--pin", action="store_true", help="client on one CPU, daemon and echo on another"
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 8)
    duration = args.seconds or (0.5 if args.quick else 1.0)
    run(rounds, duration, args.window, args.spin_us, PIN if args.pin else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
