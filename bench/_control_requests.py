"""How many FUSE requests the control-plane operations of bench/control.py cost vbusfs.

Each operation is done once to warm the kernel's caches and then counted: the
daemon runs in this process (a child per vbusfs measured), its handlers wrapped to
count each request by kind, over a model of `--devices` devices (venet-loopback, ten
per bus, each linked). `--baseline CHECKOUT` counts the vbusfs of another checkout
too (a built one, as bench/control.py's `--baseline`), side by side.

Needs /dev/fuse (run `make setup`). Usage:
  .venv/bin/python bench/_control_requests.py [--devices N] [--baseline CHECKOUT]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

HANDLERS = [
    "lookup",
    "getattr",
    "setattr",
    "readlink",
    "opendir",
    "readdir",
    "releasedir",
    "mkdir",
    "rmdir",
    "unlink",
    "symlink",
    "open",
    "read",
    "write",
    "release",
    "flush",
    "getxattr",
    "listxattr",
    "statfs",
    "forget",
    "poll",
]
HERE = os.path.abspath(__file__)


def operations(root: str) -> dict[str, Callable[[], object]]:
    """What is counted, each a call on the mount at `root` (device d7 on bus b0)."""
    sysd = f"{root}/sys/vbus/devices/d7"
    cfg = f"{root}/config/vbus"

    def read() -> None:
        fd = os.open(f"{sysd}/enabled", os.O_RDONLY)
        try:
            os.read(fd, 4096)
        finally:
            os.close(fd)

    def ls(path: str) -> Callable[[], object]:
        env = dict(os.environ, LC_ALL="C")
        return lambda: subprocess.run(["ls", "-l", path], stdout=subprocess.DEVNULL, env=env)

    def cycle() -> None:  # made and removed again: nothing is warm but the skeleton
        os.mkdir(f"{cfg}/devices/n")
        with open(f"{cfg}/devices/n/type", "w") as f:
            f.write("venet-loopback\n")
        os.symlink("../../devices/n", f"{cfg}/instances/b1/n")
        os.unlink(f"{cfg}/instances/b1/n")
        os.rmdir(f"{cfg}/devices/n")

    return {
        "stat device dir": lambda: os.stat(sysd),
        "stat attribute file": lambda: os.stat(f"{sysd}/enabled"),
        "attr open+read+close": read,
        "ls -l device dir": ls(sysd),
        "ls -l config device dir": ls(f"{cfg}/devices/d7"),
        "listdir config/vbus/devices": lambda: os.listdir(f"{cfg}/devices"),
        "mkdir+type+link+unlink+rmdir": cycle,
    }


def child(devices: int) -> None:
    """Mount a counting vbusfs, count each operation's requests, print them as JSON."""
    import trio

    from vbusfs import fuse
    from vbusfs.classes import default_model

    vbus = default_model()
    for b in range((devices + 9) // 10):
        vbus.create_bus(f"b{b}")
    for i in range(devices):
        vbus.create_device(f"d{i}")
        vbus.set_device_type(f"d{i}", "venet-loopback")
        vbus.link(f"b{i // 10}", f"d{i}", f"d{i}")
    ops = fuse.VbusOperations(vbus)
    counts: collections.Counter[str] = collections.Counter()
    for name in HANDLERS:
        handler = getattr(ops, name)

        def counted(*args: Any, _name: str = name, _handler: Any = handler) -> Any:
            counts[_name] += 1
            return _handler(*args)

        setattr(ops, name, counted)
    root = tempfile.mkdtemp(prefix="vbusfs-requests-")
    found: dict[str, dict[str, int]] = {}

    def measure() -> None:
        for label, call in operations(root).items():
            call()  # warm
            counts.clear()
            call()
            found[label] = dict(counts)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fuse.handle_requests)
            try:
                await trio.to_thread.run_sync(measure)
            finally:
                fuse.terminate()

    fuse.mount(ops, root)
    try:
        trio.run(main)
    finally:
        fuse.close()
        os.rmdir(root)
    print(json.dumps(found))


def count(checkout: str | None, devices: int) -> dict[str, dict[str, int]]:
    """Run the child on this checkout's vbusfs or `checkout`'s."""
    path = [checkout] if checkout else []
    code = (
        f"import runpy, sys; sys.path[:0] = {path!r}; "
        f"runpy.run_path({HERE!r}, run_name='requests')['child']({devices})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd="/"
    )
    if done.returncode != 0:
        raise SystemExit(f"counting failed ({checkout or 'this checkout'}):\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FUSE requests per control-plane operation")
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--baseline", metavar="CHECKOUT")
    args = parser.parse_args(argv)
    if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
        print("_control_requests.py: needs /dev/fuse and fusermount3", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.dirname(HERE))
    columns = {"vbusfs": count(here, args.devices)}
    if args.baseline:
        columns["before"] = count(os.path.abspath(args.baseline), args.devices)
    print(f"FUSE requests per operation, warm caches, {args.devices:,} devices")
    print(f"  {'operation':<30}" + "".join(f"{name:>9}" for name in columns) + "   (vbusfs's)")
    for label in columns["vbusfs"]:
        totals = [sum(column[label].values()) for column in columns.values()]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(columns["vbusfs"][label].items()))
        print(f"  {label:<30}" + "".join(f"{t:>9}" for t in totals) + f"   {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
