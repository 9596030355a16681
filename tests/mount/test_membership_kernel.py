"""Membership the kernel keeps (a cgroup per bus), and handles bound to their process.

The daemonized-children cases are the ones inference from /proc loses: the kernel
carries membership across fork whatever the parent does next.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount

NOBODY = 65534


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def members(mnt: LiveMount, bus: str = "B") -> set[int]:
    return {int(p) for p in os.listdir(mnt.join("sys/vbus/instances", bus, "members"))}


def wait_for_file(path: pathlib.Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


@pytest.fixture
def kbus(shared_cgroup_mnt):
    """A mount whose membership the kernel keeps (root: cgroups), with bus B: the
    session's shared daemon of that mode, reset after each test."""
    mnt = shared_cgroup_mnt
    assert os.getxattr(mnt.path, "user.vbusfs.membership") == b"cgroup"
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    return mnt


DAEMONIZERS = {
    # the shell exits at once; the subshell's child is re-parented before anyone looks
    "subshell-background": "(sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {out})",
    "background-then-exit": "sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {out}; exit",
    "nohup": "nohup sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {out}",
    "double-fork": (
        f"{sys.executable} -c 'import os,sys\n"
        "if os.fork(): os._exit(0)\n"
        "os.setsid()\n"
        "if os.fork(): os._exit(0)\n"
        'open(sys.argv[1], "w").write(str(os.getpid()) + "\\n")\n'
        "os.closerange(0, 3)\n"
        "import time; time.sleep(30)' {out}"
    ),
}


@pytest.mark.parametrize("how", sorted(DAEMONIZERS))
def test_daemonized_children_stay_members(kbus, how, tmp_path):
    """10 of 10: the child is a member however fast its parents exit."""
    started = []
    try:
        for trial in range(10):
            out = tmp_path / f"pid{trial}"
            script = "echo B > proc/self/vbus; " + DAEMONIZERS[how].format(out=out)
            kbus.sh(script, check=True)
            pid = int(wait_for_file(out))
            started.append(pid)
            assert read(kbus.join("proc", str(pid), "vbus")) == "B\n", (how, trial)
            assert pid in members(kbus)
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_joining_moves_no_process_out_of_its_other_cgroups(kbus):
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        try:
            before = read(f"/proc/{sleeper.pid}/cgroup").splitlines()
            write(kbus.join("proc", str(sleeper.pid), "vbus"), "B")
            after = read(f"/proc/{sleeper.pid}/cgroup").splitlines()
            ours = [line for line in after if line not in before]
            assert len(ours) == 1 and ":name=vbusfs-" in ours[0]
            assert [line for line in after if ":name=vbusfs-" not in line] == [
                line for line in before if ":name=vbusfs-" not in line
            ]
            # the hierarchy is in nobody's mount table
            assert "name=vbusfs-" not in read("/proc/self/mountinfo")
        finally:
            sleeper.kill()


def test_a_process_forked_before_the_join_stays_out(kbus, tmp_path):
    out = kbus.sh(
        "sleep 5 </dev/null >/dev/null 2>&1 & early=$!; echo B > proc/self/vbus; "
        "sleep 5 </dev/null >/dev/null 2>&1 & late=$!; "
        "cat proc/$early/vbus proc/$late/vbus; kill $early $late"
    ).stdout
    assert out.split() == ["<none>", "B"]


def test_kernel_threads_cannot_join(kbus):
    done = kbus.sh("echo B > proc/2/vbus")
    assert "Invalid argument" in done.stderr
    assert read(kbus.join("proc/2/vbus")) == "<none>\n"
    assert 2 not in members(kbus)
    kbus.sh("rmdir config/vbus/instances/B", check=True)  # nothing stuck on it


def test_members_and_the_hierarchy_end_with_the_daemon(tmp_path_factory):
    """A clean stop lets members go and ends the hierarchy; so does the next mount after
    a kill -9 (members do not outlive their daemon, behaviour §6). The hierarchy is gone
    from the kernel even though buses (cgroups) were made and removed just before: one
    left behind stays until reboot, a line more in every process's /proc/PID/cgroup."""
    if os.getuid() != 0:
        pytest.skip("kernel-tracked membership needs root")
    path = str(tmp_path_factory.mktemp("mnt"))
    with subprocess.Popen(["sleep", "60"]) as sleeper:
        try:
            for how in ("stop", "kill"):
                mount = LiveMount(path).start()
                try:
                    mount.sh("mkdir config/vbus/instances/B config/vbus/instances/C", check=True)
                    write(mount.join("proc", str(sleeper.pid), "vbus"), "B")
                    line = _our_line(sleeper.pid, "/b")
                    assert "name=vbusfs-" in line
                    name = line.split(":")[1].removeprefix("name=")
                    mount.sh("rmdir config/vbus/instances/C", check=True)
                    assert _hierarchy_listed(name)
                    if how == "kill":
                        os.kill(mount.pid, signal.SIGKILL)
                        mount.process.wait()  # type: ignore[union-attr]
                        assert _our_line(sleeper.pid, "/b")  # left behind, bus B in it
                        assert _hierarchy_listed(name)
                        again = LiveMount(path).start()  # clears the stale mount
                        assert _our_line(sleeper.pid, "/b") == ""
                        assert read(again.join("proc", str(sleeper.pid), "vbus")) == "<none>\n"
                        again.stop()
                finally:
                    mount.stop()
                assert _our_line(sleeper.pid, "/b") == ""
                deadline = time.monotonic() + 10.0
                while _hierarchy_listed(name) and time.monotonic() < deadline:
                    time.sleep(0.05)  # the kernel frees a hierarchy asynchronously
                assert not _hierarchy_listed(name), how
        finally:
            sleeper.kill()


