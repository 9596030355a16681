"""Control-plane costs of vbusfs against the floor of pyfuse3 and against tmpfs.

What it is for: showing that vbusfs is built for scale (issue 2, item 7). It
mounts three filesystems side by side in one run and times the operations an
administrator performs on the vbus trees:

- vbusfs itself (its daemon, run as `python -m vbusfs mount --foreground`);
- a minimal pyfuse3 filesystem keeping the same entries in a dict
  (`bench/_minimalfs.py`), with the cache settings vbusfs uses, so the ratio
  vbusfs/minimal is vbusfs's own overhead above what any pyfuse3 filesystem pays;
- a tmpfs directory, the kernel-only reference.

Operations: mkdir of a device, the `type` write, the bus link (an absolute
target, as the walkthrough types it, and a relative one), unlink of the link,
rmdir of the device, stat of a device directory and of an attribute file,
open+read+close of a small attribute, and full listings of a directory of N
entries (os.listdir; os.scandir of the directory's descriptor with an fstatat
of every entry, as find(1) walks). The peers perform the same system calls on
plain files, directories and symlinks at the same paths in their own trees.

Scale: each filesystem is mounted twice, one populated with 1,000 devices on
100 buses and one with 10,000 devices on 1,000 buses, and both are measured in
the same rounds. The cost of one operation must not depend on the number of
objects, so the scale ratio cost(10,000) / cost(1,000) should be about 1.0
for every operation; listings are O(n) by nature and are compared per entry.

Noise: the machine is small and shared. Within a round the six peers (three
filesystems at two scales) take turns in short slices (a few milliseconds of
one operation), in an order that rotates, so a burst of noise hits them all
alike; each rate is the best slice over all rounds, as timeit takes the best
repeat. The bench and every daemon are pinned to one CPU (the idlest), so
that all peers pay the same: left to the scheduler, each daemon lands on
either CPU, pays a cross-CPU wake-up (~20 us each way) or not, and keeps its
luck for seconds, which skewed single peers by up to 1.6x in trial runs
(`--no-pin` shows it). Trust the ratios more than the absolute rates.

Usage: .venv/bin/python bench/control.py [--quick] [--no-pin] [--rounds R] [--scales A,B]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

HERE = os.path.dirname(os.path.abspath(__file__))
MINIMAL_FS = os.path.join(HERE, "_minimalfs.py")
KINDS = ("vbusfs", "minimal", "tmpfs")
VBUSFS_MOUNT = ("mount", "--foreground", "--ready-fd")
DEVICES_PER_BUS = 10
TYPE_BYTES = "venet-loopback\n"
READY_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0
# A vbusfs scale ratio above this (and above the minimal filesystem's own) is flagged.
GROWTH_LIMIT = 1.3


@dataclass(frozen=True)
class Settings:
    scales: tuple[int, int]
    rounds: int
    batch: int  # devices made and removed again per round and peer
    chunks: int  # the batch is made in this many turns, alternating the peers
    sample: int  # existing devices that stat and read cycle through
    turns: int  # turns per round for stat and read
    turn_time: float  # seconds per turn for stat and read
    listing_turns: int
    listing_time: float
    scandir_turns: int


FULL = Settings(
    scales=(1_000, 10_000),
    rounds=4,
    batch=120,
    chunks=6,
    sample=300,
    turns=6,
    turn_time=0.02,
    listing_turns=4,
    listing_time=0.05,
    scandir_turns=2,
)
QUICK = replace(
    FULL,
    scales=(300, 3_000),
    rounds=3,
    batch=40,
    chunks=4,
    sample=100,
    turns=4,
    listing_turns=2,
    scandir_turns=1,
)


# -- the peers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One filesystem at one population: where its trees live.

    vbusfs computes `type`, `sys/vbus/devices/D/` and its attributes from the
    model; the other kinds get plain files and directories at the same paths.
    """

    kind: str
    scale: int
    root: str

    @property
    def computed(self) -> bool:
        return self.kind == "vbusfs"

    @property
    def label(self) -> str:
        return f"{self.kind}@{self.scale}"

    def device(self, d: str) -> str:
        return f"{self.root}/config/vbus/devices/{d}"

    def bus(self, b: str) -> str:
        return f"{self.root}/config/vbus/instances/{b}"

    def type_file(self, d: str) -> str:
        return f"{self.root}/config/vbus/devices/{d}/type"

    def sys_device(self, d: str) -> str:
        return f"{self.root}/sys/vbus/devices/{d}"

    def attribute(self, d: str) -> str:
        return f"{self.root}/sys/vbus/devices/{d}/enabled"

    def devices_dir(self) -> str:
        return f"{self.root}/config/vbus/devices"


