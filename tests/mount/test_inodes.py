"""The daemon's inode table stays bounded while objects and processes come and go.

statfs's f_files is the number of inodes the daemon holds: one per path the kernel
still has an entry for. Removing an object must end every entry that existed only
because of it (its sys directory, its files, its interfaces), not just the entry the
rmdir or unlink named, or the table grows with every object ever made (~0.8 MiB a
minute in bench/soak.py before this was fixed).
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.mount

CYCLES = 40


def inodes(mnt) -> int:
    return os.statvfs(mnt.path).f_files


def settled(mnt, at_most: int, timeout: float = 5.0) -> int:
    """The table's size once it is at most `at_most`, or after `timeout`: the kernel is
    told asynchronously, and of exited processes only at the next membership sweep."""
    deadline = time.monotonic() + timeout
    while (now := inodes(mnt)) > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def cycle(mnt, n: int) -> None:
    """Make a device and a bus, look at everything they add in sys, remove both."""
    join = mnt.join
    device, bus = join(f"config/vbus/devices/d{n}"), join(f"config/vbus/instances/b{n}")
    os.mkdir(device)
    os.mkdir(bus)
    with open(f"{device}/type", "w") as f:
        f.write("venet-loopback")
    os.symlink(device, f"{bus}/link")
    for top in (f"sys/vbus/devices/d{n}", f"sys/vbus/instances/b{n}"):
        for root, dirs, files in os.walk(join(top)):
            for name in files:
                with open(os.path.join(root, name)) as f:
                    f.read()
            for name in dirs:
                if os.path.islink(os.path.join(root, name)):
                    os.readlink(os.path.join(root, name))
    assert os.readlink(join(f"sys/vbus/instances/b{n}/devices/0/device"))
    os.unlink(f"{bus}/link")
    os.rmdir(device)
    os.rmdir(bus)


def test_the_inode_table_returns_to_its_size_after_objects_are_made_and_removed(mnt):
    cycle(mnt, 0)  # the fixed skeleton gets its numbers
    baseline = settled(mnt, 0, timeout=1.0)  # what is left after a second
    for n in range(1, CYCLES + 1):
        cycle(mnt, n)
    # before the fix: baseline + ~10 per cycle, until the kernel ran short of memory
    assert settled(mnt, baseline) <= baseline


def test_the_inode_table_returns_to_its_size_after_member_processes_exit(mnt):
    os.mkdir(mnt.join("config/vbus/instances/b"))
    members = mnt.join("sys/vbus/instances/b/members")
    join_and_look = (
        f"echo b > {mnt.path}/proc/self/vbus && cat {mnt.path}/proc/self/vbus >/dev/null && "
        f"ls {members} >/dev/null && stat {members}/$$ >/dev/null && "
        f"echo 0 > {mnt.path}/proc/self/vbus"  # leaves: its members/<pid> entry goes too
    )
    mnt.sh(join_and_look, check=True)
    baseline = settled(mnt, 0, timeout=1.0)  # what is left after a second
    for _ in range(CYCLES):
        mnt.sh(join_and_look, check=True)
    # exited processes are noticed by the daemon's membership sweep (every 0.5 s)
    assert settled(mnt, baseline) <= baseline
