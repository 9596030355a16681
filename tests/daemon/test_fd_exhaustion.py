"""A daemon with no file descriptor left refuses requests; it never exits.

Anyone can use up a daemon's fds (every connector connection costs one). Then its /proc
reads (lookups under proc/, the membership sweep) and the connector's accept() fail with
EMFILE: each must be a refusal (an errno to the caller, a log line) and the daemon must
serve everything again once fds come back. The test starves the running daemon exactly:
its RLIMIT_NOFILE is lowered to the fds it holds (`prlimit --pid`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from vbusfs.connector import XATTR
from vbusfs.fuse import mount_at
from vbusfs.testing import LiveMount

pytestmark = [
    pytest.mark.mount,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit"),
]


def set_nofile(pid: int, soft: int) -> None:
    """Set the soft limit only: raising a hard one back needs CAP_SYS_RESOURCE."""
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:"], check=True)


def nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    return int(line.split()[3])


def test_a_daemon_out_of_fds_refuses_and_survives(mode_mnt):
    mnt = mode_mnt
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    # A member, so the fallback's sweep has something to do (it reads /proc twice a second).
    member = subprocess.Popen(
        ["sh", "-c", f"echo B > {mnt.join('proc/self/vbus')} && exec sleep 60"]
    )
    connector = os.fsdecode(os.getxattr(mnt.path, XATTR))
    try:
        deadline = time.monotonic() + 10
        while str(member.pid) not in mnt.sh("ls proc").stdout.split():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held = len(os.listdir(f"/proc/{mnt.pid}/fd"))
        was = nofile(mnt.pid)
        set_nofile(mnt.pid, held)
        try:
            time.sleep(1.5)  # three sweeps
            refused = mnt.sh("cat proc/self/vbus")
            assert refused.returncode == 1 and "Too many open files" in refused.stderr
            listing = mnt.sh("ls proc")
            assert listing.returncode != 0 and "Too many open files" in listing.stderr
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as peer:
                peer.connect(connector)  # queued; accept() fails for want of an fd
                time.sleep(0.5)
            assert mnt.sh("cat sys/vbus/version").stdout == "1\n"  # needs no fd
            assert mnt.process is not None and mnt.process.poll() is None
        finally:
            set_nofile(mnt.pid, was)
        time.sleep(1.5)  # the connector serves again after its retry
        assert mnt.sh("cat proc/self/vbus").stdout == "<none>\n"
        assert str(member.pid) in mnt.sh("ls proc").stdout.split()
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as peer:
            peer.connect(connector)
            peer.settimeout(5)
            assert peer.recv(65536)  # the daemon's hello: it accepts again
    finally:
        member.kill()
        member.wait()
    log = mnt.log
    print(log[-2500:])
    assert "refused: Too many open files" in log
    if mnt.membership == "proc":  # the kernel keeps cgroup membership: no sweep
        assert log.count("membership sweep skipped until fds are free again") == 1
        assert "membership sweep reads /proc again" in log


def test_a_daemon_started_with_too_few_fds_refuses_the_mount_saying_why(tmp_path):
    """Whichever step runs out (opening /dev/fuse, trio's own, the connector's socket),
    the mount is refused with the reason; never a daemon that dies without an answer."""
    refusals = set()
    for limit in range(5, 13):
        mountpoint = tmp_path / f"m{limit}"
        mountpoint.mkdir()
        mount = LiveMount(str(mountpoint), prefix=("prlimit", f"--nofile={limit}:{limit}", "--"))
        try:
            mount.start()
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0]
            assert "Too many open files" in reason, reason
            assert "exited without an answer" not in reason
            refusals.add(limit)
        else:
            mount.stop()
        assert mount_at(str(mountpoint)) is None
    assert refusals  # the smallest limits were refused
