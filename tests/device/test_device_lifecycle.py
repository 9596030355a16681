"""The data path the framework owns, through a real mount and real member processes:
queue validation, the loop started when every queue exists, one close order for every
ending, a failing loop, and loops that ignore the stop."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.mount

NAMES = "echo device E interface B/"


def test_echo_answers_every_request_in_order(echo_mount):
    child = echo_mount.child()
    assert child.ask("request hello") == "resp hello"
    for i in range(40):
        assert child.ask(f"submit r{i}") == "ok"
    answers = [child.ask("complete 10") for _ in range(40)]
    assert answers == [f"resp r{i}" for i in range(40)]
    assert echo_mount.attr("served") == "41"
    assert child.ask("stats") == 'stats {"served": 41}'
    assert child.ask("close") == "ok"
    assert echo_mount.wait_for(lambda: echo_mount.closes() == (1, 0))
    assert echo_mount.attr("serving") == "0"
    # the loop ran in a thread, and the filesystem's thread gets the GIL back sooner
    assert "device loops run: threads switch every 0.5 ms" in echo_mount.mount.log


VALIDATE = """
import sys, time
from vbusfs import client
from vbusfs.ioq import Ioq
mnt = sys.argv[1]
open(f"{mnt}/proc/self/vbus", "w").write("B")
bus = client.connect(mnt)
dev = bus.open(0, 1)
def attach(index, ring):
    try:
        dev.attach_queue(index, ring)
        return "ok"
    except client.ConnectorError as exc:
        return f"{exc.errno} {exc.strerror}"
def serving():
    return open(f"{mnt}/sys/vbus/devices/E/serving").read().strip()
