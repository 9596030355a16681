"""What `ls -l` of a device directory costs in FUSE requests, with the kernel's caches warm
(issue 15: at most 10), and that the bound holds because of the caching: with it off
(`VBUSFS_ENTRY_CACHE=0`) the same listing costs several times as many.

The counting is bench/_control_requests.py's `child`, run in a process of its own: the
daemon over three linked venet-loopback devices (d0..d2 on bus b0), its request handlers
wrapped to count each request by kind; the listing is the real `ls -l`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mount

BOUND = 10  # issue 15: requests an `ls -l` of a device directory may cost, caches warm

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "_control_requests.py")

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
    code = (
        f"import runpy; runpy.run_path({os.path.abspath(BENCH)!r}, run_name='requests')"
        f"['child'](3, listed={list(DIRS)!r}, root={root!r})"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
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
