"""Benchmark: the IOQ ring against the machine's other ways to move bytes between processes.

Every number comes from two real processes (a forked sender or echoer and this
process as receiver), printed side by side in one run with ratios to the best
peer and the targets of issue 4.  Peers: multiprocessing.Queue,
multiprocessing.Pipe, os.pipe, socket.socketpair and pyzmq PAIR over ipc:// (if
importable); the memcpy bandwidth of this machine is the physical reference.

It is a measurement, not a test: it asserts nothing, and its numbers move with
whatever else the machine is doing (each number is the best of TRIES rounds,
every round running every transport once, so a slow spell hits all alike).
The two processes of every pair are pinned to two different CPUs.  The ioq
throughput rows poll SPIN_US before sleeping; "ioq packed" sends and receives
with send_packed_nowait / receive_into_nowait (no Python object per message),
the "ioq" column with lists of bytes, as the peers do.  It must never leave a child behind: every
child is killed and reaped by pid, even when a measurement fails.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from vbusfs.ioq import Ioq, IoqEmpty, IoqFull

SMALL = 64
BIG = 64 * 1024
BATCH = 64
RUN_S = 0.5  # seconds per throughput measurement
RTT_S = 0.3  # seconds per latency measurement
TRIES = 3  # runs per number, the best one reported
SPIN_US = 50  # adaptive polling before sleeping (throughput runs and the adaptive RTT)
MSG = b"m" * SMALL
BIG_MSG = b"b" * BIG

# Every pair runs on two different CPUs, as a daemon and its client usually do:
# otherwise the scheduler may stack both on one CPU for one transport and not
# for the next, and spinning would only steal time from the peer it waits for.
_cpus = sorted(os.sched_getaffinity(0))
PIN = (_cpus[0], _cpus[1]) if len(_cpus) >= 2 else None

try:
    import zmq
except ImportError:  # pragma: no cover - pyzmq is in the bench extra
    zmq = None


class Endpoint:
    """One process's end of a channel: the operations the loops below need."""

    def send(self, m: bytes) -> None:
        raise NotImplementedError

    def recv(self) -> bytes:
        raise NotImplementedError

    def send_many(self, ms: list[bytes]) -> None:
        raise NotImplementedError

    def recv_many(self) -> list[bytes]:
        raise NotImplementedError

    def recv_packed(self, buf: bytearray) -> list[int]:
        raise NotImplementedError

    def send_packed(self, packed: bytes, lengths: array.array[int]) -> None:
        raise NotImplementedError


def split(chunk: bytes, size: int = SMALL) -> list[bytes]:
    return [chunk[i : i + size] for i in range(0, len(chunk), size)]


class StreamEnd(Endpoint):
    """A byte stream (pipe or socket) carrying fixed-size messages."""

    def __init__(self, rfd: int, wfd: int, size: int) -> None:
        self.rfd, self.wfd, self.size = rfd, wfd, size
        self.rest = b""

    def send(self, m: bytes) -> None:
        view = memoryview(m)
        while view:
            view = view[os.write(self.wfd, view) :]

    def recv(self) -> bytes:
        m = os.read(self.rfd, self.size)
        while len(m) < self.size:
            m += os.read(self.rfd, self.size - len(m))
        return m

    def send_many(self, ms: list[bytes]) -> None:
        self.send(b"".join(ms))

    def recv_many(self) -> list[bytes]:
        data = self.rest + os.read(self.rfd, 1 << 20)
        cut = len(data) - len(data) % self.size
        self.rest = data[cut:]
        return split(data[:cut], self.size)


class QueueEnd(Endpoint):
    def __init__(self, out_q: Any, in_q: Any) -> None:
        self.out_q, self.in_q = out_q, in_q

    def send(self, m: bytes) -> None:
        self.out_q.put(m)

    def recv(self) -> bytes:
        return self.in_q.get()  # type: ignore[no-any-return]

    def send_many(self, ms: list[bytes]) -> None:
        self.out_q.put(ms)

    def recv_many(self) -> list[bytes]:
        return self.in_q.get()  # type: ignore[no-any-return]


class ConnEnd(Endpoint):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send(self, m: bytes) -> None:
        self.conn.send_bytes(m)

    def recv(self) -> bytes:
        return self.conn.recv_bytes()  # type: ignore[no-any-return]

    def send_many(self, ms: list[bytes]) -> None:
        self.conn.send_bytes(b"".join(ms))

    def recv_many(self) -> list[bytes]:
        return split(self.conn.recv_bytes())