print(attach(2, Ioq.create(16, 64, direction="to_south")))
print(attach(0, Ioq.create(16, 8192, direction="to_south")))
print(attach(0, Ioq.create(512, 64, direction="to_south")))
print(attach(0, Ioq.create(16, 64, direction="to_north")))
print(attach(1, Ioq.create(16, 1024, direction="to_north")))
requests = Ioq.create(16, 4096, direction="to_south")
responses = Ioq.create(16, 4096, direction="to_north")
print(attach(0, requests))
print(attach(0, Ioq.create(16, 64, direction="to_south")))
requests.send(b"early")
time.sleep(0.3)
print(serving(), responses.receivable())
print(attach(1, responses))
print(responses.receive(timeout=10).decode(), serving())
"""


def test_queues_are_validated_and_the_loop_waits_for_all(echo_mount):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(VALIDATE), echo_mount.path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{errno.EINVAL} echo has no queue 2"), lines
    assert lines[1].startswith(f"{errno.EINVAL} queue 0 (requests) takes buffers of 1 to 4096")
    assert lines[2].startswith(f"{errno.EINVAL} queue 0 (requests) takes 1 to 256 descriptors")
    assert lines[3].startswith(f"{errno.EINVAL} queue 0 (requests) carries data to_south")
    assert lines[4].startswith(f"{errno.EINVAL} queue 1 (responses) takes buffers of 4096")
    # a refused queue left nothing behind: the right one is taken, a second refused
    assert lines[5] == "ok"
    assert lines[6].startswith(f"{errno.EBUSY} queue 0 (requests) is already attached")
    # the loop starts only once every declared queue exists
    assert lines[7] == "0 False"
    assert lines[8] == "ok"
    assert lines[9] == "early 1"
    assert echo_mount.wait_for(lambda: echo_mount.closes() == (1, 0))


def _end_by(echo_mount, child, ending: str) -> None:
    if ending == "close":
        assert child.ask("close") == "ok"
    elif ending == "kill":
        child.kill()
    elif ending == "leave":
        assert child.ask("leave") == "ok"
    elif ending == "unlink":
        os.unlink(echo_mount.mount.join("config/vbus/instances/B/E"))


@pytest.mark.parametrize("ending", ["close", "kill", "leave", "unlink"])
def test_every_ending_closes_in_order_and_frees_the_device(echo_mount, ending):
    child = echo_mount.child()
    assert child.ask("request one") == "resp one"
    assert echo_mount.attr("serving") == "1"
    _end_by(echo_mount, child, ending)
    assert echo_mount.wait_for(lambda: echo_mount.closes() == (1, 0)), echo_mount.closes()
    assert echo_mount.attr("serving") == "0"
    if ending in ("leave", "unlink"):
        # the client lives on: its ring waits end, its requests are refused
        assert child.ask("wait_ring 5").startswith("error IoqClosed")
        refused = errno.EACCES if ending == "leave" else errno.ENODEV
        assert child.ask("stats").startswith(f"error ConnectorError {refused}")
    if ending == "unlink":
        echo_mount.mount.sh("ln -s ../../devices/E config/vbus/instances/B/E", check=True)
    # the device can be opened again at once
    again = echo_mount.child()
    assert again.ask("request two") == "resp two"
    assert again.ask("close") == "ok"
    assert echo_mount.wait_for(lambda: echo_mount.closes() == (2, 0))


def _unmount(mount, timeout: float = 10.0) -> float:
    """Unmount and wait for the daemon to exit; the seconds it took."""
    started = time.monotonic()
    subprocess.run(["fusermount3", "-u", mount.path], check=True, capture_output=True)
    assert mount.process is not None
    mount.process.wait(timeout)
    return time.monotonic() - started


def test_unmount_closes_a_running_loop_in_order(echo_mount):
    child = echo_mount.child()
    assert child.ask("request one") == "resp one"
    took = _unmount(echo_mount.mount)
    assert took < 5, took
    # the client's waits end with the daemon
    assert child.ask("wait_ring 5").startswith("error IoqClosed")
    assert "echo E: closed (in order: True)" in echo_mount.mount.log


def test_a_failing_loop_ends_its_clients_waits_and_fails_its_calls(echo_mount):
    echo_mount.expect_traceback = True
    child = echo_mount.child()
    # an error the device answers keeps the loop going
    assert child.ask("request einval") == f"resp E{errno.EINVAL}"
    assert child.ask("submit raise") == "ok"
    assert child.ask("complete 10").startswith("error IoqClosed")
    answer = child.ask("stats")
    assert answer.startswith(f"error ConnectorError {errno.EIO} device loop failed: RuntimeError")
    assert "asked to fail" in answer
    event = child.ask("wait_event 5")
    assert event.startswith("events fault:0:device loop failed")
    # the device itself is closed in order and free for the next client
    assert echo_mount.closes() == (1, 0)
    assert child.ask("close") == "ok"
    again = echo_mount.child()
    assert again.ask("request two") == "resp two"
    log = echo_mount.mount.log
    assert f"{NAMES}0: device loop failed" in log
    assert "RuntimeError: asked to fail" in log and "Traceback" in log


STUCK = ["stuck-c", "stuck-python", "stuck-wait"]


@pytest.mark.parametrize("mode", STUCK)
def test_a_loop_that_ignores_the_stop_is_logged_and_abandoned(echo_mount, mode):
    child = echo_mount.child()
    assert child.ask("request one") == "resp one"
    echo_mount.set_attr("mode", f"{mode}:4")
    started = time.monotonic()
    os.unlink(echo_mount.mount.join("config/vbus/instances/B/E"))
    # the client is let go at the bound, though the loop still runs
    assert child.ask("wait_ring 10").startswith("error IoqClosed")
    assert time.monotonic() - started < 4
    assert echo_mount.wait_for(lambda: "did not stop within 2 s" in echo_mount.mount.log, 5)
    assert f"{NAMES}0: its loop did not stop" in echo_mount.mount.log
    # the trees answer meanwhile, and once the loop ends the close finishes in order
    assert echo_mount.closes() == (0, 0)
    assert echo_mount.wait_for(lambda: echo_mount.closes() == (1, 0), 10)


@pytest.mark.parametrize("mode", STUCK)
def test_a_stuck_loop_never_keeps_the_daemon_from_exiting(echo_mount, mode):
    child = echo_mount.child()
    assert child.ask("request one") == "resp one"
    echo_mount.set_attr("mode", f"{mode}:120")
    took = _unmount(echo_mount.mount)
    assert took < 6, took
    log = echo_mount.mount.log
    assert f"{NAMES}0: its loop did not stop within 2 s" in log, log
    assert child.ask("wait_ring 5").startswith("error IoqClosed")


def test_a_killed_client_of_a_stuck_loop_frees_the_daemon_too(echo_mount):
    child = echo_mount.child()
    assert child.ask("request one") == "resp one"
    echo_mount.set_attr("mode", "stuck-c:120")
    os.kill(child.pid, signal.SIGKILL)
    child.kill()
    assert echo_mount.wait_for(lambda: "did not stop within 2 s" in echo_mount.mount.log, 6)
    assert _unmount(echo_mount.mount) < 5
