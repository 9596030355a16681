"""Benchmark: unmodified programs (iperf3, ping) between two network namespaces, over
vbusfs and over the kernel's and a user's own paths, side by side in one run.

    .venv/bin/python bench/net.py [--quick] [--seconds S]      (as root)

Every path joins namespace A (10.15.N.1) to namespace B (10.15.N.2), each pair of its own,
made here and deleted after:

* **veth**: a veth pair, the kernel's own path (the physical reference);
* **bridge**: a Linux bridge in a third namespace, a veth to each side;
* **vbusfs offloads**: `vbusfs enet` in A and in B, each a member of its own bus, one
  venet-switch linked into both buses (offloads negotiated: large TCP segments cross
  the rings whole);
* **vbusfs bare**: the same with `--no-offloads` (1514-byte frames);
* **vbusfs mixed**: offloads in A, `--no-offloads` in B: the switch cuts A's large TCP
  segments into frames for B;
* **vbusfs bare (slots N)**, **vbusfs mixed (slots N)**, with ``--slots N``: the same
  with ``vbusfs enet --slots N`` on the bare sides, right after its peer with the default;
* **vbusfs venet-tap**: `vbusfs enet` in A on a venet-tap device, whose TAP lives in
  the daemon's own namespace (B);
* **vbusfs venet-tap (before)**, with ``--before DIR``: the same on a second daemon
  that runs the vbusfs of the checkout DIR (its compiled module built in place, e.g.
  ``setup.py build_ext --inplace``): a change measured against its peer in one run;
* **relay**: a plain Python relay (this file, `--relay`): one process reading one TAP and
  writing the other, what a user would write instead.

Each path gets iperf3 TCP throughput from A to B (1 stream, then 4 streams, --seconds
each, 5 by default) with the sender's TCP retransmits, and ping's round-trip time (200
pings 10 ms apart, the median).
The table gives each figure against veth's and the relay's. The vbusfs daemon is a
LiveMount child in a private network namespace of its own; every process started here
is ended by its pid and every namespace deleted, whatever happens.  It asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from _stats import p50_p99

from vbusfs.testing import LiveMount

#: issue 14's targets on this 2-CPU machine
TARGET_VS_VETH = 0.25
TARGET_VS_RELAY = 3.0
TARGET_PING_X_VETH = 3.0
#: the daemon of each venet-tap path (its attribute reads are timed too)
TAP_MOUNTS: dict[str, LiveMount] = {}
#: what the vbusfs paths are run with (--spin-us, --burstthresh)
EXTRA_ENET = ""
BURSTTHRESH = 20
#: --slots: the vbusfs bare and mixed paths run again with `vbusfs enet --slots SLOTS`
SLOTS: int | None = None


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def in_ns(ns: str) -> list[str]:
    # nsenter, not `ip netns exec`: its mount namespace would hold a copy of the vbusfs
    # mount for as long as the command runs
    return ["nsenter", f"--net=/run/netns/{ns}", "--"]


@dataclass
class Lab:
    """Namespaces and processes of the run, all gone after it."""

    tag: str = field(default_factory=lambda: f"vbusfs-net-{os.getpid()}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def netns(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh(*in_ns(ns), "ip", "link", "set", "lo", "up")
        return ns

    def start(self, prefix: list[str], *argv: str) -> subprocess.Popen[str]:
        """Start argv (in a namespace: `prefix`); it is stopped at close() if still running."""
        proc = subprocess.Popen(
            [*prefix, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.processes.append(proc)
        return proc

    def spawn(self, prefix: list[str], *argv: str) -> str:
        """start() argv and wait for its first line of output (it is up): that line."""
        proc = self.start(prefix, *argv)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            raise RuntimeError(f"{argv} did not start: {proc.communicate()[1]}")
        return line

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        for ns in self.namespaces:
            sh("ip", "netns", "delete", ns, check=False)


@dataclass
class Path:
    name: str
    a: str  # namespace of the iperf3/ping client
    b: list[str]  # how to run a command where the server is
    server: str  # the server's address


def addr(prefix: list[str], ifname: str, cidr: str) -> None:
    sh(*prefix, "ip", "addr", "add", cidr, "dev", ifname)
    sh(*prefix, "ip", "link", "set", ifname, "up")


def veth_path(lab: Lab, n: int) -> Path:
    a, b = lab.netns("veth-a"), lab.netns("veth-b")
    sh("ip", "link", "add", "va", "netns", a, "type", "veth", "peer", "vb", "netns", b)
    addr(in_ns(a), "va", f"10.15.{n}.1/24")
    addr(in_ns(b), "vb", f"10.15.{n}.2/24")
    return Path("veth", a, in_ns(b), f"10.15.{n}.2")


def bridge_path(lab: Lab, n: int) -> Path:
    a, b, br = lab.netns("br-a"), lab.netns("br-b"), lab.netns("br")
    sh(*in_ns(br), "ip", "link", "add", "br0", "type", "bridge")
    sh(*in_ns(br), "ip", "link", "set", "br0", "up")
    for side, ns in (("a", a), ("b", b)):
        sh("ip", "link", "add", f"v{side}", "netns", ns, "type", "veth", "peer", f"p{side}",
           "netns", br)  # fmt: skip
        sh(*in_ns(br), "ip", "link", "set", f"p{side}", "master", "br0")
        sh(*in_ns(br), "ip", "link", "set", f"p{side}", "up")
    addr(in_ns(a), "va", f"10.15.{n}.1/24")
    addr(in_ns(b), "vb", f"10.15.{n}.2/24")
    return Path("bridge", a, in_ns(b), f"10.15.{n}.2")


def enet(lab: Lab, mnt: str, bus: str, ns: str, *args: str) -> str:
    """`vbusfs enet` as a member of `bus` in `ns`; its interface's name."""
    command = (
        f"echo {bus} > {mnt}/proc/self/vbus && "
        f"exec {sys.executable} -m vbusfs enet --mount {mnt} {' '.join(args)}{EXTRA_ENET}"
    )
    return lab.spawn(in_ns(ns), "sh", "-c", command).split()[2]


