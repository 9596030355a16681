"""Soak: 8 mixed workers against one daemon for a while; its RSS, fds and log afterwards.

    .venv/bin/python bench/soak.py [--seconds 300]

Workers (each a separate process, each ending by itself when the time is up):
3 members moving frames through venet-loopback (connect, open, 64 frames out and back,
close, again), 2 administrators (mkdir, type, link, attribute read, unlink, rmdir),
2 readers (listings, attribute reads, readlink across the trees), 1 hostile member
(junk datagrams and connection churn on the connector). The daemon's RSS and open fds are
sampled every 5 s; at the end the table gives them at the start, the peak and the end,
the operations each kind made, and the internal errors in the daemon's log; also the
inodes the daemon holds (statfs f_files: one per path the kernel keeps an entry for),
which must not grow with objects made and removed. Needs root
(it joins processes to buses from the shell) and /dev/fuse.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import time

from vbusfs import client
from vbusfs.testing import LiveMount

BUSES = 3


def daemon_figures(pid: int, mnt: str) -> tuple[int, int, int]:
    """The daemon's resident memory (KiB), open file descriptors and inodes."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd")), os.statvfs(mnt).f_files


def member(mnt: str, bus: str, until: float, counts: multiprocessing.Queue) -> None:
    with open(f"{mnt}/proc/self/vbus", "w") as f:
        f.write(bus)
    frame = bytes(range(6)) * 2 + b"\x88\xb5" + b"x" * 100
    done = 0
    while time.monotonic() < until:
        with client.connect(mnt) as connection, connection.open_venet(0) as nic:
            for _ in range(64):
                nic.send(frame)
            got = 0
            while got < 64 and time.monotonic() < until + 5:
                got += len(nic.recv_batch(64, timeout=1.0))
            done += got
    counts.put(("frames", done))


def administrator(mnt: str, me: int, until: float, counts: multiprocessing.Queue) -> None:
    config = f"{mnt}/config/vbus"
    bus = f"{config}/instances/admin{me}"
    os.mkdir(bus)
    done = 0
    while time.monotonic() < until:
        device = f"{config}/devices/adm{me}-{done}"
        os.mkdir(device)
        with open(f"{device}/type", "w") as f:
            f.write("venet-loopback")
        os.symlink(device, f"{bus}/adm{me}-{done}")
        with open(f"{mnt}/sys/vbus/devices/adm{me}-{done}/client_mac") as f:
            f.read()
        os.unlink(f"{bus}/adm{me}-{done}")
        os.rmdir(device)
        done += 1
    os.rmdir(bus)
    counts.put(("admin cycles", done))


def reader(mnt: str, until: float, counts: multiprocessing.Queue) -> None:
    done = 0
    while time.monotonic() < until:
        for root, dirs, files in os.walk(f"{mnt}/sys/vbus"):
            for name in files:
                try:
                    with open(os.path.join(root, name)) as f:
                        f.read()
                except OSError:
                    pass  # removed meanwhile by an administrator
            for name in dirs:
                path = os.path.join(root, name)
                try:
                    if os.path.islink(path):
                        os.readlink(path)
                except OSError:
                    pass  # removed meanwhile by an administrator
        done += 1
    counts.put(("tree walks", done))


def hostile(mnt: str, until: float, counts: multiprocessing.Queue) -> None:
    with open(f"{mnt}/proc/self/vbus", "w") as f:
        f.write("bus0")
    path = os.getxattr(mnt, "user.vbusfs.connector").decode()
    junk = [b"not json", b"[]", b"{" * 2000, b'{"op": 7, "seq": "x"}', os.urandom(512)]
    done = 0
    while time.monotonic() < until:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(2.0)
            sock.connect(path)
            sock.recv(65536)  # the greeting
            for data in junk:
                sock.send(data)
                try:
                    sock.recv(65536)
                except (TimeoutError, ConnectionError):
                    break
                done += 1
    counts.put(("junk requests", done))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="vbusfs-soak-")
    mount = LiveMount(top, debug=False).start()
    try:
        for n in range(BUSES):
            mount.sh(
                f"mkdir config/vbus/instances/bus{n} config/vbus/devices/loop{n} && "
                f"echo venet-loopback > config/vbus/devices/loop{n}/type && "
                f"echo 1 > sys/vbus/devices/loop{n}/enabled && "
                f"ln -s $PWD/config/vbus/devices/loop{n} config/vbus/instances/bus{n}/",
                check=True,
            )
        time.sleep(1.0)
        start = daemon_figures(mount.pid, top)
        until = time.monotonic() + args.seconds
        counts: multiprocessing.Queue = multiprocessing.Queue()
        workers = [
            *(
                multiprocessing.Process(target=member, args=(top, f"bus{n}", until, counts))
                for n in range(3)
            ),
            *(
                multiprocessing.Process(target=administrator, args=(top, n, until, counts))
                for n in range(2)
            ),
            *(multiprocessing.Process(target=reader, args=(top, until, counts)) for _ in range(2)),
            multiprocessing.Process(target=hostile, args=(top, until, counts)),
        ]
        for worker in workers:
            worker.start()
        peak = start
        samples = []
        while any(w.is_alive() for w in workers):
            time.sleep(5.0)
            figures = daemon_figures(mount.pid, top)
            samples.append(figures)
            peak = (max(peak[0], figures[0]), max(peak[1], figures[1]), max(peak[2], figures[2]))
        totals: dict[str, int] = {}
        while not counts.empty():
            kind, n = counts.get()
            totals[kind] = totals.get(kind, 0) + n
        failed = [w.exitcode for w in workers if w.exitcode != 0]
        time.sleep(2.0)
        end = daemon_figures(mount.pid, top)
        log = mount.log
    finally:
        mount.stop()
        os.rmdir(top)
    internal = log.count("internal error") + log.count("Traceback")
    print(f"soak: 8 workers for {args.seconds:.0f} s against one daemon")
    print("| | RSS (KiB) | open fds | inodes |")
    print("|---|---|---|---|")
    for label, (rss, fds, inodes) in (("start", start), ("peak", peak), ("end", end)):
        print(f"| {label} | {rss:,} | {fds} | {inodes:,} |")
    print("work done: " + ", ".join(f"{v:,} {k}" for k, v in sorted(totals.items())))
    print(f"internal errors in the daemon's log: {internal}; workers that failed: {failed}")
    if (mid := len(samples) // 2) and samples:
        print(
            f"at the middle sample: RSS {samples[mid][0]:,} KiB, {samples[mid][2]:,} inodes; "
            f"at the last: RSS {samples[-1][0]:,} KiB, {samples[-1][2]:,} inodes"
        )
    sys.exit(1 if internal or failed else 0)


if __name__ == "__main__":
    main()
