"""Device loops in worker processes (`isolation = "process"`), through a real mount and real
member processes: the worker is forked by the fork server, not the daemon; every ending runs
the close order and the worker process is gone; a worker that raises, exits or crashes fails
the device for its client; a stuck one is killed at the join bound (0.3 s here)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.mount


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def _worker_pid(child) -> int:
    answer = child.ask("stats")
    assert answer.startswith("stats "), answer
    return int(json.loads(answer[6:])["pid"])


def _unmount(mount) -> float:
    """Unmount and wait for the daemon to exit; the seconds it took."""
    started = time.monotonic()
    subprocess.run(["fusermount3", "-u", mount.path], check=True, capture_output=True)
    assert mount.process is not None
    try:
        mount.process.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon did not exit in 10 s:\n{mount.log}")
    return time.monotonic() - started


def _end_by(mount, child, ending: str) -> None:
    if ending == "close":
        assert child.ask("close") == "ok"
    elif ending == "kill":
        os.kill(child.pid, signal.SIGKILL)
        child.kill()
    elif ending == "leave":
        assert child.ask("leave") == "ok"
    elif ending == "unlink":
        os.unlink(mount.mount.join("config/vbus/instances/B/E"))


@pytest.mark.parametrize("ending", ["close", "kill", "leave", "unlink"])
def test_a_worker_serves_and_every_ending_closes_it_in_order(pecho_mount, ending):
    child = pecho_mount.child()
    for i in range(20):
        assert child.ask(f"submit r{i}") == "ok"
    assert [child.ask("complete 10") for _ in range(20)] == [f"resp r{i}" for i in range(20)]
    pid = _worker_pid(child)
    daemon = pecho_mount.mount.pid
    assert pid not in (daemon, child.pid, os.getpid())
    # forked by the exec'd fork server, not by the daemon's trio/FUSE process
    server = _parent(pid)
    assert server != daemon and _parent(server) == daemon
    assert "vbusfs.device._forkserver" in _cmdline(server)
    _end_by(pecho_mount, child, ending)
    if ending == "close":
        # answered once the close order has run: the worker is gone, the device closed
        assert _gone(pid) and pecho_mount.closes() == (1, 0)
    assert pecho_mount.wait_for(lambda: _gone(pid) and pecho_mount.closes() == (1, 0))
    if ending in ("leave", "unlink"):
        assert child.ask("wait_ring 5").startswith("error IoqClosed")
    if ending == "unlink":
        pecho_mount.mount.sh("ln -s ../../devices/E config/vbus/instances/B/E", check=True)
    again = pecho_mount.child()
    assert again.ask("request two") == "resp two"
    assert _worker_pid(again) != pid


@pytest.mark.parametrize("crash", ["raise", "exit", "segv"])
def test_a_crashing_worker_fails_the_device_for_its_client(pecho_mount, crash):
    pecho_mount.expect_traceback = crash == "raise"
    child = pecho_mount.child()
    assert child.ask("request einval") == f"resp E{errno.EINVAL}"
    pid = _worker_pid(child)
    assert child.ask(f"submit {crash}") == "ok"
    assert child.ask("complete 10").startswith("error IoqClosed")
    answer = child.ask("stats")
    assert answer.startswith(f"error ConnectorError {errno.EIO} device loop failed"), (
        answer + pecho_mount.mount.log
    )
    assert child.ask("wait_event 5").startswith("events fault:0:device loop failed")
    assert pecho_mount.wait_for(lambda: _gone(pid) and pecho_mount.closes() == (1, 0))
    log = pecho_mount.mount.log
    if crash == "raise":
        assert "RuntimeError: asked to fail" in log
    else:
        assert f"its worker process (pid {pid}) ended unexpectedly" in log
    assert child.ask("close") == "ok"
    again = pecho_mount.child()
    assert again.ask("request two") == "resp two"


@pytest.mark.parametrize("mode", ["stuck-c", "stuck-python"])
def test_a_stuck_worker_is_killed_at_the_join_bound(pecho_mount, mode):
    pecho_mount.set_attr("mode", f"{mode}:60")
    child = pecho_mount.child()
    assert child.ask("request one") == "resp one"
    pid = _worker_pid(child)
    started = time.monotonic()
    assert child.ask("close") == "ok"
    took = time.monotonic() - started
    assert 0.25 < took < 3, took
    assert _gone(pid)
    assert pecho_mount.closes() == (1, 0)
    assert "did not stop within 0.3 s: killed" in pecho_mount.mount.log


def test_a_killed_client_of_a_stuck_worker_frees_the_device(pecho_mount):
    pecho_mount.set_attr("mode", "stuck-c:60")
    child = pecho_mount.child()
    for i in range(8):
        assert child.ask(f"submit r{i}") == "ok"
    pid = _worker_pid(child)
    os.kill(child.pid, signal.SIGKILL)
    child.kill()
    assert pecho_mount.wait_for(lambda: _gone(pid) and pecho_mount.closes() == (1, 0), 5)
    pecho_mount.set_attr("mode", "echo")
    assert pecho_mount.child().ask("request two") == "resp two"


def test_unmount_ends_every_worker_promptly(pecho_mount):
    child = pecho_mount.child()
    assert child.ask("request one") == "resp one"
    pid = _worker_pid(child)
    server = _parent(pid)
    mount = pecho_mount.mount
    assert _unmount(mount) < 3
    assert pecho_mount.wait_for(lambda: _gone(pid) and _gone(server), 3)
    assert child.ask("wait_ring 5").startswith("error IoqClosed")
    assert "echo E: closed (in order: True)" in mount.log


def test_unmount_kills_a_stuck_worker_at_the_bound(pecho_mount):
    pecho_mount.set_attr("mode", "stuck-c:60")
    child = pecho_mount.child()
    assert child.ask("request one") == "resp one"
    pid = _worker_pid(child)
    mount = pecho_mount.mount
    assert _unmount(mount) < 3
    assert pecho_mount.wait_for(lambda: _gone(pid), 3)


BROKEN = """
import sys
from vbusfs import client
mnt = sys.argv[1]
open(f"{mnt}/proc/self/vbus", "w").write("B")
bus = client.connect(mnt)
dev = bus.open(bus.interfaces()[0].id, 1)
event = bus.wait_event(10)
print(event.kind, event.message)
try:
    dev.stats()
except client.ConnectorError as exc:
    print(exc.errno, exc.strerror)
"""


def test_a_worker_that_cannot_start_fails_the_device(pecho_mount):
    pecho_mount.mount.sh(
        "rm config/vbus/instances/B/E && mkdir config/vbus/devices/F"
        " && echo pecho-broken > config/vbus/devices/F/type"
        " && ln -s ../../devices/F config/vbus/instances/B/F",
        check=True,
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BROKEN), pecho_mount.path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    fault, refused = done.stdout.splitlines()
    assert fault.startswith("fault device loop failed: WorkerDied('its worker could not start")
    assert "no_such_factory" in fault
    assert refused.startswith(f"{errno.EIO} device loop failed"), refused

    def closes() -> str:
        with open(pecho_mount.mount.join("sys/vbus/devices/F/closes")) as f:
            return f.read().strip()

    assert pecho_mount.wait_for(lambda: closes() == "1")