def switch_path(
    lab: Lab, mount: LiveMount, n: int, name: str, *args: str, b_args: tuple[str, ...] = ()
) -> Path:
    """Two drivers on one venet-switch: A with `args`, B with `args` and `b_args`."""
    buses = (f"{name}-a", f"{name}-b")
    mount.sh(
        f"mkdir config/vbus/devices/{name} && "
        f"echo venet-switch > config/vbus/devices/{name}/type && "
        f"echo {BURSTTHRESH} > sys/vbus/devices/{name}/burstthresh && "
        + " && ".join(
            f"mkdir config/vbus/instances/{bus} && "
            f"ln -s ../../devices/{name} config/vbus/instances/{bus}/"
            for bus in buses
        ),
        check=True,
    )
    a, b = lab.netns(f"{name}-a"), lab.netns(f"{name}-b")
    addr(in_ns(a), enet(lab, mount.path, buses[0], a, *args), f"10.15.{n}.1/24")
    addr(in_ns(b), enet(lab, mount.path, buses[1], b, *args, *b_args), f"10.15.{n}.2/24")
    label = "mixed" if b_args else "bare" if "--no-offloads" in args else "offloads"
    slots = [arg.split("=")[1] for arg in (*args, *b_args) if arg.startswith("--slots=")]
    suffix = f" (slots {slots[0]})" if slots else ""
    return Path(f"vbusfs {label}{suffix}", a, in_ns(b), f"10.15.{n}.2")