def _mounted(path: str) -> bool:
    """Whether `path` is a mount point, from mountinfo (never touching the mount)."""
    wanted = path.encode()
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = line.split()[4]
            for escaped, plain in ((b"\\040", b" "), (b"\\011", b"\t"), (b"\\012", b"\n")):
                point = point.replace(escaped, plain)
            if point.replace(b"\\134", b"\\") == wanted:
                return True
    return False


def _read_ready(fd: int, timeout: float) -> str:
    """The readiness line a daemon writes to its pipe; "" if it died first."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "error: no readiness report in time"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


class Mounts:
    """Every mount and process the bench makes, undone last first by `close()`."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.logs: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def start_fuse(
        self, name: str, mountpoint: str, command: Callable[[int], list[str]], env: dict[str, str]
    ) -> None:
        """Run a FUSE daemon in its own session; return once it says it is mounted."""
        log_path = os.path.join(self.workdir, f"{name}.log")
        self.logs[name] = log_path
        read_end, write_end = os.pipe()
        try:
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    command(write_end),
                    pass_fds=(write_end,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # Ctrl-C reaches the bench, which unmounts
                    env=env,
                )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._undo.append((f"stop {name}", lambda: _stop_fuse(process, mountpoint)))
        self.pids[name] = process.pid
        try:
            answer = _read_ready(read_end, READY_TIMEOUT)
        finally:
            os.close(read_end)
        if answer != "ok":
            detail = answer or _tail(log_path) or f"exit status {process.poll()}"
            raise RuntimeError(f"{name} did not mount: {detail}")

    def mount_tmpfs(self, mountpoint: str) -> str:
        """A fresh tmpfs at `mountpoint` (as root), else a directory under /dev/shm."""
        if os.getuid() == 0:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=512m,mode=0755", "bench-tmpfs", mountpoint],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                self._undo.append(("unmount tmpfs", lambda: _umount_tmpfs(mountpoint)))
                return f"tmpfs mounted at {mountpoint}"
            reason = done.stderr.strip()
        else:
            reason = "not root"
        shm = tempfile.mkdtemp(prefix="vbusfs-bench-", dir="/dev/shm")
        self._undo.append(("remove the /dev/shm directory", lambda: shutil.rmtree(shm)))
        os.rmdir(mountpoint)
        os.symlink(shm, mountpoint)
        return f"{shm} (/dev/shm, since mount -t tmpfs failed: {reason})"

    def close(self) -> list[str]:
        """Undo everything, last first; returns the problems met (never raises)."""
        problems = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:
                problems.append(f"{what}: {exc}")
        return problems


def _stop_fuse(process: subprocess.Popen[bytes], mountpoint: str) -> None:
    if _mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, check=False)
    try:
        process.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()  # both daemons unmount on SIGTERM
        try:
            process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if _mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, check=False)
    if _mounted(mountpoint):
        raise RuntimeError(f"{mountpoint} is still mounted")


