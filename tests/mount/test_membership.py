"""Membership through proc/<pid>/vbus with real processes, shells, threads and users.

Every test taking `bus` runs twice: with membership kept by the kernel (a cgroup per
bus) and with the fallback that infers it from /proc.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from vbusfs.daemon import ProcFs
from vbusfs.model import Inferred
from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount

NOBODY = 65534


def members(mnt, bus: str = "B") -> set[int]:
    return {int(p) for p in os.listdir(mnt.join("sys/vbus/instances", bus, "members"))}


def membership_of(mnt, pid: int) -> str:
    with open(mnt.join("proc", str(pid), "vbus")) as f:
        return f.read()


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@pytest.fixture
def bus(shared_mode_mnt):
    """A mount in each membership mode, reset to empty, with buses B and C (the session's
    daemon of that mode: these tests use only the trees and processes of their own)."""
    shared_mode_mnt.sh("mkdir config/vbus/instances/B config/vbus/instances/C", check=True)
    return shared_mode_mnt


def test_proc_self_resolves_to_the_caller(mnt):
    assert os.readlink(mnt.join("proc/self")) == str(os.getpid())
    assert mnt.sh("readlink proc/self; echo $$").stdout.split()[0] != str(os.getpid())
    assert membership_of(mnt, 1) == "<none>\n"
    assert os.path.exists(mnt.join("proc", str(os.getpid()), "vbus"))


def test_join_leave_and_errors(bus):
    m = bus
    done = m.sh(
        "cat proc/self/vbus; echo B > proc/self/vbus; cat proc/self/vbus; "
        "echo C > proc/self/vbus; cat proc/self/vbus; "
        "echo nope > proc/self/vbus; cat proc/self/vbus; "
        "echo 0 > proc/self/vbus; cat proc/self/vbus; echo 0 > proc/self/vbus && echo left"
    )
    assert done.stdout.split() == ["<none>", "B", "C", "C", "<none>", "left"]
    assert "No such file or directory" in done.stderr


def test_a_dead_process_is_not_there(bus):
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(OSError) as info:
        write(bus.join("proc", str(child.pid), "vbus"), "B\n")
    assert info.value.errno == errno.ENOENT  # as /proc answers a lookup
    assert not os.path.exists(bus.join("proc", str(child.pid)))
    assert "No such file or directory" in bus.sh(f"echo B > proc/{child.pid}/vbus").stderr


def test_listing_proc_shows_the_members(bus):
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        try:
            write(bus.join("proc", str(sleeper.pid), "vbus"), "C")
            listed = os.listdir(bus.join("proc"))
            assert "self" in listed and str(sleeper.pid) in listed
            assert members(bus, "C") == {sleeper.pid}
        finally:
            sleeper.kill()


def test_a_shell_pipeline_and_its_descendants_are_members(bus):
    m = bus
    script = (
        "echo B > proc/self/vbus; "
        "bash -c 'sleep 5 | sleep 5' & kid=$!; "
        "sleep 0.3; "
        "echo shell $$; echo kid $kid; "
        "for p in $(pgrep -P $kid); do echo grandchild $p; done; "
        "ls sys/vbus/instances/B/members | tr '\\n' ' '; echo; kill $kid; wait"
    )
    out = m.sh(script).stdout.splitlines()
    listed = set(out[-1].split())
    pids = [line.split()[1] for line in out[:-1]]
    assert len(pids) >= 4  # the shell, its child and the two pipeline processes
    assert set(pids) <= listed


def test_processes_forked_before_the_join_are_not_members(bus):
    out = bus.sh(
        "sleep 5 & early=$!; sleep 0.05; echo B > proc/self/vbus; sleep 5 & late=$!; "
        "cat proc/$early/vbus proc/$late/vbus; kill $early $late"
    ).stdout
    assert out.split() == ["<none>", "B"]


def test_a_child_overrides_what_it_inherited(bus):
    out = bus.sh(
        "echo B > proc/self/vbus; "
        "bash -c 'echo 0 > proc/self/vbus; cat proc/self/vbus; "
        'bash -c "cat proc/self/vbus"; echo C > proc/self/vbus; cat proc/self/vbus\'; '
        "cat proc/self/vbus"
    ).stdout
    assert out.split() == ["<none>", "<none>", "C", "B"]


def _forking_member(mountpoint: str, ready_w: int, go_r: int) -> None:
    """Child body: join, fork a grandchild, report pids, wait to be told to exit."""
    write(os.path.join(mountpoint, "proc/self/vbus"), "B")
    grandchild = os.fork()
    if grandchild == 0:
        os.read(go_r, 1)
        os._exit(0)
    os.write(ready_w, f"{os.getpid()} {grandchild}\n".encode())
    os.read(go_r, 1)
    os.waitpid(grandchild, 0)


def test_forked_python_children_and_exit(bus):
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _forking_member(bus.path, ready_w, go_r)
        finally:
            os._exit(0)
    try:
        child, grandchild = map(int, os.read(ready_r, 100).split())
        assert child == pid
        assert {child, grandchild} <= members(bus)
        assert os.getpid() not in members(bus)
    finally:
        os.write(go_w, b"xx")
        os.waitpid(pid, 0)
    assert members(bus) == set()  # gone by the next listing
    with pytest.raises(OSError) as info:
        os.rmdir(bus.join("config/vbus/instances/C", "nope"))
    assert info.value.errno == errno.ENOENT
    os.rmdir(bus.join("config/vbus/instances/B"))  # no live member left


def test_a_write_from_any_thread_makes_the_process_a_member(bus):
    code = (
        "import os, sys, threading\n"
        "m = sys.argv[1]\n"
        "def join():\n"
        "    tid = threading.get_native_id()\n"
        "    with open(f'{m}/proc/{tid}/vbus', 'w') as f: f.write('B')\n"
        "t = threading.Thread(target=join); t.start(); t.join()\n"
        "print(os.getpid(), open(f'{m}/proc/self/vbus').read().strip(), flush=True)\n"
        "def leave():\n"
        "    with open(f'{m}/proc/self/vbus', 'w') as f: f.write('C')\n"
        "t = threading.Thread(target=leave); t.start(); t.join()\n"
        "print(open(f'{m}/proc/{os.getpid()}/vbus').read().strip(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, bus.path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        pid, first = proc.stdout.readline().split()
        assert first == "B"
        assert proc.stdout.readline().strip() == "C"
        assert members(bus, "C") == {int(pid)}  # the process, never a thread id
        proc.stdin.close()
        proc.wait(10)


def test_a_bus_with_live_members_cannot_be_removed(bus):
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        write(bus.join("proc", str(sleeper.pid), "vbus"), "B")
        result = bus.sh("rmdir config/vbus/instances/B")
        assert "Device or resource busy" in result.stderr
        write(bus.join("proc", str(sleeper.pid), "vbus"), "0")
        bus.sh("rmdir config/vbus/instances/B", check=True)
        sleeper.kill()


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_only_root_or_the_owner_may_write_membership(tmp_path_factory):
    top = tempfile.mkdtemp(prefix="vbusfs-users-")
    os.chmod(top, 0o755)
    mount = LiveMount(top).start()
    try:
        # others may join B (behaviour §6: a new bus is for root and its creator alone)
        mount.sh(
            "mkdir config/vbus/instances/B && echo 0701 > config/vbus/instances/B/perms/mode",
            check=True,
        )
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        other = subprocess.run(
            [*as_nobody, "bash", "-c", f"echo B > {top}/proc/1/vbus"],
            capture_output=True,
            text=True,
        )
        assert "Permission denied" in other.stderr
        own = subprocess.run(
            [
                *as_nobody,
                "bash",
                "-c",
                f"echo B > {top}/proc/self/vbus && cat {top}/proc/self/vbus",
            ],
            capture_output=True,
            text=True,
        )
        assert own.stdout == "B\n", own.stderr
        with subprocess.Popen([*as_nobody, "sleep", "30"]) as sleeper:
            write(mount.join("proc", str(sleeper.pid), "vbus"), "B")  # root may
            assert os.stat(mount.join("proc", str(sleeper.pid), "vbus")).st_uid == NOBODY
            assert sleeper.pid in members(mount)
            sleeper.kill()
    finally:
        log = mount.stop()
        os.rmdir(top)
    assert "Traceback" not in log


def test_short_lived_members_leave_no_trace_in_memory():
    """The fallback against the real process table, no mount needed: what it remembers
    follows the live members, however many children came and went."""
    membership = Inferred(ProcFs())
    me = ProcFs().info(os.getpid())
    assert me is not None
    # children this process already has (the session's shared vbusfs daemon, say) stay
    # pinned to what they were forked under, as they should: they are not short-lived
    already = len(list(ProcFs().children(os.getpid())))
    membership.change(me, "B")
    for round_ in range(20):
        children = [subprocess.Popen(["true"]) for _ in range(100)]
        membership.sweep()
        for child in children:
            child.wait()
        if round_ == 0:
            assert membership.bus_of(me) == "B"
    membership.sweep()
    assert len(membership) <= 1 + already  # only this process (and its older children)
    membership.change(me, None)
    membership.sweep()
    assert len(membership) <= 1 + already


def test_membership_lookup_is_a_cache_hit_after_the_first():
    """bus_of of an inheriting child reads one /proc file per call, not its ancestry."""
    reads: list[int] = []

    class CountingProcFs(ProcFs):
        def info(self, pid):
            reads.append(pid)
            return super().info(pid)

    table = CountingProcFs()
    membership = Inferred(table)
    me = table.info(os.getpid())
    assert me is not None
    membership.change(me, "B")
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            info = table.info(child.pid)
            reads.clear()
            assert membership.bus_of(info) == "B"
            assert os.getpid() in reads  # the first answer walked up to the parent
            reads.clear()
            for _ in range(100):
                assert membership.bus_of(info) == "B"
            assert reads == []  # then it is remembered
        finally:
            child.kill()
