"""How many FUSE requests the control-plane operations of bench/control.py cost vbusfs.

Each operation is done once to warm the kernel's caches and then counted: the
daemon runs in this process (a child per vbusfs measured), its request handlers (every
one pyfuse3 dispatches) wrapped to count each request by kind, over a model of
`--devices` devices (venet-loopback, ten per bus, each linked). `--baseline CHECKOUT`
counts the vbusfs of another checkout too (a built one, as bench/control.py's
`--baseline`), side by side. tests/mount/test_request_counts.py runs `child` too, with
the directories it lists.

Needs /dev/fuse (run `make setup`). Usage:
  .venv/bin/python bench/_control_requests.py [--devices N] [--baseline CHECKOUT]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

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
        "ls -l device dir": lambda: ls_l(sysd),
        "ls -l config device dir": lambda: ls_l(f"{cfg}/devices/d7"),
        "listdir config/vbus/devices": lambda: os.listdir(f"{cfg}/devices"),
        "mkdir+type+link+unlink+rmdir": cycle,
    }


def ls_l(path: str) -> str:
    """What `ls -l path` shows (in the C locale)."""
    env = dict(os.environ, LC_ALL="C")
    argv = ["ls", "-l", path]
    return subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout


def child(devices: int, listed: list[str] | None = None, root: str | None = None) -> None:
    """Mount a counting vbusfs (at `root`, else a new temporary directory), count each
    operation's requests, print them as JSON: per operation, its requests by kind and
    what it showed (None but for an `ls -l`). With `listed` (paths under the mount) the
    operations are an `ls -l` of each of them instead of `operations`'."""
    import inspect

    import pyfuse3
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
    # a request: a call of one of the handlers pyfuse3 dispatches the kernel's requests to
    requests = [n for n, v in vars(pyfuse3.Operations).items() if inspect.iscoroutinefunction(v)]
    for name in requests:
        handler = getattr(ops, name)

        def counted(*args: Any, _name: str = name, _handler: Any = handler) -> Any:
            counts[_name] += 1
            return _handler(*args)

        setattr(ops, name, counted)
    mountpoint = root or tempfile.mkdtemp(prefix="vbusfs-requests-")
    if listed is None:
        calls = operations(mountpoint)
    else:
        calls = {path: functools.partial(ls_l, f"{mountpoint}/{path}") for path in listed}
    found: dict[str, tuple[dict[str, int], object]] = {}

    def measure() -> None:
        for label, call in calls.items():
            call()  # warm
            counts.clear()
            shown = call()
            found[label] = (dict(counts), shown if isinstance(shown, str) else None)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fuse.handle_requests)
            try:
                await trio.to_thread.run_sync(measure)
            finally:
                fuse.terminate()

    fuse.mount(ops, mountpoint)
    try:
        trio.run(main)
    finally:
        fuse.close()
        if root is None:
            os.rmdir(mountpoint)
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
    found = json.loads(done.stdout.splitlines()[-1])
    return {label: kinds for label, (kinds, _shown) in found.items()}


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