def _umount_tmpfs(mountpoint: str) -> None:
    done = subprocess.run(["umount", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)
    if _mounted(mountpoint):
        raise RuntimeError(f"{mountpoint} is still mounted")


def vbusfs_cache_policy() -> tuple[list[str], float]:
    """The skeleton directories vbusfs lets the kernel cache, and for how long.

    The minimal filesystem copies this policy, so that both pay for the same
    kernel requests; everything else has zero timeouts in both.
    """
    try:
        from vbusfs.fuse._operations import FIXED_TIMEOUT
        from vbusfs.model import Vbus
        from vbusfs.views import FIXED_PATHS, DirNode, node
    except ImportError:  # a vbusfs that caches nothing
        return [], 0.0
    empty = Vbus()
    fixed = [p for p in FIXED_PATHS if p and isinstance(node(empty, p), DirNode)]
    return sorted("/".join(p) for p in fixed), float(FIXED_TIMEOUT)


def start_all(mounts: Mounts, workdir: str, scales: Sequence[int]) -> tuple[list[Peer], str]:
    """Two vbusfs daemons, two minimal filesystems and one tmpfs with a tree per scale."""
    env = dict(os.environ, VBUSFS_RUNTIME_DIR=os.path.join(workdir, "run"))
    python = sys.executable
    fixed, fixed_timeout = vbusfs_cache_policy()
    minimal_args = [f"--fixed={path}" for path in fixed]
    minimal_args.append(f"--fixed-timeout={fixed_timeout}")
    peers = []
    for scale in scales:
        vbusfs = os.path.join(workdir, f"vbusfs-{scale}")
        os.mkdir(vbusfs)
        mounts.start_fuse(
            f"vbusfs-{scale}",
            vbusfs,
            lambda fd, mnt=vbusfs: [python, "-m", "vbusfs", *VBUSFS_MOUNT, str(fd), mnt],
            env,
        )
        minimal = os.path.join(workdir, f"minimal-{scale}")
        os.mkdir(minimal)
        mounts.start_fuse(
            f"minimal-{scale}",
            minimal,
            lambda fd, mnt=minimal: [python, MINIMAL_FS, mnt, "--ready-fd", str(fd), *minimal_args],
            env,
        )
        peers += [Peer("vbusfs", scale, vbusfs), Peer("minimal", scale, minimal)]
    tmpfs = os.path.join(workdir, "tmpfs")
    os.mkdir(tmpfs)
    where = mounts.mount_tmpfs(tmpfs)
    peers += [Peer("tmpfs", scale, os.path.join(tmpfs, str(scale))) for scale in scales]
    for peer in peers:
        if not peer.computed:
            for sub in ("config/vbus/devices", "config/vbus/instances", "sys/vbus/devices"):
                os.makedirs(os.path.join(peer.root, sub), exist_ok=True)
    return peers, where


# -- populating ----------------------------------------------------------------------------


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def bus_of(index: int) -> str:
    return f"b{index // DEVICES_PER_BUS}"


def populate(peer: Peer, stop: threading.Event) -> float:
    """Devices d0..d<scale-1>, typed and linked, DEVICES_PER_BUS per bus; seconds taken."""
    began = time.monotonic()
    for b in range(math.ceil(peer.scale / DEVICES_PER_BUS)):
        os.mkdir(peer.bus(f"b{b}"))
    for i in range(peer.scale):
        if stop.is_set():
            break
        d = f"d{i}"
        os.mkdir(peer.device(d))
        if peer.computed:
            _write(peer.type_file(d), TYPE_BYTES)
        else:
            # The peers' `type` only matters for new devices (made in each round);
            # their sys side is a directory holding the attribute file.
            os.mkdir(peer.sys_device(d))
            _write(peer.attribute(d), "0\n")
        os.symlink(f"../../devices/{d}", f"{peer.bus(bus_of(i))}/{d}")
    return time.monotonic() - began


def populate_all(peers: Sequence[Peer]) -> dict[str, float]:
    """Populate every peer at once (one thread each); on any failure, stop them all."""
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=len(peers)) as pool:
        futures = {peer.label: pool.submit(populate, peer, stop) for peer in peers}
        try:
            return {label: future.result() for label, future in futures.items()}
        except BaseException:
            stop.set()  # the pool's exit waits for the threads, each within one device
            raise


# -- timing --------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Failure(Exception):
    """An operation failed: which peer, which operation, which path."""


Action = Callable[[str], object]


def _guarded(peer: Peer, op: str, action: Action) -> Action:
    def run(path: str) -> object:
        try:
            return action(path)
        except OSError as exc:
            raise Failure(f"{peer.label}: {op} {path}: {exc}") from exc

    return run


def _rotated(peers: Sequence[Peer], turn: int) -> list[Peer]:
    shift = turn % len(peers)
    return [*peers[shift:], *peers[:shift]]


Samples = dict[Peer, list[float]]