def _hierarchy_listed(name: str) -> bool:
    assert name.startswith("vbusfs-")
    return f":name={name}:" in read("/proc/self/cgroup")


def _our_line(pid: int, prefix: str) -> str:
    """The line of /proc/PID/cgroup for a vbusfs hierarchy whose path starts with prefix."""
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        if ":name=vbusfs-" in line and line.split(":", 2)[2].startswith(prefix):
            return line
    return ""


def test_lookup_of_a_pid_with_no_process_is_enoent(mode_mnt):
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not pathlib.Path(mode_mnt.join("proc", str(gone.pid))).exists()
    assert not pathlib.Path(mode_mnt.join("proc", "999999999")).exists()
    listed = mode_mnt.sh("ls proc/999999999")
    assert "No such file or directory" in listed.stderr


def test_a_handle_outlives_neither_its_process_nor_a_recycled_pid(mode_mnt, tmp_path):
    """Open proc/P/vbus, let P exit, give its pid to another process: the old handle
    answers ESRCH and the new process is untouched."""
    mode_mnt.sh("mkdir config/vbus/instances/B", check=True)
    victim = subprocess.Popen(["sleep", "30"])
    fd = os.open(mode_mnt.join("proc", str(victim.pid), "vbus"), os.O_RDWR)
    try:
        victim.kill()
        victim.wait()
        newcomer = _spawn_with_pid(victim.pid) if os.getuid() == 0 else None
        try:
            with pytest.raises(OSError) as info:
                os.write(fd, b"B")
            assert info.value.errno == errno.ESRCH
            with pytest.raises(OSError) as info:
                os.pread(fd, 100, 0)
            assert info.value.errno == errno.ESRCH
            if newcomer is not None:
                assert read(mode_mnt.join("proc", str(newcomer.pid), "vbus")) == "<none>\n"
                assert newcomer.pid not in members(mode_mnt)
        finally:
            if newcomer is not None:
                newcomer.kill()
                newcomer.wait()
    finally:
        os.close(fd)


def _spawn_with_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A new `sleep` with this pid (root: through ns_last_pid), or None if the machine
    kept taking it first."""
    for _ in range(50):
        try:
            write("/proc/sys/kernel/ns_last_pid", str(pid - 1))
        except OSError:
            return None
        proc = subprocess.Popen(["sleep", "30"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.fixture
def open_mount(request):
    """A mount any user can reach (the pytest temporary tree is root's alone)."""
    top = tempfile.mkdtemp(prefix="vbusfs-users-")
    os.chmod(top, 0o755)
    mount = LiveMount(top, extra=("--membership", request.param)).start()
    try:
        yield mount
    finally:
        log = mount.stop()
        os.rmdir(top)
    assert "Traceback" not in log, log


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
@pytest.mark.parametrize("open_mount", ["cgroup", "proc"], indirect=True)
def test_a_handle_loses_its_right_when_the_process_changes_user(open_mount):
    """nobody opens proc/P/vbus of its own child; the child execs a set-user-id program
    (now root's): a write through the old handle is refused (EACCES)."""
    mode_mnt = open_mount
    mode_mnt.sh("mkdir config/vbus/instances/B && echo 0777 > config/vbus/instances/B/perms/mode")
    place = pathlib.Path(tempfile.mkdtemp(prefix="vbusfs-setuid-"))
    place.chmod(0o755)
    setuid_sleep = place / "sleep"
    shutil.copy("/bin/sleep", setuid_sleep)
    os.chown(setuid_sleep, 0, 0)
    setuid_sleep.chmod(0o4755)
    script = textwrap.dedent(
        f"""
        import os, sys, time
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(w)
            os.read(r, 1)
            os.execv({str(setuid_sleep)!r}, ["sleep", "30"])
        fd = os.open({mode_mnt.path!r} + f"/proc/{{child}}/vbus", os.O_WRONLY)
        os.write(fd, b"0")  # allowed: its own child
        os.write(w, b"x")
        for _ in range(200):
            if os.stat(f"/proc/{{child}}").st_uid == 0:
                break
            time.sleep(0.01)
        try:
            os.write(fd, b"B")
            print("joined", child)
        except OSError as exc:
            print("refused", exc.errno, child)
        os.kill(child, 9)
        """
    )
    try:
        done = subprocess.run(
            [
                *("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"),
                *(sys.executable, "-c", script),
            ],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=30,
        )
    finally:
        shutil.rmtree(place)
    words = done.stdout.split()
    if not words:
        pytest.skip(f"set-user-id programs do not run here: {done.stderr}")
    assert words[:2] == ["refused", str(errno.EACCES)], done.stdout + done.stderr


def test_status_says_who_keeps_membership(mode_mnt):
    done = subprocess.run(
        [sys.executable, "-m", "vbusfs", "status", mode_mnt.path],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["membership"].startswith(mode_mnt.membership + ": ")
    assert lines["connector"].endswith(".sock")
    assert os.getxattr(mode_mnt.path, "user.vbusfs.membership") == mode_mnt.membership.encode()
    # and the daemon said so at start
    keeper = "the kernel" if mode_mnt.membership == "cgroup" else "inference from /proc"
    assert f"membership kept by {keeper}" in mode_mnt.log
