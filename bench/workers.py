"""Benchmark: how long a device call waits on a worker process whose loop is busy.

    .venv/bin/python bench/workers.py [--calls N] [--rounds R]

A device with `isolation = "process"` answers its client's calls (and `stats`, and the
stop) on its worker's main thread, while its loop runs on another thread of the same
interpreter. When the loop computes in Python it holds the interpreter lock, and the
main thread waits for it. This measures the round trip of `stats()` on an open
interface of `bench-busy` (bench/_busy_device.py) from a member process, in three
states of its loop:

* idle: no requests;
* streaming, waiting in C: echoing 64-byte requests as fast as the client sends them
  (8 in flight), the loop's waits releasing the lock;
* streaming, busy in Python: every request computes 2 ms in Python (8 in flight).

Peers, side by side in every round (order rotating): the worker as vbusfs runs it
(its interpreter switches threads every 0.2 ms, `vbusfs.device._worker.SWITCH_INTERVAL`)
and the same worker with Python's default 5 ms (`switch_us` = 5000). Each cell is the
median and p99 of N calls, 5 ms apart, best round kept. The mount, daemon and members
are always stopped. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

MEMBER = r"""
import sys, threading, time
from _stats import p50_p99
from vbusfs import client
mnt, state, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(f"{mnt}/proc/self/vbus", "w") as f:
    f.write("B")
bus = client.connect(mnt)
dev = bus.open(bus.interfaces()[0].id, 1)
rr = client.RequestResponseClient(dev, count=64, slot_size=4096)
stop = threading.Event()
message = {"idle": None, "c-wait": b"x" * 64, "python": b"spin:2000"}[state]

def stream():
    in_flight = 0
    while message is not None and not stop.is_set():
        while in_flight < 8:
            rr.submit(message)
            in_flight += 1
        rr.complete(10)
        in_flight -= 1

streamer = threading.Thread(target=stream)
streamer.start()
time.sleep(0.3)
took = []
for _ in range(calls):
    start = time.perf_counter()
    dev.stats()
    took.append((time.perf_counter() - start) * 1e3)
    time.sleep(0.005)
stop.set()
streamer.join()
print(*p50_p99(took), dev.stats()["switch_us"])
"""

STATES = (("idle", "idle"), ("c-wait", "streaming, waiting in C"), ("python", "busy in Python"))
PEERS = (("vbusfs", "0"), ("python-default", "5000"))


def measure(mnt: str, switch_us: str, state: str, calls: int) -> tuple[float, float]:
    with open(os.path.join(mnt, "sys/vbus/devices/E/switch_us"), "w") as f:
        f.write(switch_us)
    done = subprocess.run(
        [sys.executable, "-c", MEMBER, mnt, state, str(calls)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    p50, p99, switch = done.stdout.split()
    if switch_us != "0" and switch != switch_us:
        raise RuntimeError(f"the worker switches every {switch} us, not {switch_us}")
    return float(p50), float(p99)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per cell")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (the best is kept)")
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [HERE, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    from vbusfs.testing import LiveMount

    path = tempfile.mkdtemp(prefix="vbusfs-bench-workers-")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        with LiveMount(path, debug=False, load=("_busy_device:BusyDevice",)) as mount:
            print(f"vbusfs mounted on {path} (daemon pid {mount.pid})", flush=True)
            mount.sh(
                "mkdir config/vbus/instances/B config/vbus/devices/E"
                " && echo bench-busy > config/vbus/devices/E/type"
                " && ln -s ../../devices/E config/vbus/instances/B/E",
                check=True,
            )
            runs = [(peer, state) for state, _ in STATES for peer in PEERS]
            for r in range(args.rounds):
                shift = r % len(runs)
                for (peer, switch_us), state in runs[shift:] + runs[:shift]:
                    cell = measure(path, switch_us, state, args.calls)
                    results.setdefault((peer, state), []).append(cell)
    finally:
        os.rmdir(path)
    print(
        f"stats() round trip on a worker, ms (median / p99 of {args.calls} calls, "
        f"best of {args.rounds} rounds)"
    )
    print(f"{'loop':28s}" + "".join(f"{peer:>22s}" for peer, _ in PEERS) + "   ratio p50")
    for state, label in STATES:
        cells = [min(results[peer, state]) for peer, _ in PEERS]
        text = "".join(f"{p50:>13.2f} / {p99:6.2f}" for p50, p99 in cells)
        ratio = cells[1][0] / cells[0][0] if cells[0][0] else float("nan")
        print(f"{label:28s}{text}   {ratio:.1f}x")
    idle = min(results["vbusfs", "idle"])[0]
    busy = min(results["vbusfs", "python"])[0]
    print(f"vbusfs worker busy in Python vs idle: {busy / idle:.2f}x (p50)")
    print("noise: a shared 2-CPU VM; peers alternate in every round, the best round is kept.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