class ZmqEnd(Endpoint):
    def __init__(self, address: str, bind: bool) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        (self.sock.bind if bind else self.sock.connect)(address)

    def send(self, m: bytes) -> None:
        self.sock.send(m)

    def recv(self) -> bytes:
        return self.sock.recv()  # type: ignore[no-any-return]

    def send_many(self, ms: list[bytes]) -> None:
        self.sock.send(b"".join(ms))

    def recv_many(self) -> list[bytes]:
        return split(self.sock.recv())


class IoqEnd(Endpoint):
    """North sends on `down` and receives on `up`; south the other way round."""

    def __init__(self, down: Ioq, up: Ioq, spin_us: int) -> None:
        self.tx = down if down.sender else up
        self.rx = up if self.tx is down else down
        self.spin = spin_us

    def send(self, m: bytes) -> None:
        self.tx.send(m, spin_us=self.spin)

    def recv(self) -> bytes:
        return self.rx.receive(spin_us=self.spin)

    def send_many(self, ms: list[bytes]) -> None:
        self.tx.send_batch(ms, spin_us=self.spin)

    def recv_many(self) -> list[bytes]:
        return self.rx.receive_batch(BATCH * 4, spin_us=self.spin)

    def recv_packed(self, buf: bytearray) -> list[int]:
        while True:
            try:
                return self.rx.receive_into_nowait(buf, BATCH * 4)
            except IoqEmpty:
                self.rx.wait_receivable(spin_us=self.spin)

    def send_packed(self, packed: bytes, lengths: array.array[int]) -> None:
        done = 0
        while done < len(lengths):
            try:
                if done:
                    start = sum(lengths[:done])
                    done += self.tx.send_packed_nowait(packed[start:], lengths[done:])
                else:
                    done += self.tx.send_packed_nowait(packed, lengths)
            except IoqFull:
                self.tx.wait_sendable(spin_us=self.spin)


# A channel factory returns (make parent end, make child end), called after the fork.
Factory = Callable[[int, int], tuple[Callable[[], Endpoint], Callable[[], Endpoint]]]


def ioq_factory(spin_us: int) -> Factory:
    def make(size: int, count: int) -> tuple[Callable[[], Endpoint], Callable[[], Endpoint]]:
        down = Ioq.create(count, size, direction="to_south")
        up = Ioq.create(count, size, direction="to_north")

        def child() -> Endpoint:  # the client: north of both rings
            return IoqEnd(down, up, spin_us)

        def parent() -> Endpoint:
            return IoqEnd(
                Ioq.attach(down.fds, direction="to_south"),
                Ioq.attach(up.fds, direction="to_north"),
                spin_us,
            )

        return parent, child

    return make


def pipe_factory(size: int, count: int) -> tuple[Callable[[], Endpoint], Callable[[], Endpoint]]:
    a_r, a_w = os.pipe()  # child -> parent
    b_r, b_w = os.pipe()  # parent -> child
    for fd in (a_w, b_w):
        with contextlib.suppress(OSError):  # as large as an unprivileged user may make it
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    return (lambda: StreamEnd(a_r, b_w, size)), (lambda: StreamEnd(b_r, a_w, size))


def socket_factory(size: int, count: int) -> tuple[Callable[[], Endpoint], Callable[[], Endpoint]]:
    p, c = socket.socketpair()
    for s in (p, c):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return (lambda: StreamEnd(p.fileno(), p.fileno(), size)), (
        lambda: StreamEnd(c.fileno(), c.fileno(), size)
    )


def mp_queue_factory(
    size: int, count: int
) -> tuple[Callable[[], Endpoint], Callable[[], Endpoint]]:
    ctx = mp.get_context("fork")
    to_parent, to_child = ctx.Queue(), ctx.Queue()
    return (lambda: QueueEnd(to_child, to_parent)), (lambda: QueueEnd(to_parent, to_child))


def mp_pipe_factory(size: int, count: int) -> tuple[Callable[[], Endpoint], Callable[[], Endpoint]]:
    p, c = mp.get_context("fork").Pipe()
    return (lambda: ConnEnd(p)), (lambda: ConnEnd(c))


def zmq_factory(size: int, count: int) -> tuple[Callable[[], Endpoint], Callable[[], Endpoint]]:
    address = f"ipc://{tempfile.mkdtemp(prefix='ioq-bench-')}/pair"
    return (lambda: ZmqEnd(address, bind=True)), (lambda: ZmqEnd(address, bind=False))


# ---- the measurements ------------------------------------------------------------


