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

Daemons are started and stopped with the library's own machinery
(`vbusfs.daemon.start_daemon`/`stop_daemon`, as the CLI and the testing kit do);
the peers, operations and timing live in `_control_measure.py`, the tables in
`_control_report.py`.

`--baseline CHECKOUT` adds two more peers, the vbusfs of another checkout (one whose
compiled module is built, e.g. an export of main), so a change is measured before and
after in the same run: the table's `before` column and `speedup` (before's cost / ours).

Usage: .venv/bin/python bench/control.py [--quick] [--no-pin] [--rounds R] [--scales A,B]
                                         [--baseline CHECKOUT]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from _control_measure import (
    DEVICES_PER_BUS,
    FULL,
    OPS,
    QUICK,
    TYPE_BYTES,
    Failure,
    Peer,
    Results,
    Settings,
    bus_of,
    measure_round,
    write_file,
)
from _control_report import NOISE, print_growth, print_rates

from vbusfs.daemon import READY, daemon_command, start_daemon, stop_daemon
from vbusfs.fuse import mount_at

HERE = os.path.dirname(os.path.abspath(__file__))
MINIMAL_FS = os.path.join(HERE, "_minimalfs.py")


# -- the mounts --------------------------------------------------------------------------


def _mounted(path: str) -> bool:
    """Whether `path` is a mount point, from mountinfo (never touching the mount)."""
    return mount_at(path) is not None


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
        started: list[subprocess.Popen[bytes]] = []
        # registered first: a daemon killed while starting may leave its mount behind
        self._undo.append((f"stop {name}", lambda: _stop_fuse(started, mountpoint)))
        # its own session: Ctrl-C reaches the bench, which unmounts
        process, answer = start_daemon(command, log_path, new_session=True, env=env)
        started.append(process)
        self.pids[name] = process.pid
        if answer != READY:
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


def _stop_fuse(started: list[subprocess.Popen[bytes]], mountpoint: str) -> None:
    stop_daemon(started[0] if started else None, mountpoint)  # both daemons unmount on SIGTERM
    if _mounted(mountpoint):
        raise RuntimeError(f"{mountpoint} is still mounted")


def _umount_tmpfs(mountpoint: str) -> None:
    done = subprocess.run(["umount", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)
    if _mounted(mountpoint):
        raise RuntimeError(f"{mountpoint} is still mounted")


def vbusfs_cache_policy() -> tuple[list[str], float, float]:
    """The skeleton directories vbusfs lets the kernel cache, for how long, and how long
    it lets the kernel cache every other entry (0: not at all).

    The minimal filesystem copies this policy, so that both pay for the same
    kernel requests.
    """
    from vbusfs.fuse._cache import LONG_TIMEOUT, caching_enabled
    from vbusfs.model import Vbus
    from vbusfs.views import FIXED_PATHS, DirNode, node

    rest = LONG_TIMEOUT if caching_enabled() else 0.0
    empty = Vbus()
    fixed = [p for p in FIXED_PATHS if p and isinstance(node(empty, p), DirNode)]
    return sorted("/".join(p) for p in fixed), LONG_TIMEOUT, rest


def baseline_command(baseline: str, command: list[str]) -> list[str]:
    """`command` (`python -m vbusfs ...`) run on the vbusfs of checkout `baseline`."""
    assert command[1:3] == ["-m", "vbusfs"], command
    run = (
        f"import runpy, sys; sys.path.insert(0, {baseline!r}); "
        "sys.argv[0] = 'vbusfs'; runpy.run_module('vbusfs', run_name='__main__')"
    )
    return [command[0], "-c", run, *command[3:]]


def start_all(
    mounts: Mounts, workdir: str, scales: Sequence[int], baseline: str | None = None
) -> tuple[list[Peer], str]:
    """Two vbusfs daemons, two minimal filesystems and one tmpfs with a tree per scale
    (and two daemons of the `baseline` checkout's vbusfs, given one)."""
    env = dict(os.environ, VBUSFS_RUNTIME_DIR=os.path.join(workdir, "run"))
    python = sys.executable
    fixed, fixed_timeout, timeout = vbusfs_cache_policy()
    minimal_args = [f"--fixed={path}" for path in fixed]
    minimal_args += [f"--fixed-timeout={fixed_timeout}", f"--timeout={timeout}"]
    peers = []
    for scale in scales:
        if baseline is not None:
            before = os.path.join(workdir, f"before-{scale}")
            os.mkdir(before)
            mounts.start_fuse(
                f"before-{scale}",
                before,
                lambda fd, mnt=before: baseline_command(baseline, daemon_command(mnt, fd)),
                env,
            )
            peers.append(Peer("before", scale, before))
        vbusfs = os.path.join(workdir, f"vbusfs-{scale}")
        os.mkdir(vbusfs)
        mounts.start_fuse(
            f"vbusfs-{scale}", vbusfs, lambda fd, mnt=vbusfs: daemon_command(mnt, fd), env
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
            write_file(peer.type_file(d), TYPE_BYTES)
        else:
            # The peers' `type` only matters for new devices (made in each round);
            # their sys side is a directory holding the attribute file.
            os.mkdir(peer.sys_device(d))
            write_file(peer.attribute(d), "0\n")
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


# -- main ------------------------------------------------------------------------------------


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


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def parse_args(argv: list[str] | None) -> tuple[Settings, bool, str | None]:
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
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help="also run the vbusfs of another checkout (a built one: before/after in one run)",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = replace(settings, rounds=args.rounds)
    if args.scales:
        scales = tuple(int(s) for s in args.scales.split(","))
        if len(scales) != 2 or scales[0] >= scales[1] or scales[0] < 10 * DEVICES_PER_BUS:
            parser.error("--scales takes two increasing populations of at least 100")
        settings = replace(settings, scales=(scales[0], scales[1]))
    baseline = os.path.abspath(args.baseline) if args.baseline else None
    if baseline is not None and not os.path.isdir(os.path.join(baseline, "vbusfs")):
        parser.error(f"--baseline: no vbusfs package in {baseline}")
    return replace(settings, sample=min(settings.sample, settings.scales[0])), args.pin, baseline


def run(
    settings: Settings, pin: bool, mounts: Mounts, workdir: str, baseline: str | None = None
) -> int:
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
    peers, tmpfs_where = start_all(mounts, workdir, settings.scales, baseline)
    before = f", 2 x before ({baseline})" if baseline else ""
    print(f"  mounted 2 x vbusfs{before}, 2 x minimal under {workdir}; tmpfs: {tmpfs_where}")
    fixed, fixed_timeout, timeout = vbusfs_cache_policy()
    print(
        f"  cache policy of vbusfs, copied by minimal: {len(fixed)} skeleton directories "
        f"cached {fixed_timeout:.0f} s, everything else {timeout:.0f} s; direct_io on files"
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
    problems = [p for peer in peers if peer.kind == "vbusfs" for p in check_vbusfs(peer)]
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
    settings, pin, baseline = parse_args(argv)
    if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
        print("control.py: needs /dev/fuse and fusermount3 (run `make setup`)", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="vbusfs-bench-")
    mounts = Mounts(workdir)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    status = 1
    try:
        status = run(settings, pin, mounts, workdir, baseline)
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
