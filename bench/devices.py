"""Benchmark: a Python block device through vbusfs rings, against the same protocol over
a Unix socketpair and over a pipe pair.

    .venv/bin/python bench/devices.py [--quick] [--backing memory|file] [--opens]

Every peer serves the same protocol (`vbusfs_vdisk.protocol`), with the same answers,
over the same kind of backing (anonymous memory, or a file on tmpfs), in a process of
its own; the client is this process, using the same request bookkeeping
(`vbusfs_vdisk.Pipeline`) for each. The stream servers answer every request with
`vbusfs_vdisk.Disk.handle`; vdisk, as shipped, lets the framework's C block server
(`vbusfs.device.BlockServer`) serve its READs and WRITEs and `Disk.handle` the rest
(what a device author gets from vbusfs, and what a socket server has no equivalent of):

* **vdisk**: the `vdisk` deviceclass (examples/vdisk) in a vbusfs daemon this
  benchmark mounts; the device is made through the filesystem (mkdir, type,
  attributes, a bus link), this process joins the bus and opens it with
  `VdiskClient` (requests on one ring, responses into buffers posted on another).
  Two rows: `vdisk-process` (the class as shipped: each open disk's loop in a worker
  process) and `vdisk-thread` (`vdisk-thread`, the same class with its loop in a
  thread of the daemon).
* **socketpair**: an `AF_UNIX` `SOCK_STREAM` socketpair to a forked server, both
  ends with 4 MiB socket buffers; the server reads whatever has arrived, answers
  every whole request in it and sends all the responses with one write, and the
  client sends a batch of requests with one write and parses every response that
  has arrived per read. On a stream a request is its header plus, for a WRITE,
  `length` bytes of data.
* **pipe**: the same server and client over two pipes of 1 MiB each (F_SETPIPE_SZ).

Rows (the targets are issue 13's, for vdisk against the socketpair):

* 4 KiB random reads, 32 in flight: operations/s (target >= 3x);
* 64 KiB sequential reads, 8 in flight: MB/s (target >= 2x);
* 4 KiB reads, 1 in flight: microseconds per round trip, vdisk with its rings
  signalling (target: no slower) and with adaptive polling on both sides
  (`spin_us=adaptive` on the client and the device's `spin_us` attribute;
  target >= 3x faster).

Then the latency of reading a sysfs attribute through the mount (open, read,
close of `sys/vbus/devices/D/size`): p50 and p99, idle and while a second vdisk
(a process one, then a thread one) streams 4 KiB random reads at 32 in flight from
another member process (target: within 1.5x of idle).

Rounds run every peer on every row, the order rotating from round to round, and
the best round of each is reported (the median beside it): noise on this shared
machine hits all peers alike. Mounts, daemons, servers and the streaming process
are always stopped, by their pids, and the tmpfs files removed. It asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from _stats import median, p50_p99

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VDISK_SRC = os.path.join(ROOT, "examples", "vdisk", "src")
sys.path.insert(0, VDISK_SRC)

from vbusfs_vdisk import Disk, FileBacking, MemoryBacking, Pipeline  # noqa: E402
from vbusfs_vdisk import protocol as p  # noqa: E402

DISK_SIZE = 64 << 20
SMALL = 4096
LARGE = 64 << 10
QD_RANDOM = 32
QD_SEQUENTIAL = 8
SOCKET_BUFFER = 4 << 20
PIPE_BUFFER = 1 << 20
STREAM_BUFFER = 8 << 20  # what a stream server or client reads into at once
BUS = "bench"
DISK = "bench-disk"
STREAM_DISK = "bench-stream"
#: the device loop's isolation -> (deviceclass, bench disk, streaming disk, their interfaces)
ISOLATIONS = {
    "process": ("vdisk", DISK, STREAM_DISK, 0, 1),
    "thread": ("vdisk-thread", "bench-tdisk", "bench-tstream", 2, 3),
}
SIZE_ATTRIBUTE = "size"
TARGETS = {"rand4k": 3.0, "seq64k": 2.0, "qd1": 1.0, "qd1-adaptive": 3.0, "attr": 1.5}


# ---- the peers' common face -----------------------------------------------------


class Peer(Protocol):
    name: str
    pid: int  # the process that serves it (the daemon, or a stream server)

    def submit_reads(self, offsets: list[int], length: int) -> None: ...

    def complete_batch(self, max_completions: int) -> list[tuple[int, int]]:
        """At least one completion: (status, bytes of data) each."""
        ...

    def write(self, offset: int, data: bytes) -> None: ...


class RingPeer:
    """vdisk through vbusfs: a VdiskClient on this process's bus."""

    def __init__(self, name: str, disk: object, pid: int) -> None:
        self.name = name
        self.disk = disk  # a vbusfs_vdisk.VdiskClient
        self.pid = pid

    def submit_reads(self, offsets: list[int], length: int) -> None:
        self.disk.submit_reads(offsets, length, timeout=10)  # type: ignore[attr-defined]

    def complete_batch(self, max_completions: int) -> list[tuple[int, int]]:
        got = self.disk.complete_batch(max_completions, timeout=10)  # type: ignore[attr-defined]
        return [(c.status, len(c.data)) for c in got]

    def write(self, offset: int, data: bytes) -> None:
        self.disk.write(offset, data, timeout=10)  # type: ignore[attr-defined]


