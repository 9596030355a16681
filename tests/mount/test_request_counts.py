"""What `ls -l` of a device directory costs in FUSE requests, with the kernel's caches warm
(issue 15: at most 10), and that the bound holds because of the caching: with it off
(`VBUSFS_ENTRY_CACHE=0`) the same listing costs several times as many.

The daemon runs in a child process of its own, its handlers wrapped to count each request
by kind (as bench/_control_requests.py counts them); the listing is the real `ls -l`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mount

BOUND = 10  # issue 15: requests an `ls -l` of a device directory may cost, caches warm

# argv: mountpoint, then the directories to list; prints {dir: [counts by kind, listing]}
CHILD = r"""
import collections, inspect, json, os, subprocess, sys
import trio
from vbusfs import fuse
from vbusfs.classes import default_model

root, paths = sys.argv[1], sys.argv[2:]
vbus = default_model()
vbus.create_bus("b0")
for i in range(3):
    vbus.create_device(f"d{i}")
    vbus.set_device_type(f"d{i}", "venet-loopback")
    vbus.link("b0", f"d{i}", f"d{i}")
ops = fuse.VbusOperations(vbus)
counts = collections.Counter()
for name in dir(ops):
    handler = getattr(ops, name)
    if name.startswith("_") or not inspect.iscoroutinefunction(handler):
        continue

    async def counted(*args, _name=name, _handler=handler):
        counts[_name] += 1
        return await _handler(*args)

    setattr(ops, name, counted)
found = {}


def ls(path):
    env = dict(os.environ, LC_ALL="C")
    argv = ["ls", "-l", f"{root}/{path}"]
    return subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout


def measure():
    for path in paths:
        ls(path)  # warm: the kernel now holds what the listing needs
        counts.clear()
        listing = ls(path)
        found[path] = [dict(counts), listing]


async def main():
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
print(json.dumps(found))
"""

# each directory listed, and lines its `ls -l` shows (a file with its mode, a link's target)
DIRS = {
    "sys/vbus/devices/d1": (
        "-rw-r--r-- ",
        " enabled\n",
        " class -> ../../deviceclass/venet-loopback\n",
    ),
    "config/vbus/devices/d1": ("-rw-r--r-- ", " type\n"),
    "sys/vbus/instances/b0/devices/1": (
        "-r--r--r-- ",
        " type\n",
        " device -> ../../../../devices/d1\n",
    ),
}


def requests_of_ls(root: str, *, cache: bool) -> dict[str, tuple[dict[str, int], str]]:
    """Per directory of DIRS: the requests the second `ls -l` cost, and what it listed."""
    env = dict(os.environ, VBUSFS_ENTRY_CACHE="1" if cache else "0")
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, root, *DIRS],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd="/",
        )
    finally:  # a child that died or hung leaves no mount behind
        subprocess.run(["fusermount3", "-u", "-z", root], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    return {path: (counts, listing) for path, (counts, listing) in found.items()}


def test_ls_l_of_a_device_directory_costs_at_most_ten_requests(tmp_path):
    root = str(tmp_path / "mnt")
    os.mkdir(root)
    cached = requests_of_ls(root, cache=True)
    uncached = requests_of_ls(root, cache=False)
    for path, shown in DIRS.items():
        counts, listing = cached[path]
        for text in shown:  # the listing is real: the directory's entries, with modes
            assert text in listing, (path, listing)
        assert 1 <= sum(counts.values()) <= BOUND, (path, counts)
        assert counts.get("readdir", 0) >= 1, (path, counts)  # it was listed, not guessed
        # without caching, every entry is looked up and stat'ed again: the bound would fail
        off, off_listing = uncached[path]
        for text in shown:
            assert text in off_listing, (path, off_listing)
        assert sum(off.values()) > BOUND, (path, off)