def child_sender(mode: str) -> Callable[[Endpoint], None]:
    """Sends until the parent has seen enough and kills it."""

    def run(ep: Endpoint) -> None:
        batch = [MSG] * BATCH
        packed, lengths = MSG * BATCH, array.array("I", [SMALL] * BATCH)
        while True:
            if mode == "packed":
                ep.send_packed(packed, lengths)
            elif mode == "one":
                for _ in range(1024):
                    ep.send(MSG)
            elif mode == "batch":
                ep.send_many(batch)
            else:
                ep.send(BIG_MSG)

    return run


def parent_receiver(mode: str) -> Callable[[Endpoint], float]:
    """Messages/s (bytes/s for "big") over RUN_S, timed from the first message."""

    def run(ep: Endpoint) -> float:
        n = 0
        if mode in ("one", "big"):
            ep.recv()
            t0 = time.perf_counter()
            end = t0 + RUN_S
            while True:
                for _ in range(256 if mode == "one" else 8):
                    ep.recv()
                n += 256 if mode == "one" else 8
                now = time.perf_counter()
                if now >= end:
                    break
            rate = n / (now - t0)
            return rate * BIG if mode == "big" else rate
        if mode == "packed":
            buf = bytearray(BATCH * 4 * SMALL)
            ep.recv_packed(buf)
            t0 = time.perf_counter()
            end = t0 + RUN_S
            while (now := time.perf_counter()) < end:
                n += len(ep.recv_packed(buf))
            return n / (now - t0)
        ep.recv_many()
        t0 = time.perf_counter()
        end = t0 + RUN_S
        while (now := time.perf_counter()) < end:
            n += len(ep.recv_many())
        return n / (now - t0)

    return run


def child_echo(ep: Endpoint) -> None:
    while True:
        ep.send(ep.recv())


def parent_ping(ep: Endpoint) -> float:
    """Mean round-trip time in seconds."""
    for _ in range(200):
        ep.send(MSG)
        ep.recv()
    rounds = 0
    t0 = time.perf_counter()
    deadline = t0 + RTT_S
    while True:
        for _ in range(100):
            ep.send(MSG)
            ep.recv()
        rounds += 100
        now = time.perf_counter()
        if now >= deadline:
            break
    return (now - t0) / rounds


@contextlib.contextmanager
def forked(fn: Callable[[], None]) -> Iterator[int]:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            if PIN:
                os.sched_setaffinity(0, {PIN[1]})
            fn()
            code = 0
        finally:
            os._exit(code)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def measure(factory: Factory, size: int, count: int, child: Any, parent: Any) -> float:
    make_parent, make_child = factory(size, count)
    with forked(lambda: child(make_child())):
        return float(parent(make_parent()))