def time_batches(
    peers: Sequence[Peer], items: dict[Peer, list[str]], action: dict[Peer, Action], chunks: int
) -> Samples:
    """Seconds per item of each turn: each peer's items done once in `chunks` alternating turns."""
    samples: Samples = {peer: [] for peer in peers}
    with _quiet_gc():
        for turn in range(chunks):
            for peer in _rotated(peers, turn):
                act = action[peer]
                part = items[peer][turn::chunks]
                start = time.perf_counter()
                for item in part:
                    act(item)
                samples[peer].append((time.perf_counter() - start) / len(part))
    return samples


def time_turns(
    peers: Sequence[Peer],
    items: dict[Peer, list[str]],
    action: dict[Peer, Action],
    turns: int,
    turn_time: float,
) -> Samples:
    """Seconds per item of each turn: peers take `turns` alternating turns of `turn_time`.

    Every turn does at least one item, so a slow listing runs once per turn.
    """
    samples: Samples = {peer: [] for peer in peers}
    done = dict.fromkeys(peers, 0)
    clock = time.perf_counter
    with _quiet_gc():
        for turn in range(turns):
            for peer in _rotated(peers, turn):
                act = action[peer]
                cycle = items[peer]
                position = done[peer]
                start = clock()
                now = start
                while now - start < turn_time or position == done[peer]:
                    act(cycle[position % len(cycle)])
                    position += 1
                    now = clock()
                samples[peer].append((now - start) / (position - done[peer]))
                done[peer] = position
    return samples


def _type_write(path: str) -> None:
    with open(path, "w") as f:
        f.write(TYPE_BYTES)


def _read_small(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 4096)
    finally:
        os.close(fd)


def _listdir(path: str) -> None:
    os.listdir(path)


def _scandir_stat(path: str) -> None:
    # Through a directory descriptor, each stat is one fstatat() relative to it,
    # as find(1) does, so the cost is the entry's and not the path's depth.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                entry.stat()
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Op:
    key: str
    label: str
    per_entry: bool = False  # a listing: compared per directory entry


OPS = (
    Op("mkdir", "mkdir device"),
    Op("type", "type write"),
    Op("link_abs", "link, absolute target"),
    Op("link_rel", "link, relative target"),
    Op("unlink", "unlink link"),
    Op("rmdir", "rmdir device"),
    Op("stat_dir", "stat device dir"),
    Op("stat_file", "stat attribute file"),
    Op("read", "attr open+read+close"),
    Op("listdir", "listdir", per_entry=True),
    Op("scandir", "scandir + stat each", per_entry=True),
)
OP_BY_KEY = {op.key: op for op in OPS}


@dataclass
class Results:
    # (kind, scale, op key) -> seconds per op (per listing for listings), one per turn
    runs: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    entries: dict[int, int] = field(default_factory=dict)  # scale -> entries per listing

    def add(self, op: str, measured: Samples) -> None:
        for peer, samples in measured.items():
            self.runs.setdefault((peer.kind, peer.scale, op), []).extend(samples)

    def turns(self, op: str) -> int:
        return min((len(v) for (_, _, key), v in self.runs.items() if key == op), default=0)

    def best(self, kind: str, scale: int, op: str) -> float | None:
        runs = self.runs.get((kind, scale, op))
        return min(runs) if runs else None

    def per_item(self, kind: str, scale: int, op: str) -> float | None:
        best = self.best(kind, scale, op)
        if best is None or not OP_BY_KEY[op].per_entry:
            return best
        return best / self.entries[scale]