def tap_path(lab: Lab, mount: LiveMount, n: int, label: str = "vbusfs venet-tap") -> Path:
    TAP_MOUNTS[label] = mount
    mount.sh(
        "mkdir config/vbus/instances/tap config/vbus/devices/tap && "
        "echo venet-tap > config/vbus/devices/tap/type && "
        f"echo {BURSTTHRESH} > sys/vbus/devices/tap/burstthresh && "
        "echo 1 > sys/vbus/devices/tap/enabled && "
        "ln -s ../../devices/tap config/vbus/instances/tap/",
        check=True,
    )
    host = ["nsenter", f"--net=/proc/{mount.pid}/ns/net", "--"]
    sh(*host, "ip", "link", "set", "lo", "up")
    addr(host, mount.sh("cat sys/vbus/devices/tap/ifname").stdout.strip(), f"10.15.{n}.2/24")
    a = lab.netns(f"tap{n}-a")
    addr(in_ns(a), enet(lab, mount.path, "tap", a), f"10.15.{n}.1/24")
    return Path(label, a, host, f"10.15.{n}.2")


def relay_path(lab: Lab, n: int) -> Path:
    a, b = lab.netns("relay-a"), lab.netns("relay-b")
    lab.spawn(in_ns(a), sys.executable, os.path.abspath(__file__), "--relay", b)
    addr(in_ns(a), "relay0", f"10.15.{n}.1/24")
    addr(in_ns(b), "relay1", f"10.15.{n}.2/24")
    return Path("relay", a, in_ns(b), f"10.15.{n}.2")


# ---- the plain relay -----------------------------------------------------------


def open_tap(name: str) -> int:
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", name.encode(), 0x0002 | 0x1000))
    return fd


