"""What watching a mount costs, and how soon a watcher hears a change, against peers run
side by side in one run.

Throughput: three vbusfs daemons are mounted at once, identical but for who watches them:
nobody; one `vbusfs monitor --json` whose output goes to /dev/null (a reader that keeps
up); one monitor that never reads (its buffer fills, then every change is counted as
dropped). The same operations run on each in turn, in short slices whose order rotates
every round, so noise on this small shared machine hits all three alike: attribute stores
(one `write(2)` each on an open attribute file) and `mkdir`+`rmdir` pairs of a device.
Each rate is the best slice of all rounds (as timeit takes the best repeat); the ratio to
the unwatched daemon is what a monitor costs the writers.

Latency: one store, then wait for the monitor's record of it (a client of the library in
this process), against vbusfs's other way to hear a change (poll(2) on the attribute file,
woken with POLLPRI) and the kernel's own change notification (a write to a tmpfs file and
the inotify event for it). All are round trips measured in this process, p50 and p99.

Usage: .venv/bin/python bench/monitor.py [--rounds R] [--samples N]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from _stats import p50_p99

from vbusfs import client
from vbusfs.testing import LiveMount

IN_MODIFY = 0x2


def stores(mount: LiveMount, n: int) -> Callable[[], int]:
    fd = os.open(mount.join("sys/vbus/devices/d/burstthresh"), os.O_WRONLY)

    def run() -> int:
        for i in range(n):
            os.write(fd, b"%d" % (i % 90 + 1))
        return n

    return run


def mkdirs(mount: LiveMount, n: int) -> Callable[[], int]:
    base = mount.join("config/vbus/devices/")

    def run() -> int:
        for i in range(n):
            os.mkdir(f"{base}m{i}")
            os.rmdir(f"{base}m{i}")
        return 2 * n

    return run


def cli_monitor(mountpoint: str) -> list[subprocess.Popen[bytes]]:
    """`vbusfs monitor --json` on `mountpoint`, once its first line says it is listening,
    its output then read by a `cat` into /dev/null (a reader that keeps up); both
    processes, to be ended in that order."""
    r, w = os.pipe()
    try:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "vbusfs", "monitor", "--json", mountpoint], stdout=w
        )
    finally:
        os.close(w)
    try:
        first = b""
        while not first.endswith(b"\n"):
            if not select.select([r], [], [], 20)[0]:
                raise RuntimeError("vbusfs monitor did not start listening within 20 s")
            got = os.read(r, 4096)
            if not got:
                raise RuntimeError("vbusfs monitor ended before it listened")
            first += got
        if b'"event": "monitoring"' not in first:
            raise RuntimeError(f"vbusfs monitor's first line: {first!r}")
        drain = subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL)
    except BaseException:
        monitor.kill()
        monitor.wait()
        raise
    finally:
        os.close(r)
    return [monitor, drain]


def throughput(rounds: int) -> None:
    peers: dict[str, LiveMount] = {}
    watchers: list[subprocess.Popen[bytes]] = []
    stalled: list[client.Monitor] = []
    tops: list[str] = []
    try:
        for name in ("unwatched", "watched (reader keeps up)", "watched (reader stalled)"):
            top = tempfile.mkdtemp(prefix="vbusfs-bench-monitor-")
            tops.append(top)
            mount = LiveMount(top, debug=False).start()
            peers[name] = mount
            mount.sh(
                "mkdir config/vbus/devices/d && echo venet-tap > config/vbus/devices/d/type",
                check=True,
            )
        fast, slow = peers["watched (reader keeps up)"], peers["watched (reader stalled)"]
        watchers.extend(cli_monitor(fast.path))
        stalled.append(client.monitor(slow.path))
        operations = {"attribute store": (stores, 400), "mkdir+rmdir": (mkdirs, 60)}
        print(f"throughput, best slice of {rounds} rounds (changes/s):")
        print(f"{'operation':<18}" + "".join(f"{name:>28}" for name in peers))
        for label, (make, n) in operations.items():
            runs = {name: make(mount, n) for name, mount in peers.items()}
            best = dict.fromkeys(peers, 0.0)
            names = list(peers)
            for r in range(rounds):
                for name in names[r % 3 :] + names[: r % 3]:
                    start = time.perf_counter()
                    done = runs[name]()
                    best[name] = max(best[name], done / (time.perf_counter() - start))
            base = best["unwatched"]
            cells = "".join(f"{f'{rate:,.0f} ({rate / base:.2f}x)':>28}" for rate in best.values())
            print(f"{label:<18}{cells}")
        lost = 0
        while True:  # what the stalled monitor was told it lost
            try:
                batch = stalled[0].receive(0.5)
            except TimeoutError:
                break
            lost += sum(r.fields["count"] for r in batch if r.event == "dropped")
        print(f"the stalled monitor was told of {lost:,} dropped records (its buffer: 4,096)")
    finally:
        for monitor in stalled:
            monitor.close()
        for watcher in watchers:
            watcher.terminate()
            watcher.wait()
        for mount in peers.values():
            mount.stop()
        for top in tops:
            os.rmdir(top)


def latency(samples: int) -> None:
    top = tempfile.mkdtemp(prefix="vbusfs-bench-monitor-")
    scratch = tempfile.mkdtemp(prefix="vbusfs-bench-tmpfs-")
    mount = LiveMount(top, debug=False).start()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", scratch], check=True)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        mount.sh(
            "mkdir config/vbus/devices/d && echo venet-tap > config/vbus/devices/d/type",
            check=True,
        )
        fd = os.open(mount.join("sys/vbus/devices/d/burstthresh"), os.O_WRONLY)
        ours: list[float] = []
        polled: list[float] = []
        with client.monitor(mount.path) as watch:
            for i in range(samples):
                start = time.perf_counter()
                os.write(fd, b"%d" % (i % 90 + 1))
                while not any(r.event == "stored" for r in watch.receive(5)):
                    pass
                ours.append(time.perf_counter() - start)
        # vbusfs's other way to hear a change: poll(2) on the attribute file (sysfs's)
        watched = os.open(mount.join("sys/vbus/devices/d/burstthresh"), os.O_RDONLY)
        os.pread(watched, 4096, 0)  # arms it
        waiter = select.poll()
        waiter.register(watched, select.POLLPRI | select.POLLERR)
        for i in range(samples):
            start = time.perf_counter()
            os.write(fd, b"%d" % (i % 90 + 1))
            assert waiter.poll(5000)
            polled.append(time.perf_counter() - start)
            os.pread(watched, 4096, 0)
        os.close(watched)
        os.close(fd)
        path = os.path.join(scratch, "value")
        with open(path, "w") as f:
            f.write("0")
        notify = libc.inotify_init1(os.O_CLOEXEC)
        assert notify >= 0 and libc.inotify_add_watch(notify, path.encode(), IN_MODIFY) >= 0
        kernel: list[float] = []
        value = os.open(path, os.O_WRONLY)
        for i in range(samples):
            start = time.perf_counter()
            os.pwrite(value, b"%d" % (i % 90 + 1), 0)
            os.read(notify, 4096)
            kernel.append(time.perf_counter() - start)
        os.close(value)
        os.close(notify)
    finally:
        mount.stop()
        subprocess.run(["umount", scratch], check=False)
        os.rmdir(top)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nchange to notification, {samples} samples (µs):")
    for label, got in (
        ("vbusfs store -> monitor record", ours),
        ("vbusfs store -> poll() wake", polled),
        ("tmpfs write -> inotify", kernel),
    ):
        p50, p99 = p50_p99(got)
        print(f"{label:<32}p50 {p50 * 1e6:8.0f}   p99 {p99 * 1e6:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    if os.getuid() != 0:
        sys.exit("bench/monitor.py mounts a tmpfs peer: run it as root")
    throughput(args.rounds)
    latency(args.samples)


if __name__ == "__main__":
    main()