def memcpy_bandwidth(size: int, total: int) -> float:
    src = ctypes.create_string_buffer(size)
    dst = ctypes.create_string_buffer(size)
    reps = max(1, total // size)
    ctypes.memmove(dst, src, size)
    t0 = time.perf_counter()
    for _ in range(reps):
        ctypes.memmove(dst, src, size)
    return size * reps / (time.perf_counter() - t0)


# ---- the report ------------------------------------------------------------------


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    return f"{v / 1e3:.0f} k"


def fmt_bw(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.0f}"


def fmt_us(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e6:.1f}"


def main() -> None:
    peers: dict[str, Factory] = {
        "mp.Queue": mp_queue_factory,
        "mp.Pipe": mp_pipe_factory,
        "os.pipe": pipe_factory,
        "socketpair": socket_factory,
    }
    if zmq is not None:
        peers["zmq ipc"] = zmq_factory
    started = time.monotonic()
    if PIN:
        os.sched_setaffinity(0, {PIN[0]})
    where = f"pinned to CPUs {PIN[0]} and {PIN[1]}" if PIN else "one CPU"
    print(f"ioq bench: two processes per number, {where}; noisy on a shared machine")
    rows: dict[str, dict[str, float]] = {}

    ioq_spin = ioq_factory(SPIN_US)
    ioq_sleep = ioq_factory(0)
    jobs: list[tuple[str, str, Factory, int, int, Any, Any]] = []
    for metric, size, count, mode in (
        ("64B msgs/s, one per call", SMALL, 256, "one"),
        ("64B msgs/s, batched", SMALL, 256, "batch"),
        ("64KiB MB/s", BIG, 16, "big"),
    ):
        sender, receiver = child_sender(mode), parent_receiver(mode)
        jobs.append((metric, "ioq", ioq_spin, size, count, sender, receiver))
        jobs += [(metric, n, f, size, count, sender, receiver) for n, f in peers.items()]
    jobs.append(
        (
            "64B msgs/s, batched",
            "ioq packed",
            ioq_spin,
            SMALL,
            256,
            child_sender("packed"),
            parent_receiver("packed"),
        )
    )
    jobs.append(("RTT us, signalling", "ioq", ioq_sleep, SMALL, 4, child_echo, parent_ping))
    jobs.append(("RTT us, adaptive", "ioq", ioq_spin, SMALL, 4, child_echo, parent_ping))
    jobs += [
        ("RTT us, signalling", n, f, SMALL, 4, child_echo, parent_ping) for n, f in peers.items()
    ]
    # Best of TRIES rounds, each round running every job once: the machine is
    # shared, and a slow spell should hit every transport alike, not one.
    for _ in range(TRIES):
        for metric, name, factory, size, count, child, parent in jobs:
            try:
                got = measure(factory, size, count, child, parent)
            except Exception as e:  # a peer that fails is reported, not fatal
                print(f"  {name} {metric}: failed: {e!r}")
                continue
            row = rows.setdefault(metric, {})
            better = min if parent is parent_ping else max
            row[name] = better(row.get(name, got), got)
    mem_hot = memcpy_bandwidth(BIG, 2 << 30)
    mem_cold = memcpy_bandwidth(64 << 20, 1 << 30)

    names = ["ioq", "ioq packed", *peers]
    width = 12
    print()
    print(f"{'':28}" + "".join(f"{n:>{width}}" for n in names) + f"{'best peer':>{width}}  ratio")
    for metric, values in rows.items():
        is_rtt = metric.startswith("RTT")
        show = fmt_us if is_rtt else fmt_bw if "MB/s" in metric else fmt_rate
        peer_values = {k: v for k, v in values.items() if k in peers}
        ours = values.get("ioq")
        ratio = "-"
        best_name = "-"
        if peer_values and ours:
            if is_rtt:
                best_name = min(peer_values, key=lambda k: peer_values[k])
                ratio = f"{peer_values[best_name] / ours:.1f}x faster"
            else:
                best_name = max(peer_values, key=lambda k: peer_values[k])
                ratio = f"{ours / peer_values[best_name]:.1f}x"
        print(
            f"{metric:28}"
            + "".join(f"{show(values.get(n)):>{width}}" for n in names)
            + f"{best_name:>{width}}  {ratio}"
        )
    print(f"{'memcpy MB/s (64 KiB, hot)':28}{fmt_bw(mem_hot):>{width}}")
    print(f"{'memcpy MB/s (64 MiB, cold)':28}{fmt_bw(mem_cold):>{width}}")

    def ratio(metric: str, key: str = "ioq", against: str | None = None) -> float | None:
        values = rows.get(metric, {})
        base = rows.get(against or metric, {})
        peer_values = [v for k, v in base.items() if k in peers]
        if key not in values or not peer_values:
            return None
        if metric.startswith("RTT"):
            return min(peer_values) / values[key]
        return values[key] / max(peer_values)

    def pipe_ratio(metric: str) -> float | None:
        values = rows.get(metric, {})
        pipe = rows.get("RTT us, signalling", {}).get("os.pipe")
        if "ioq" not in values or pipe is None:
            return None
        return pipe / values["ioq"]

    batched, single = "64B msgs/s, batched", "64B msgs/s, one per call"
    print()
    print("targets (issue 4):")
    for label, got, want in (
        ("batched >= 5x best peer one per call (list)", ratio(batched, against=single), 5.0),
        (
            "batched >= 5x best peer one per call (packed)",
            ratio(batched, "ioq packed", against=single),
            5.0,
        ),
        ("batched >= 5x best peer batched (list)", ratio(batched), 5.0),
        ("batched >= 5x best peer batched (packed)", ratio(batched, "ioq packed"), 5.0),
        ("one per call >= 2x best peer", ratio(single), 2.0),
        ("64 KiB >= 2x best peer MB/s", ratio("64KiB MB/s"), 2.0),
        ("RTT signalling no slower than os.pipe", pipe_ratio("RTT us, signalling"), 1.0),
        ("RTT adaptive >= 5x faster than os.pipe", pipe_ratio("RTT us, adaptive"), 5.0),
    ):
        verdict = "n/a" if got is None else ("met" if got >= want else "NOT met")
        shown = "-" if got is None else f"{got:.2f}x"
        print(f"  {label:48} {shown:>8}  {verdict}")
    print(
        f"\n(ioq throughput runs poll {SPIN_US} us before sleeping;"
        f" total {time.monotonic() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
