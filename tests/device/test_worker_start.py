"""How a worker process comes to be (`isolation = "process"`), through a real mount: the
fork server starts when a process-isolated class is loaded, before any open, and keeps a
worker forked ahead; an open takes that worker (it forks nothing on the open's path), and
the next one is forked behind it; a worker forked ahead that died is not handed out; a
worker's interpreter switches threads every 0.2 ms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mount


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _server(mount) -> int | None:
    found = [p for p in _children(mount.mount.pid) if "vbusfs.device._forkserver" in _cmdline(p)]
    return found[0] if len(found) == 1 else None


def _spares(mount) -> list[int]:
    server = _server(mount)
    return [p for p in _children(server) if _alive(p)] if server else []


def _worker_pid(child) -> int:
    answer = child.ask("stats")
    assert answer.startswith("stats "), answer
    return int(json.loads(answer[6:])["pid"])


def test_the_fork_server_and_a_worker_wait_before_the_first_open(pecho_mount):
    # loaded at the daemon's start: the server is up and a worker forked, nothing opened
    assert pecho_mount.wait_for(lambda: len(_spares(pecho_mount)) == 1), pecho_mount.mount.log
    (spare,) = _spares(pecho_mount)
    child = pecho_mount.child()
    assert child.ask("request one") == "resp one"
    # the open took the worker that was waiting, and the next one is forked behind it
    assert _worker_pid(child) == spare
    assert pecho_mount.wait_for(lambda: len(_spares(pecho_mount)) == 2)
    (after,) = set(_spares(pecho_mount)) - {spare}
    assert child.ask("close") == "ok"
    again = pecho_mount.child()
    assert again.ask("request two") == "resp two"
    assert _worker_pid(again) == after
    assert "Traceback" not in pecho_mount.mount.log


def test_a_worker_forked_ahead_that_died_is_not_handed_out(pecho_mount):
    assert pecho_mount.wait_for(lambda: len(_spares(pecho_mount)) == 1)
    (spare,) = _spares(pecho_mount)
    os.kill(spare, signal.SIGKILL)
    assert pecho_mount.wait_for(lambda: not _alive(spare))
    child = pecho_mount.child()
    assert child.ask("request one") == "resp one"
    assert _worker_pid(child) != spare
    assert child.ask("close") == "ok"
    assert pecho_mount.closes() == (1, 0)


def test_the_fork_server_starts_when_a_process_class_is_modprobed(echo_mount):
    # echo_mount loads only a thread class: no fork server
    assert not [p for p in _children(echo_mount.mount.pid) if "_forkserver" in _cmdline(p)]
    vbusfs = os.path.join(os.path.dirname(sys.executable), "vbusfs")
    done = subprocess.run(
        [vbusfs, "modprobe", echo_mount.path, "pecho:PEcho"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert echo_mount.wait_for(lambda: len(_spares(echo_mount)) == 1), echo_mount.mount.log


def test_a_worker_switches_threads_every_200_us_and_answers_calls_while_its_loop_computes(
    pecho_mount,
):
    child = pecho_mount.child()
    assert json.loads(child.ask("stats")[6:])["switch_us"] == 200  # not Python's 5000
    # a loop computing in Python (20 ms per request, 8 in flight) still answers calls
    for _ in range(8):
        assert child.ask("submit spin:20000") == "ok"
    assert json.loads(child.ask("stats")[6:])["pid"] > 0
    assert [child.ask("complete 10") for _ in range(8)] == ["resp spin:20000"] * 8