def relay(other_ns: str) -> None:
    """Make relay0 here and relay1 in `other_ns`, then copy frames between them."""
    here = open_tap("relay0")
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{other_ns}") as f:
        if libc.setns(f.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
    there = open_tap("relay1")
    print("relay ready", flush=True)
    peer = {here: there, there: here}
    while True:
        for fd in select.select([here, there], [], [])[0]:
            frame = os.read(fd, 65536)
            with contextlib.suppress(OSError):
                os.write(peer[fd], frame)


# ---- measuring -----------------------------------------------------------------


@dataclass
class Figures:
    one: float = 0.0  # Gbit/s, 1 stream
    four: float = 0.0  # Gbit/s, 4 streams
    retr_one: int = 0  # TCP retransmits (the sender's), 1 stream
    retr_four: int = 0  # the same, 4 streams
    ping: float = 0.0  # ms, average RTT
    # venet-tap rows: the daemon's attribute reads (ms, p50 and p99), idle and during iperf3
    reads_idle: tuple[float, float] | None = None
    reads_busy: tuple[float, float] | None = None


class AttributeReads:
    """Reads one attribute file of the daemon every millisecond on a thread of its own,
    timing each (open, read, close: a FUSE request each, never served from a cache)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            with open(self.file) as f:
                f.read()
            self.times.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.001)

    def __enter__(self) -> AttributeReads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def quantiles(self) -> tuple[float, float]:
        return p50_p99(self.times)


def iperf3(lab: Lab, path: Path, seconds: float, streams: int) -> tuple[float, int]:
    """Gbit/s received, and the sender's TCP retransmits."""
    server = lab.start(path.b, "iperf3", "-s", "-1", "-B", path.server)
    for _ in range(100):  # until the server listens
        out = sh(*in_ns(path.a), "iperf3", "-c", path.server, "-t", f"{seconds:g}", "-J",
                 "-P", str(streams), check=False, timeout=seconds + 60)  # fmt: skip
        got = json.loads(out.stdout) if out.stdout.strip() else {}
        if out.returncode == 0 and "sum_received" in got.get("end", {}):
            # the next run's server binds the same port: this one must be gone first
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(10)
            end = got["end"]
            retransmits = int(end.get("sum_sent", {}).get("retransmits", 0))
            return float(end["sum_received"]["bits_per_second"]) / 1e9, retransmits
        time.sleep(0.1)
    raise RuntimeError(f"iperf3 over {path.name}: {out.stdout[-500:]} {out.stderr}")


def ping(path: Path, count: int) -> float:
    """The median round trip of `count` pings, 10 ms apart (the median, not the mean: on a
    shared machine a few pings wait for a CPU for milliseconds)."""
    sh(*in_ns(path.a), "ping", "-c", "3", "-i", "0.05", "-W", "1", path.server)  # ARP, warm
    out = sh(*in_ns(path.a), "ping", "-c", str(count), "-i", "0.01", "-W", "1",
             path.server, timeout=count + 30)  # fmt: skip
    times = sorted(float(t) for t in re.findall(r"time=([\d.]+) ms", out.stdout))
    if not times:
        raise RuntimeError(f"ping over {path.name}: {out.stdout}")
    return statistics.median(times)


def report(figures: dict[str, Figures]) -> None:
    veth, relay_ = figures["veth"], figures["relay"]
    print()
    print(
        f"{'path':<25} | {'1 stream':>8} | {'/veth':>5} | {'/relay':>6} | {'4 streams':>9} | "
        f"{'/veth':>5} | {'ping ms':>7} | {'x veth':>6} | {'retransmits':>13}"
    )
    print("-" * 110)
    for name, f in figures.items():
        print(
            f"{name:<25} | {f.one:>8.2f} | {f.one / veth.one:>5.2f} | {f.one / relay_.one:>6.1f} | "
            f"{f.four:>9.2f} | {f.four / veth.four:>5.2f} | {f.ping:>7.3f} | "
            f"{f.ping / veth.ping:>6.1f} | {f.retr_one:>6}/{f.retr_four:<6}"
        )
    print(
        "throughput in Gbit/s (iperf3 TCP, A to B); ping: median round trip; "
        "retransmits: the sender's, 1 stream/4 streams"
    )
    for name, f in figures.items():
        if f.reads_idle and f.reads_busy:
            (i50, i99), (b50, b99) = f.reads_idle, f.reads_busy
            print(
                f"{name}: the daemon's attribute reads p50/p99 {i50:.2f}/{i99:.2f} ms idle, "
                f"{b50:.2f}/{b99:.2f} ms during the 1-stream run ({b50 / i50:.1f}x/"
                f"{b99 / i99:.1f}x)"
            )
    ours = figures.get("vbusfs offloads")
    if ours:
        checks = (
            (f"offloads >= {TARGET_VS_VETH:.0%} of veth", ours.one / veth.one >= TARGET_VS_VETH),
            (f"offloads >= {TARGET_VS_RELAY:g}x relay", ours.one / relay_.one >= TARGET_VS_RELAY),
            (f"ping <= {TARGET_PING_X_VETH:g}x veth", ours.ping / veth.ping <= TARGET_PING_X_VETH),
        )
        print(
            "targets (issue 14): "
            + "; ".join(f"{t}: {'met' if ok else 'NOT met'}" for t, ok in checks)
        )
    print("noise: a shared 2-CPU VM; every path ran in this one run, one after the other.")


@contextlib.contextmanager
def vbusfs_mount(before: str | None = None) -> Iterator[LiveMount]:
    """A daemon in a network namespace of its own; with `before`, running that checkout."""
    path = tempfile.mkdtemp(prefix="vbusfs-net-")
    prefix = () if before is None else ("env", f"PYTHONPATH={os.path.abspath(before)}")
    try:
        with LiveMount(path, private_netns=True, debug=False, prefix=prefix) as mount:
            yield mount
    finally:
        os.rmdir(path)


def run(seconds: float, pings: int, only: set[str] | None, before: str | None = None) -> None:
    figures: dict[str, Figures] = {}
    with contextlib.ExitStack() as stack:
        lab = Lab()
        stack.callback(lab.close)  # after the mounts are gone: LIFO, so registered first
        mount = stack.enter_context(vbusfs_mount())
        old = stack.enter_context(vbusfs_mount(before)) if before else None
        builders: dict[str, Callable[[int], Path]] = {
            "veth": lambda n: veth_path(lab, n),
            "bridge": lambda n: bridge_path(lab, n),
            "vbusfs offloads": lambda n: switch_path(lab, mount, n, "swo"),
            "vbusfs bare": lambda n: switch_path(lab, mount, n, "swb", "--no-offloads"),
            "vbusfs mixed": lambda n: switch_path(lab, mount, n, "swm", b_args=("--no-offloads",)),
            "vbusfs venet-tap": lambda n: tap_path(lab, mount, n),
        }
        if SLOTS is not None:  # each right after its peer with the default
            more = f"--slots={SLOTS}"
            rows = list(builders.items())
            at = [name for name, _ in rows].index("vbusfs mixed")
            rows.insert(
                at,
                (
                    f"vbusfs bare (slots {SLOTS})",
                    lambda n: switch_path(lab, mount, n, "swbs", "--no-offloads", more),
                ),
            )
            mixed = (
                f"vbusfs mixed (slots {SLOTS})",
                lambda n: switch_path(lab, mount, n, "swms", b_args=("--no-offloads", more)),
            )
            rows.insert(at + 2, mixed)
            builders = dict(rows)
        if old is not None:
            label = "vbusfs venet-tap (before)"
            builders[label] = lambda n: tap_path(lab, old, n, label)
        builders["relay"] = lambda n: relay_path(lab, n)
        for n, (name, build) in enumerate(builders.items(), 1):
            if only and name.split(" (")[0] not in only and name not in ("veth", "relay"):
                continue
            path = build(n)
            f = figures[name] = Figures()
            f.ping = ping(path, pings)
            if name in TAP_MOUNTS:
                attribute = TAP_MOUNTS[name].join("sys/vbus/devices/tap/mtu")
                with AttributeReads(attribute) as idle:
                    time.sleep(max(1.0, seconds / 2))
                with AttributeReads(attribute) as busy:
                    f.one, f.retr_one = iperf3(lab, path, seconds, 1)
                f.reads_idle, f.reads_busy = idle.quantiles(), busy.quantiles()
            else:
                f.one, f.retr_one = iperf3(lab, path, seconds, 1)
            f.four, f.retr_four = iperf3(lab, path, seconds, 4)
            print(
                f"{name}: {f.one:.2f} / {f.four:.2f} Gbit/s, ping {f.ping:.3f} ms, "
                f"retransmits {f.retr_one} / {f.retr_four}",
                flush=True,
            )
        # the drivers end before the mount goes
        for proc in lab.processes:
            if proc.poll() is None:
                proc.terminate()
    report(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s runs, 50 pings")
    parser.add_argument("--seconds", type=float, help="seconds per iperf3 run (default 5)")
    parser.add_argument("--pings", type=int, help="pings per path (default 200)")
    parser.add_argument("--only", action="append", help="a path to run (veth and relay always)")
    parser.add_argument("--spin-us", type=int, help="vbusfs enet --spin-us (default: its own)")
    parser.add_argument("--burstthresh", type=int, default=20, help="venet devices' burstthresh")
    parser.add_argument("--slots", type=int, help="also bare and mixed with enet --slots N")
    parser.add_argument("--before", metavar="DIR", help="also venet-tap on DIR's vbusfs")
    parser.add_argument("--relay", metavar="NS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global EXTRA_ENET, BURSTTHRESH, SLOTS
    EXTRA_ENET = "" if args.spin_us is None else f" --spin-us {args.spin_us}"
    BURSTTHRESH = args.burstthresh
    SLOTS = args.slots
    if args.relay:
        relay(args.relay)
        return 0
    missing = [t for t in ("ip", "nsenter", "iperf3", "ping") if shutil.which(t) is None]
    if os.getuid() != 0 or missing:
        print(f"bench/net.py needs root and {', '.join(missing) or 'namespaces'}: skipped")
        return 0
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    pings = args.pings or (50 if args.quick else 200)
    run(seconds, pings, set(args.only or ()) or None, args.before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