def measure_round(
    peers: Sequence[Peer], round_no: int, settings: Settings, results: Results
) -> None:
    """One round: every operation on every peer, peers alternating within each operation."""
    order = _rotated(peers, round_no)
    names = [f"m{round_no}n{i}" for i in range(settings.batch)]
    half = len(names) // 2

    def bus_for(peer: Peer, index: int) -> str:
        return peer.bus(f"b{(index * 7919) % (peer.scale // DEVICES_PER_BUS)}")

    def batch(
        op: str, paths: Callable[[Peer], list[str]], action: Callable[[Peer], Action]
    ) -> None:
        items = {peer: paths(peer) for peer in order}
        guarded = {peer: _guarded(peer, op, action(peer)) for peer in order}
        results.add(op, time_batches(order, items, guarded, settings.chunks))

    def links(peer: Peer, part: range) -> list[str]:
        return [f"{bus_for(peer, i)}/{names[i]}" for i in part]

    def symlink_to(peer: Peer, relative: bool) -> Action:
        def action(link: str) -> None:
            name = link.rsplit("/", 1)[1]
            os.symlink(f"../../devices/{name}" if relative else peer.device(name), link)

        return action

    # Devices made in this round are removed again at its end: each peer keeps
    # exactly its population for the stats and listings.
    batch("mkdir", lambda p: [p.device(m) for m in names], lambda p: os.mkdir)
    for peer in peers:
        if not peer.computed:  # vbusfs makes `type` with the device; the peers get a file
            for m in names:
                _write(peer.type_file(m), "\n")
    batch("type", lambda p: [p.type_file(m) for m in names], lambda p: _type_write)
    batch("link_abs", lambda p: links(p, range(half)), lambda p: symlink_to(p, False))
    batch("link_rel", lambda p: links(p, range(half, len(names))), lambda p: symlink_to(p, True))
    batch("unlink", lambda p: links(p, range(len(names))), lambda p: os.unlink)
    for peer in peers:
        if not peer.computed:
            for m in names:
                os.unlink(peer.type_file(m))
    batch("rmdir", lambda p: [p.device(m) for m in names], lambda p: os.rmdir)

    def turns(op: str, paths: Callable[[Peer], list[str]], action: Action, listing: bool) -> None:
        items = {peer: paths(peer) for peer in order}
        guarded = {peer: _guarded(peer, op, action) for peer in order}
        count = settings.listing_turns if listing else settings.turns
        seconds = settings.listing_time if listing else settings.turn_time
        results.add(op, time_turns(order, items, guarded, count, seconds))

    samples = {
        peer: [f"d{i}" for i in random.Random(round_no).sample(range(peer.scale), settings.sample)]
        for peer in peers
    }
    turns("stat_dir", lambda p: [p.device(d) for d in samples[p]], os.stat, False)
    turns("stat_file", lambda p: [p.attribute(d) for d in samples[p]], os.stat, False)
    turns("read", lambda p: [p.attribute(d) for d in samples[p]], _read_small, False)
    turns("listdir", lambda p: [p.devices_dir()], _listdir, True)
    # one pass per turn: a pass over 10,000 entries takes most of a second on FUSE
    results.add(
        "scandir",
        time_turns(
            order,
            {peer: [peer.devices_dir()] for peer in order},
            {peer: _guarded(peer, "scandir", _scandir_stat) for peer in order},
            settings.scandir_turns,
            0.0,
        ),
    )


# -- checks ----------------------------------------------------------------------------------


def check_vbusfs(peer: Peer) -> list[str]:
    """Cheap consistency checks of one vbusfs's trees after the rounds."""
    problems = []
    expect_devices = {f"d{i}" for i in range(peer.scale)}
    for tree in ("config/vbus/devices", "sys/vbus/devices"):
        listed = set(os.listdir(os.path.join(peer.root, tree)))
        if listed != expect_devices:
            extra = sorted(listed - expect_devices)[:3]
            missing = sorted(expect_devices - listed)[:3]
            problems.append(f"{tree}: {len(listed)} entries (extra {extra}, missing {missing})")
    last = peer.scale - 1
    bus = bus_of(last)
    checks = {
        f"config/vbus/instances/{bus}/d{last}": f"../../../vbus/devices/d{last}",
        f"sys/vbus/devices/d{last}/class": "../../deviceclass/venet-loopback",
    }
    for path, want in checks.items():
        try:
            got = os.readlink(os.path.join(peer.root, path))
        except OSError as exc:
            got = f"<{exc}>"
        if got != want:
            problems.append(f"readlink {path}: {got!r}, expected {want!r}")
    bus_devices = os.listdir(os.path.join(peer.root, f"sys/vbus/instances/{bus}/devices"))
    if len(bus_devices) != DEVICES_PER_BUS:
        problems.append(f"sys/vbus/instances/{bus}/devices lists {sorted(bus_devices)}")
    with open(peer.type_file(f"d{last}"), encoding="utf-8") as f:
        if f.read() != TYPE_BYTES:
            problems.append(f"d{last}/type does not read {TYPE_BYTES!r}")
    return [f"{peer.label}: {problem}" for problem in problems]


