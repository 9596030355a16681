"""ProcFs's process identity helpers on real processes: kernel threads, groups, handles.

The pid-reuse test runs in a pid namespace of its own, where it alone forks, so it can
make the kernel hand a dead process's pid to a new one (`ns_last_pid`) without racing
anything else on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from vbusfs.daemon import ProcFs

procfs = ProcFs()
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def test_kthreadd_is_a_kernel_thread_and_we_are_not():
    assert procfs.is_kernel_thread(2)  # kthreadd
    assert not procfs.is_kernel_thread(os.getpid())
    assert not procfs.is_kernel_thread(1)  # init is a user process


def test_a_process_that_is_gone_is_no_kernel_thread_and_has_no_groups():
    child = subprocess.Popen(["true"])
    child.wait()
    assert not procfs.is_kernel_thread(child.pid)
    assert procfs.groups(child.pid) is None


def test_groups_are_our_effective_gid_and_supplementary_groups():
    assert procfs.groups(os.getpid()) == (os.getegid(), frozenset(os.getgroups()))


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_groups_follow_the_process_not_its_parent():
    child = subprocess.Popen(
        ["setpriv", "--regid=4321", "--groups=5,77", "--", "sleep", "60"],
    )
    try:
        # setpriv execs sleep; wait until it has changed its groups
        deadline = time.monotonic() + 10
        while procfs.groups(child.pid) == procfs.groups(os.getpid()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert procfs.groups(child.pid) == (4321, frozenset({5, 77}))
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("pidfd", [False, True])
def test_a_handle_is_alive_until_its_process_exits(pidfd):
    child = subprocess.Popen(["sleep", "60"])
    try:
        handle = procfs.open_process(child.pid, pidfd=pidfd)
        assert handle is not None
        assert (handle.pid, handle.pidfd is not None) == (child.pid, pidfd)
        assert handle.alive()
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
        assert not handle.alive()  # zombies count as exited
        child.wait()
        assert not handle.alive()
        handle.close()
        assert handle.pidfd is None
    finally:
        child.kill()
        child.wait()


def test_no_handle_for_a_process_that_is_gone():
    child = subprocess.Popen(["true"])
    child.wait()
    assert procfs.open_process(child.pid) is None
    assert procfs.open_process(child.pid, pidfd=True) is None


# In its own pid namespace: handles on a child, the child reaped, a new child given the
# same pid through ns_last_pid. Prints one word per handle kind, then the fresh handle's.
REUSE = textwrap.dedent(
    """
    import os, time
    from vbusfs.daemon import ProcFs
    procfs = ProcFs()

    def child():
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        return pid

    old = child()
    by_start = procfs.open_process(old)
    by_pidfd = procfs.open_process(old, pidfd=True)
    assert by_start.alive() and by_pidfd.alive()
    os.kill(old, 9)
    os.waitpid(old, 0)
    time.sleep(0.05)  # a few clock ticks: the new process must start in a later one
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(old - 1))
    new = child()
    try:
        assert new == old, (new, old)
        fresh = procfs.open_process(new)
        print(by_start.alive(), by_pidfd.alive(), fresh.alive(), flush=True)
    finally:
        os.kill(new, 9)
        os.waitpid(new, 0)
    """
)


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_handle_is_not_fooled_by_a_recycled_pid():
    run = subprocess.run(
        [*UNSHARE, sys.executable, "-c", REUSE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout.split() == ["False", "False", "True"], run.stderr