class StreamPeer:
    """The client of a stream server: one write per batch of requests, every whole
    response parsed per read (each copied out of the read buffer, as a ring's is)."""

    def __init__(self, name: str, send_fd: int, receive_fd: int, pid: int) -> None:
        self.name = name
        self.pid = pid
        self.send_fd = send_fd
        self.receive_fd = receive_fd
        self.pipeline = Pipeline()
        self.buffer = bytearray(STREAM_BUFFER)
        self.view = memoryview(self.buffer)
        self.have = 0  # bytes in buffer not yet parsed

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.send_fd, view) :]

    def submit_reads(self, offsets: list[int], length: int) -> None:
        request = self.pipeline.request
        self._send(b"".join([request(p.READ, offset, length) for offset in offsets]))

    def complete_batch(self, max_completions: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        view, response, unpack = self.view, self.pipeline.response, p.RESPONSE.unpack_from
        while not out:
            n = os.readv(self.receive_fd, [view[self.have :]])
            if n == 0:
                raise EOFError(f"{self.name}: the server closed the stream")
            self.have += n
            pos = 0
            while self.have - pos >= p.RESPONSE_SIZE and len(out) < max_completions:
                end = pos + p.RESPONSE_SIZE + unpack(view, pos)[2]
                if end > self.have:
                    break
                done = response(bytes(view[pos:end]))
                out.append((done.status, len(done.data)))
                pos = end
            self.buffer[: self.have - pos] = view[pos : self.have]
            self.have -= pos
        return out

    def write(self, offset: int, data: bytes) -> None:
        self._send(self.pipeline.request(p.WRITE, offset, len(data), data))
        ((status, _),) = self.complete_batch(1)
        if status:
            raise OSError(status, os.strerror(status))


def serve_stream(receive_fd: int, send_fd: int, disk: Disk) -> None:
    """The stream server: answer every whole request that has arrived, all in one write."""
    inbox = bytearray(STREAM_BUFFER)
    inview = memoryview(inbox)
    outview = memoryview(bytearray(STREAM_BUFFER))
    unpack, handle = p.REQUEST.unpack_from, disk.handle
    have = 0
    while True:
        n = os.readv(receive_fd, [inview[have:]])
        if n == 0:
            return
        have += n
        pos = out = 0
        while have - pos >= p.REQUEST_SIZE:
            _, _, length, op, _ = unpack(inview, pos)
            end = pos + p.REQUEST_SIZE + (length if op == p.WRITE else 0)
            if end - pos > STREAM_BUFFER:
                return  # a request that can never fit: the stream is broken
            if end > have:
                break
            room = p.RESPONSE_SIZE + (length if op == p.READ else 0)
            if out + room > STREAM_BUFFER:
                _write_all(send_fd, outview[:out])
                out = 0
            out += handle(inview[pos:end], outview[out : out + room])
            pos = end
        _write_all(send_fd, outview[:out])
        inbox[: have - pos] = inview[pos:have]
        have -= pos


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


# ---- backings ----------------------------------------------------------------------


@dataclass
class BackingPlan:
    """Where each peer keeps its bytes: memory, or its own file on tmpfs."""

    kind: str
    files: list[str]

    def new_file(self) -> str:
        fd, path = tempfile.mkstemp(prefix="vdisk-bench-", suffix=".img", dir="/dev/shm")
        os.ftruncate(fd, DISK_SIZE)
        os.close(fd)
        self.files.append(path)
        return path

    def disk(self) -> Disk:
        if self.kind == "memory":
            return Disk(MemoryBacking(DISK_SIZE))
        return Disk(FileBacking(self.new_file(), DISK_SIZE, readonly=False))


@contextlib.contextmanager
def backings(kind: str) -> Iterator[BackingPlan]:
    plan = BackingPlan(kind, [])
    try:
        yield plan
    finally:
        for path in plan.files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if plan.files:
            print(f"removed the backing files: {' '.join(plan.files)}")


# ---- the stream servers, forked first (they hold no vbusfs descriptor) -----------------


@contextlib.contextmanager
def forked_server(
    name: str, make: Callable[[], tuple[tuple[int, int], tuple[int, int]]], plan: BackingPlan
) -> Iterator[StreamPeer]:
    """Fork a stream server over the fds `make` gives ((client send, client receive),
    (server receive, server send)); killed by pid on the way out."""
    (c_send, c_receive), (s_receive, s_send) = make()
    disk = plan.disk()  # made here, so that a file backing's path is known to clean up
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 0
        try:
            for fd in {c_send, c_receive}:
                os.close(fd)
            serve_stream(s_receive, s_send, disk)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    disk.backing.close()  # the child's now
    for fd in {s_receive, s_send}:
        os.close(fd)
    print(f"{name} server: pid {pid}")
    try:
        yield StreamPeer(name, c_send, c_receive, pid)
    finally:
        for fd in {c_send, c_receive}:
            os.close(fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def socketpair_fds() -> tuple[tuple[int, int], tuple[int, int]]:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    force = os.getuid() == 0  # root may pass the sysctl caps (net.core.[rw]mem_max)
    for sock in (mine, theirs):
        sock.setsockopt(socket.SOL_SOCKET, 32 if force else socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, 33 if force else socket.SO_RCVBUF, SOCKET_BUFFER)
    a, b = mine.detach(), theirs.detach()
    return (a, a), (b, b)


def socket_buffers(fd: int) -> str:
    sock = socket.socket(fileno=os.dup(fd))
    with sock:
        snd = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        rcv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return f"SO_SNDBUF {snd >> 10} KiB, SO_RCVBUF {rcv >> 10} KiB"


def pipe_fds() -> tuple[tuple[int, int], tuple[int, int]]:
    to_server_r, to_server_w = os.pipe()
    to_client_r, to_client_w = os.pipe()
    for fd in (to_server_w, to_client_w):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER)
    return (to_server_w, to_client_r), (to_server_r, to_client_w)


# ---- vdisk through a mount ------------------------------------------------------------


def write_file(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@contextlib.contextmanager
def vdisk_mount(plan: BackingPlan) -> Iterator[tuple[str, int]]:
    """A fresh vbusfs with the vdisk class loaded, on a temporary directory; always
    unmounted. The daemon finds the class on PYTHONPATH (the example is not installed)."""
    from vbusfs.testing import LiveMount

    path = tempfile.mkdtemp(prefix="vbusfs-bench-")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [VDISK_SRC, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    try:
        load = ("vbusfs_vdisk:Vdisk", "vbusfs_vdisk:ThreadVdisk")
        with LiveMount(path, debug=False, load=load) as mount:
            yield path, mount.pid
    finally:
        os.rmdir(path)


@contextlib.contextmanager
def vdisk_devices(mnt: str, plan: BackingPlan, spin: str) -> Iterator[None]:
    """Join a bus holding two vdisks of each isolation (the bench's and the streaming one);
    undo it all after."""
    bus_dir = os.path.join(mnt, "config/vbus/instances", BUS)
    membership = os.path.join(mnt, "proc/self/vbus")
    with contextlib.ExitStack() as undo:
        os.mkdir(bus_dir)
        undo.callback(os.rmdir, bus_dir)
        disks = [(c, d) for c, *names, _, _ in ISOLATIONS.values() for d in names]
        for deviceclass, name in disks:
            device_dir = os.path.join(mnt, "config/vbus/devices", name)
            os.mkdir(device_dir)
            undo.callback(os.rmdir, device_dir)
            write_file(os.path.join(device_dir, "type"), deviceclass)
            attributes = os.path.join(mnt, "sys/vbus/devices", name)
            if plan.kind == "file":
                write_file(os.path.join(attributes, "backing"), plan.new_file())
            else:
                write_file(os.path.join(attributes, "size"), str(DISK_SIZE))
            write_file(os.path.join(attributes, "spin_us"), spin)
            os.symlink(device_dir, os.path.join(bus_dir, name))
            undo.callback(os.unlink, os.path.join(bus_dir, name))
        write_file(membership, BUS)
        undo.callback(write_file, membership, "0")
        yield


def set_spin(mnt: str, disk: str, spin: str) -> None:
    write_file(os.path.join(mnt, "sys/vbus/devices", disk, "spin_us"), spin)


@contextlib.contextmanager
def ring_peer(
    mnt: str, name: str, spin: str, daemon: int, isolation: str = "process"
) -> Iterator[RingPeer]:
    """Open the bench's vdisk of `isolation` with the device and this client polling as
    `spin` says ("0" or "adaptive")."""
    from vbusfs_vdisk import VdiskClient

    from vbusfs import client

    _, disk_name, _, interface, _ = ISOLATIONS[isolation]
    set_spin(mnt, disk_name, spin)  # the device's side, read at open
    with (
        client.connect(mnt) as bus,
        VdiskClient.open(
            bus, interface, count=64, max_transfer=LARGE, spin_us="adaptive" if spin != "0" else 0
        ) as disk,
    ):
        yield RingPeer(name, disk, daemon)


def open_costs(mnt: str, count: int = 20, pause: float = 0.0) -> str:
    """Median milliseconds to open a vdisk (open, CAPACITY, both rings attached, a 4 KiB
    read) and to close it, for each isolation, `pause` seconds after the last close; and
    the first open's (for a worker, the daemon's first: it may wait for the fork server
    to start)."""
    from vbusfs_vdisk import VdiskClient

    from vbusfs import client

    out = []
    with client.connect(mnt) as bus:
        for isolation, (*_, interface, _) in ISOLATIONS.items():
            opens, closes = [], []
            for _ in range(count):
                time.sleep(pause)
                while True:  # a thread's close order may still run after its close's answer
                    start = time.perf_counter()
                    try:
                        disk = VdiskClient.open(bus, interface, count=64, max_transfer=SMALL)
                        break
                    except OSError as exc:
                        if exc.errno != errno.EBUSY:
                            raise
                        time.sleep(0.001)
                disk.read(0, SMALL, timeout=10)
                opened = time.perf_counter()
                disk.close()
                opens.append(opened - start)
                closes.append(time.perf_counter() - opened)
            out.append(
                f"{isolation} {median(opens) * 1e3:.1f} ms "
                f"(close {median(closes) * 1e3:.1f} ms, "
                f"first open {opens[0] * 1e3:.1f} ms)"
            )
    return ", ".join(out)


# ---- workloads ----------------------------------------------------------------------


@dataclass
class Result:
    ops: int
    nbytes: int
    seconds: float
    client_cpu: float = 0.0  # CPU seconds this process used
    peer_cpu: float = 0.0  # CPU seconds the serving process used (all its threads)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6

    @property
    def us_per_op(self) -> float:
        return self.seconds / self.ops * 1e6


TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> dict[int, float]:
    """CPU time (user + system) process `pid` and each of its live descendants (the
    daemon's fork server and device workers) have used so far, by pid."""
    times: dict[int, float] = {}
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return times
    times[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    times.update(cpu_times(int(child)))
    return times


def cpu_seconds(pid: int, since: dict[int, float] | None = None) -> float:
    """CPU seconds of `pid` and its live descendants, since `since` (a `cpu_times`) if
    given: a process gone meanwhile counts for nothing, one born meanwhile in full."""
    now = cpu_times(pid)
    before = since or {}
    return sum(t - before.get(p, 0.0) for p, t in now.items())


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def keep_in_flight(
    peer: Peer, depth: int, length: int, next_offset: Callable[[], int], duration: float
) -> Result:
    """Keep `depth` reads of `length` bytes in flight for `duration` seconds."""
    clock = time.perf_counter
    ops = nbytes = 0
    client_cpu, peer_cpu = own_cpu(), cpu_times(peer.pid)
    start = clock()
    deadline = start + duration
    peer.submit_reads([next_offset() for _ in range(depth)], length)
    in_flight = depth
    sending = True
    while in_flight:
        got = peer.complete_batch(in_flight)
        in_flight -= len(got)
        for status, n in got:
            if status or n != length:
                raise RuntimeError(f"{peer.name}: a read failed (errno {status}, {n} bytes)")
            nbytes += n
        ops += len(got)
        if sending and clock() >= deadline:
            sending = False
        if sending:
            peer.submit_reads([next_offset() for _ in got], length)
            in_flight += len(got)
    seconds = clock() - start
    return Result(ops, nbytes, seconds, own_cpu() - client_cpu, cpu_seconds(peer.pid, peer_cpu))


def random_reads(peer: Peer, duration: float) -> Result:
    rng = random.Random(13)
    blocks = DISK_SIZE // SMALL
    return keep_in_flight(peer, QD_RANDOM, SMALL, lambda: rng.randrange(blocks) * SMALL, duration)


def sequential_reads(peer: Peer, duration: float) -> Result:
    position = [0]

    def next_offset() -> int:
        offset = position[0]
        position[0] = (offset + LARGE) % DISK_SIZE
        return offset

    return keep_in_flight(peer, QD_SEQUENTIAL, LARGE, next_offset, duration)


def single_reads(peer: Peer, duration: float) -> Result:
    return keep_in_flight(
        peer, 1, SMALL, lambda: random.randrange(DISK_SIZE // SMALL) * SMALL, duration
    )


def fill_and_check(peer: Peer) -> None:
    """Write a pattern over the whole disk, and read some of it back through the peer."""
    for offset in range(0, DISK_SIZE, LARGE):
        peer.write(offset, (offset // LARGE % 251).to_bytes(1, "little") * LARGE)
    peer.submit_reads([0, DISK_SIZE - LARGE], LARGE)
    got: list[tuple[int, int]] = []
    while len(got) < 2:
        got += peer.complete_batch(2)
    if any(status or n != LARGE for status, n in got):
        raise RuntimeError(f"{peer.name}: reading back what was written failed: {got}")


# ---- where the time goes: the Python every peer runs per operation, in this process ----


def python_costs(plan: BackingPlan) -> dict[str, float]:
    """Microseconds per operation of the work every transport shares: the client's
    bookkeeping (Pipeline.request + Pipeline.response) and the device's Disk.handle, for a
    4 KiB and a 64 KiB read (best of 5 batches of 2,000)."""
    disk = plan.disk()
    costs: dict[str, float] = {}
    try:
        for length in (SMALL, LARGE):
            request = memoryview(bytearray(p.read_request(1, 8 * LARGE, length)))
            response = memoryview(bytearray(p.RESPONSE_SIZE + length))
            data = bytes(length)
            best_handle = best_client = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(2000):
                    disk.handle(request, response)
                best_handle = min(best_handle, (time.perf_counter() - start) / 2000)
                pipeline = Pipeline()
                replies = [p.pack_response(tag, 0, data) for tag in range(1, 2001)]
                start = time.perf_counter()
                for reply in replies:
                    pipeline.request(p.READ, 0, length)
                    pipeline.response(reply)
                best_client = min(best_client, (time.perf_counter() - start) / 2000)
            costs[f"handle {length >> 10} KiB"] = best_handle * 1e6
            costs[f"client {length >> 10} KiB"] = best_client * 1e6
    finally:
        disk.backing.close()
    return costs


# ---- attribute-read latency -------------------------------------------------------------


def attribute_latency(path: str, count: int) -> list[float]:
    """Microseconds of each of `count` open-read-close of the attribute file `path`."""
    clock = time.perf_counter
    samples = []
    for _ in range(count):
        start = clock()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.read(fd, 4096)
        finally:
            os.close(fd)
        samples.append((clock() - start) * 1e6)
    return samples


def stream(mnt: str, seconds: float, interface: int) -> int:
    """The streaming member process: 4 KiB random reads at 32 in flight on `interface`."""
    from vbusfs_vdisk import VdiskClient

    from vbusfs import client

    with client.connect(mnt) as bus, VdiskClient.open(bus, interface, max_transfer=SMALL) as disk:
        result = random_reads(RingPeer("stream", disk, 0), seconds)
    print(f"{result.ops_per_s:.0f}", flush=True)
    return 0


def attribute_rows(mnt: str, count: int, seconds: float) -> dict[str, dict[str, object]]:
    """Attribute-read latency idle, then while a process vdisk and a thread vdisk stream."""
    path = os.path.join(mnt, "sys/vbus/devices", DISK, SIZE_ATTRIBUTE)
    attribute_latency(path, 50)  # warm the kernel's lookups
    idle = attribute_latency(path, count)
    rows = {}
    for isolation, (*_, interface) in ISOLATIONS.items():
        rows[isolation] = busy_row(mnt, path, count, seconds, interface)
        rows[isolation]["idle"] = idle
    return rows


def busy_row(mnt: str, path: str, count: int, seconds: float, interface: int) -> dict[str, object]:
    streamer = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--stream",
            mnt,
            str(seconds),
            str(interface),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(min(0.3, seconds / 4))  # let it reach full speed
        busy: list[float] = []
        stop = time.monotonic() + seconds * 0.6
        while time.monotonic() < stop and len(busy) < count:
            busy += attribute_latency(path, 10)
        out, _ = streamer.communicate(timeout=seconds + 30)
    finally:
        if streamer.poll() is None:
            streamer.kill()
            streamer.wait()
    rate = float(out.strip() or 0) if streamer.returncode == 0 else 0.0
    return {"busy": busy, "stream_ops": rate, "pid": streamer.pid}


# ---- the run --------------------------------------------------------------------------

ROWS = (
    ("rand4k", "4 KiB random reads, 32 in flight", random_reads),
    ("seq64k", "64 KiB sequential reads, 8 in flight", sequential_reads),
    ("qd1", "4 KiB reads, 1 in flight", single_reads),
)


def run(
    rounds: int,
    duration: float,
    kind: str,
    attr_count: int,
    attr_seconds: float,
    opens_only: bool = False,
) -> None:
    print(
        f"vdisk (vbusfs rings) vs the same protocol over a socketpair and a pipe pair: "
        f"{kind} backing of {DISK_SIZE >> 20} MiB per peer,\n"
        f"best of {rounds} rounds of {duration:.2f} s per row and peer, every peer in every round"
    )
    results: dict[tuple[str, str], list[Result]] = {}
    stats: dict[str, int] = {}  # the vdisk's counters, summed over the timed runs
    with contextlib.ExitStack() as stack:
        plan = stack.enter_context(backings(kind))
        costs = python_costs(plan)
        # the stream servers are forked first, so they hold no vbusfs descriptor
        pair = stack.enter_context(forked_server("socketpair", socketpair_fds, plan))
        pipe = stack.enter_context(forked_server("pipe", pipe_fds, plan))
        print(f"socketpair: {socket_buffers(pair.send_fd)}; pipes: {PIPE_BUFFER >> 10} KiB each")
        mnt, daemon = stack.enter_context(vdisk_mount(plan))
        print(f"vbusfs mounted on {mnt} (daemon pid {daemon})")
        stack.enter_context(vdisk_devices(mnt, plan, "0"))
        print(f"opening a vdisk, median of 20: {open_costs(mnt)}", flush=True)
        spaced = open_costs(mnt, pause=0.2)
        print(f"opening a vdisk 0.2 s after the last close, median of 20: {spaced}", flush=True)
        if opens_only:
            return
        for peer in (pair, pipe):
            fill_and_check(peer)
        for isolation in ISOLATIONS:
            with ring_peer(mnt, "vdisk", "0", daemon, isolation) as ring:
                fill_and_check(ring)
        for r in range(rounds):
            for key, _, workload in ROWS:
                ring_spins = ("0", "adaptive") if key == "qd1" else ("0",)
                runs: list[tuple[str, str | None]] = [("socketpair", None), ("pipe", None)]
                runs += [(f"vdisk-{i}", spin) for i in ISOLATIONS for spin in ring_spins]
                shift = r % len(runs)  # rotate the order, so that no peer always runs warm
                for name, spin in runs[shift:] + runs[:shift]:
                    if spin is None:
                        result = workload(pair if name == "socketpair" else pipe, duration)
                    else:
                        isolation = name.partition("-")[2]
                        with ring_peer(mnt, name, spin, daemon, isolation) as ring:
                            result = workload(ring, duration)
                            for counter, n in ring.disk.stats().items():  # type: ignore[attr-defined]
                                stats[counter] = stats.get(counter, 0) + n
                    label = name if spin in (None, "0") else f"{name}-adaptive"
                    results.setdefault((key, label), []).append(result)
        attributes = attribute_rows(mnt, attr_count, attr_seconds)
    report(results, stats, attributes, costs)


def report(
    results: dict[tuple[str, str], list[Result]],
    stats: dict[str, int],
    attributes: dict[str, dict[str, object]],
    costs: dict[str, float],
) -> None:
    def best(key: str, label: str) -> Result:
        return min(results[(key, label)], key=lambda r: r.seconds / r.ops)

    def median_of(key: str, label: str, metric: Callable[[Result], float]) -> float:
        return median(metric(r) for r in results[(key, label)])

    metrics: dict[str, tuple[str, Callable[[Result], float], bool]] = {
        "rand4k": ("ops/s", lambda r: r.ops_per_s, True),
        "seq64k": ("MB/s", lambda r: r.mb_per_s, True),
        "qd1": ("us/op", lambda r: r.us_per_op, False),
    }
    print()
    print(
        f"| {'row':<36} | {'peer':<14} | {'best':>10} | {'median':>10} | unit  | "
        f"vs socketpair | vs pipe |"
    )
    print(f"|{'-' * 38}|{'-' * 16}|{'-' * 12}|{'-' * 12}|-------|---------------|---------|")
    verdicts = []
    for key, title, _ in ROWS:
        unit, metric, higher = metrics[key]
        labels = sorted({label for k, label in results if k == key}, key=_peer_order)
        pair, pipe = metric(best(key, "socketpair")), metric(best(key, "pipe"))
        for label in labels:
            value = metric(best(key, label))
            ratio_pair = value / pair if higher else pair / value
            ratio_pipe = value / pipe if higher else pipe / value
            print(
                f"| {title:<36} | {label:<14} | {value:>10,.1f} | "
                f"{median_of(key, label, metric):>10,.1f} | {unit:<5} | "
                f"{ratio_pair:>12.2f}x | {ratio_pipe:>6.2f}x |"
            )
            if label.startswith("vdisk"):
                target_key = "qd1-adaptive" if label.endswith("-adaptive") else key
                target = TARGETS[target_key]
                verdicts.append(
                    f"{title}, {label}: {ratio_pair:.2f}x the socketpair "
                    f"(target >= {target:g}x): {'met' if ratio_pair >= target else 'NOT met'}"
                )
    print()
    print("where the time goes (best rounds): wall time and CPU time per operation, microseconds")
    print(f"| {'row':<36} | {'peer':<14} | wall  | client CPU | server CPU |")
    print(f"|{'-' * 38}|{'-' * 16}|-------|------------|------------|")
    for key, title, _ in ROWS:
        for label in sorted({label for k, label in results if k == key}, key=_peer_order):
            r = best(key, label)
            print(
                f"| {title:<36} | {label:<14} | {r.us_per_op:>5.1f} | "
                f"{r.client_cpu / r.ops * 1e6:>10.1f} | {r.peer_cpu / r.ops * 1e6:>10.1f} |"
            )
    print(
        "(server CPU: the whole process that serves the peer, the vbusfs daemon for vdisk;\n"
        " clock-tick resolution, so short rounds read coarse.) Python every peer runs per\n"
        "operation, measured in this process: "
        + ", ".join(f"{name} {us:.2f}" for name, us in costs.items())
        + " us\n(client: Pipeline.request + .response; handle: Disk.handle)."
    )
    print()
    print("attribute reads (open, read, close of sys/vbus/devices/D/size), microseconds:")
    print("| while                       | reads | p50     | p99     |")
    print("|-----------------------------|-------|---------|---------|")
    idle = next(iter(attributes.values()))["idle"]
    assert isinstance(idle, list)
    rows = [("idle", idle)]
    rows += [(f"a {i} vdisk streams", a["busy"]) for i, a in attributes.items()]  # type: ignore[misc]
    for name, samples in rows:
        if samples:
            p50, p99 = p50_p99(samples)
            print(f"| {name:<27} | {len(samples):>5} | {p50:>7.0f} | {p99:>7.0f} |")
    for isolation, row in attributes.items():
        busy = row["busy"]
        assert isinstance(busy, list)
        if busy and idle:
            (busy50, busy99), (idle50, idle99) = p50_p99(busy), p50_p99(idle)
            p50, p99 = busy50 / idle50, busy99 / idle99
            target = TARGETS["attr"]
            verdicts.append(
                f"attribute reads while a {isolation} vdisk streams: p50 {p50:.2f}x, p99 "
                f"{p99:.2f}x idle (target <= {target:g}x): "
                f"{'met' if max(p50, p99) <= target else 'NOT met'}"
            )
        print(
            f"the streaming {isolation} vdisk client (pid {row['pid']}) did "
            f"{row['stream_ops']:,.0f} reads/s meanwhile"
        )
    print()
    print("targets (issue 13), best rounds:")
    for line in verdicts:
        print(f"  {line}")
    print(f"vdisk device counters, summed over the timed runs: {stats}")
    print(
        "noise: a shared 2-CPU VM; a round can move by 30% or more with other load. Every peer\n"
        "runs in every round, in rotating order, and the best round of each is kept."
    )


def _peer_order(label: str) -> int:
    order = ["vdisk-process", "vdisk-process-adaptive", "vdisk-thread", "vdisk-thread-adaptive"]
    return [*order, "socketpair", "pipe"].index(label)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, help="rounds (the best is kept)")
    parser.add_argument("--seconds", type=float, help="seconds per row and peer in a round")
    parser.add_argument("--backing", choices=("memory", "file"), default="memory")
    parser.add_argument(
        "--opens", action="store_true", help="only the cost of opening a vdisk, then stop"
    )
    parser.add_argument("--attr-reads", type=int, default=2000, help="attribute reads per state")
    parser.add_argument(
        "--attr-seconds", type=float, default=4.0, help="how long the second vdisk streams"
    )
    parser.add_argument(
        "--stream", nargs=3, metavar=("MNT", "SECONDS", "INTERFACE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.stream:
        return stream(args.stream[0], float(args.stream[1]), int(args.stream[2]))
    rounds = args.rounds or (3 if args.quick else 5)
    duration = args.seconds or (0.5 if args.quick else 1.0)
    run(rounds, duration, args.backing, args.attr_reads, args.attr_seconds, args.opens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
