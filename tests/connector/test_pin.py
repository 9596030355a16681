"""PeerPin: a connection's process, pinned at accept, by each of its three means.

Real processes connect to a real listening socket; the fallbacks (pidfd_open, then the
start time) are reached by refusing the means before them as an old kernel would.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from vbusfs.connector._pin import SO_PEERPIDFD, PeerPin

# connects, then waits for its stdin to close; it exits at once with "exit" in argv
PEER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
print("connected", flush=True)
if sys.argv[2] != "exit":
    sys.stdin.read()
"""


class OldKernel:
    """An accepted socket on a kernel without SO_PEERPIDFD (before 6.5)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes:
        if option == SO_PEERPIDFD:
            raise OSError(errno.ENOPROTOOPT, os.strerror(errno.ENOPROTOOPT))
        return self.sock.getsockopt(level, option, buflen)


def no_pidfd_open(pid: int, flags: int = 0) -> int:
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


@pytest.fixture
def listener(tmp_path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.bind(str(tmp_path / "s"))
        s.listen()
        s.settimeout(10)
        yield s


@pytest.fixture
def peer(listener) -> Iterator[Callable[..., tuple[subprocess.Popen[str], socket.socket]]]:
    """Start a process that connects; each is killed and reaped at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(how: str = "wait") -> tuple[subprocess.Popen[str], socket.socket]:
        proc = subprocess.Popen(
            [sys.executable, "-c", PEER, listener.getsockname(), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "connected\n"
        sock, _ = listener.accept()
        return proc, sock

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def pin_by(how: str, sock: socket.socket, monkeypatch: pytest.MonkeyPatch) -> PeerPin:
    if how == "SO_PEERPIDFD":
        return PeerPin.of(sock)
    if how == "pidfd_open":
        return PeerPin.of(OldKernel(sock))
    monkeypatch.setattr(os, "pidfd_open", no_pidfd_open)
    return PeerPin.of(OldKernel(sock))


MEANS = ["SO_PEERPIDFD", "pidfd_open", "start time"]


@pytest.mark.parametrize("how", MEANS)
def test_pin_says_exited_once_its_process_exits_zombie_or_reaped(peer, monkeypatch, how):
    proc, sock = peer()
    with sock, pin_by(how, sock, monkeypatch) as pin:
        assert (pin.pid, pin.how) == (proc.pid, how)
        assert not pin.exited()
        assert not pin.exited()  # asking changes nothing
        assert proc.stdin is not None
        proc.stdin.close()
        # a zombie has exited: its /proc entry (and start time) lingers until reaped
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert pin.exited()
        proc.wait()
        assert pin.exited()


@pytest.mark.parametrize("how", MEANS)
def test_pin_of_a_process_gone_before_accept_says_exited(peer, monkeypatch, how):
    proc, sock = peer("exit")
    proc.wait()
    with sock, pin_by(how, sock, monkeypatch) as pin:
        assert pin.exited()


def test_pin_start_time_tells_a_recycled_pid_from_its_process(peer, monkeypatch):
    # the start-time pin of a live process, against a forged one (a pid reused)
    _proc, sock = peer()
    with sock, pin_by("start time", sock, monkeypatch) as pin:
        assert pin.start is not None and not pin.exited()
        pin.start = str(int(pin.start) - 1)
        assert pin.exited()


def test_pin_holds_one_descriptor_and_closing_it_gives_it_back(peer, monkeypatch):
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    _proc, sock = peer()
    with sock:
        before = fds()
        for how in MEANS:
            pin = pin_by(how, sock, monkeypatch)
            assert fds() == before + (how != "start time")
            pin.close()
            pin.close()  # twice is harmless
            assert fds() == before