def resident_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def log_errors(name: str, path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        return [f"cannot read {path}: {exc}"]
    marks = ("ERROR", "Traceback", "internal error", "Exception")
    return [f"{name} log: {line}" for line in lines if any(mark in line for mark in marks)]


# -- report ----------------------------------------------------------------------------------


def _rate(seconds: float | None) -> str:
    if seconds is None or seconds <= 0:
        return "-"
    rate = 1 / seconds
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}" if a / b < 100 else f"{a / b:,.0f}"


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.1f}"


def print_rates(results: Results, scale: int) -> None:
    buses = scale // DEVICES_PER_BUS
    entries = results.entries[scale]
    print(f"\n{scale:,} devices on {buses:,} buses: ops/s of the best turn "
          f"(listings: listings/s of {entries:,} entries)")  # fmt: skip
    print(f"  {'operation':<23}{'vbusfs':>10}{'minimal':>10}{'tmpfs':>11}{'vbusfs us':>12}"
          f"{'vbus/minimal':>14}{'vbus/tmpfs':>12}")  # fmt: skip
    for op in OPS:
        v, m, t = (results.best(kind, scale, op.key) for kind in KINDS)
        print(f"  {op.label:<23}{_rate(v):>10}{_rate(m):>10}{_rate(t):>11}{_us(v):>12}"
              f"{_ratio(v, m):>14}{_ratio(v, t):>12}")  # fmt: skip
    print("  (vbus/minimal, vbus/tmpfs: cost of one vbusfs operation over the peer's)")


def print_growth(results: Results, small: int, large: int) -> list[str]:
    """The scale ratios; returns the vbusfs operations whose cost grows."""
    print(f"\nscale ratio: cost of one operation with {large:,} objects / with {small:,}"
          " (1.00 = flat; listings per entry)")  # fmt: skip
    print(f"  {'operation':<27}{f'vbusfs us@{small}':>15}{f'vbusfs us@{large}':>16}"
          f"{'vbusfs':>8}{'minimal':>9}{'tmpfs':>8}")  # fmt: skip
    growing = []
    for op in OPS:
        cost = {
            (kind, scale): results.per_item(kind, scale, op.key)
            for kind in KINDS
            for scale in (small, large)
        }
        small_v, large_v = cost["vbusfs", small], cost["vbusfs", large]
        flag = ""
        if small_v and large_v and large_v / small_v > GROWTH_LIMIT:
            small_m, large_m = cost["minimal", small], cost["minimal", large]
            floor = large_m / small_m if small_m and large_m else 1.0
            if large_v / small_v > GROWTH_LIMIT * max(floor, 1.0):
                flag = "  <- grows"
                growing.append(op.label)
        label = op.label + (" /entry" if op.per_entry else "")
        ratios = [_ratio(cost[kind, large], cost[kind, small]) for kind in KINDS]
        print(f"  {label:<27}{_us(small_v):>15}{_us(large_v):>16}{ratios[0]:>8}{ratios[1]:>9}"
              f"{ratios[2]:>8}{flag}")  # fmt: skip
    return growing


NOISE = (
    "noise caveat: 2 shared vCPUs in a VM, other work running alongside; absolute rates move\n"
    "  by tens of percent from run to run. The peers take short turns, alternating, and the best\n"
    "  turn is kept, so noise hits them alike: trust ratios over rates, and read scale ratios\n"
    f"  within about +-{GROWTH_LIMIT - 1:.0%} of 1.00 as flat."
)


def pin_to_idlest_cpu() -> int | None:
    """Pin this process (and the daemons it will start) to the idlest allowed CPU."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None

    def idle() -> dict[int, int]:
        found = {}
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    found[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
        return found

    before = idle()
    time.sleep(0.3)
    after = idle()
    cpu = max(allowed, key=lambda c: after.get(c, 0) - before.get(c, 0))
    os.sched_setaffinity(0, {cpu})
    return cpu


# -- main ------------------------------------------------------------------------------------


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def parse_args(argv: list[str] | None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(
        description="Control-plane costs of vbusfs, a minimal pyfuse3 fs and tmpfs."
    )
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run at small scales")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place the bench and the daemons (noisier)",
    )
    parser.add_argument("--rounds", type=int, help="rounds (the best is kept)")
    parser.add_argument("--scales", help="the two populations, e.g. 1000,10000")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = replace(settings, rounds=args.rounds)
    if args.scales:
        scales = tuple(int(s) for s in args.scales.split(","))
        if len(scales) != 2 or scales[0] >= scales[1] or scales[0] < 10 * DEVICES_PER_BUS:
            parser.error("--scales takes two increasing populations of at least 100")
        settings = replace(settings, scales=(scales[0], scales[1]))
    return replace(settings, sample=min(settings.sample, settings.scales[0])), args.pin


def run(settings: Settings, pin: bool, mounts: Mounts, workdir: str) -> int:
    started = time.monotonic()
    print("vbusfs control-plane bench: vbusfs vs a minimal pyfuse3 filesystem vs tmpfs")
    print(f"  {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    if os.getloadavg()[0] > 0.7 * (os.cpu_count() or 1):
        print("  warning: other work is running; expect more noise than usual")
    cpu = pin_to_idlest_cpu() if pin else None
    if cpu is not None:
        print(f"  bench and daemons pinned to CPU {cpu} (--no-pin: scheduler's choice)")
    else:
        print(
            "  not pinned: each daemon pays cross-CPU wake-ups or not, as the scheduler places it"
        )
    peers, tmpfs_where = start_all(mounts, workdir, settings.scales)
    print(f"  mounted 2 x vbusfs, 2 x minimal under {workdir}; tmpfs: {tmpfs_where}")
    fixed, fixed_timeout = vbusfs_cache_policy()
    print(
        f"  cache policy of vbusfs, copied by minimal: {len(fixed)} skeleton directories "
        f"cached {fixed_timeout:.0f} s, everything else 0 s; direct_io on files"
    )
    try:
        took = populate_all(peers)
    except OSError as exc:
        raise Failure(f"populating: {exc}") from exc
    print("  populated in seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in took.items()))
    results = Results()
    for peer in peers:
        if peer.computed:
            results.entries[peer.scale] = len(os.listdir(peer.devices_dir()))
    began = time.monotonic()
    for round_no in range(settings.rounds):
        measure_round(peers, round_no, settings, results)
    print(f"  measured {settings.rounds} rounds in {time.monotonic() - began:.1f} s; turns per op:")
    print("  " + ", ".join(f"{op.key} {results.turns(op.key)}" for op in OPS))
    problems = [p for peer in peers if peer.computed for p in check_vbusfs(peer)]
    print(f"\n{NOISE}")
    for scale in settings.scales:
        print_rates(results, scale)
    growing = print_growth(results, *settings.scales)
    memory = {name: resident_mib(pid) for name, pid in mounts.pids.items()}
    shown = [f"{name} {mib:.0f}" for name, mib in memory.items() if mib is not None]
    print("\ndaemon memory (RSS, MiB): " + ", ".join(shown))
    for name, path in mounts.logs.items():
        problems += log_errors(name, path)[:10]
    print()
    if growing:
        print(f"cost grows with the number of objects: {', '.join(growing)}")
    else:
        print("no vbusfs operation's cost grows with the number of objects")
    print(
        "checks (trees, links, daemon logs):",
        "ok" if not problems else f"{len(problems)} problem(s)",
    )
    for problem in problems:
        print(f"  {problem}")
    print(f"total {time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.2f}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    settings, pin = parse_args(argv)
    if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
        print("control.py: needs /dev/fuse and fusermount3 (run `make setup`)", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="vbusfs-bench-")
    mounts = Mounts(workdir)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    status = 1
    try:
        status = run(settings, pin, mounts, workdir)
    except (Failure, RuntimeError) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        for name, path in mounts.logs.items():
            tail = _tail(path)
            if tail:
                print(f"--- {name} log tail ---\n{tail}", file=sys.stderr)
    except (KeyboardInterrupt, _Terminated):
        print("\ninterrupted: unmounting", file=sys.stderr)
        status = 130
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        problems = mounts.close()
        for problem in problems:
            print(f"clean-up: {problem}", file=sys.stderr)
        if problems or any(_mounted(os.path.join(workdir, name)) for name in os.listdir(workdir)):
            print(f"clean-up: left {workdir} in place", file=sys.stderr)
            status = status or 1
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    return status


if __name__ == "__main__":
    sys.exit(main())
