"""Random programs of real processes against an oracle of behaviour §6 (SPEC 6), in both modes.

Hypothesis draws a program over a small tree of live worker processes (at most 8): start
a new root, fork, join B or C (the process writes `proc/self/vbus`, or the test writes
`proc/PID/vbus` for it), try to join a bus that does not exist (ENOENT, nothing changes),
leave (write `0`), exit (any worker, a parent before its children included: they are
re-parented). The oracle copies a parent's bus into a child at fork, which is §6's rule:
a child forked after its parent joined is a member, recursively, whether or not the parent
is still alive; one forked before is not; a process's own write overrides what it
inherited; an exited process is gone. After a step the test reads every live process's
`proc/PID/vbus` and lists both buses' `members/`, and they must agree with the oracle.

Kernel-tracked mode (cgroup, root): the check after each step is drawn too, so programs
fork and exit with nobody looking (children re-parented before the daemon ever heard of
them): the oracle must agree all the same.

Fallback mode (proc): the test checks after every step, so the daemon has looked at every
live process (read its file, listed `members/`) before any parent exits; the fallback's
documented limit (a child re-parented before vbusfs looked at it may lose its membership,
behaviour §6) then never applies, and the oracle must agree there too.

A worker is a tiny Python process (`WORKER`) that connects to the test's listening socket,
says its pid, and obeys one command at a time, answering each: so every step is
synchronous with no sleeps. An exit is complete when the worker's pidfd is readable. The
test is made a child subreaper while it runs, so orphaned workers are re-parented to it
(still re-parented, as §6 needs) and reaped by it; every worker still alive at the end of
an example is killed through its pidfd (never a recycled pid) and reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount

BUSES = ("B", "C")
MAX_LIVE = 8
TIMEOUT = 30.0  # seconds for any one answer; the machine is small and shared
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

# argv: the test's abstract socket address (without its leading NUL), the mount point.
# Commands, one a line: "fork" (answers the child's pid; the child connects anew),
# "write TEXT" (TEXT into proc/self/vbus; answers 0 or the errno), "exit" (no answer).
# EOF (the test is gone): exit.
WORKER = r"""
import os, signal, socket, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped as they exit
address, mnt = "\0" + sys.argv[1], sys.argv[2]  # an abstract socket address

def serve():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    sock.sendall(b"%d\n" % os.getpid())
    lines = sock.makefile("rb")
    for line in lines:
        word, _, arg = line.decode().rstrip("\n").partition(" ")
        if word == "fork":
            child = os.fork()
            if child == 0:
                lines.close()
                sock.close()
                return
            sock.sendall(b"%d\n" % child)
        elif word == "write":
            try:
                with open(mnt + "/proc/self/vbus", "w") as f:
                    f.write(arg)
                answer = 0
            except OSError as exc:
                answer = exc.errno
            sock.sendall(b"%d\n" % answer)
        elif word == "exit":
            os._exit(0)
    os._exit(0)

while True:
    serve()
"""


@dataclass
class Worker:
    name: str  # w0, w1, ... in order of birth: stable across runs, unlike pids
    pid: int
    pidfd: int
    sock: socket.socket
    popen: subprocess.Popen[bytes] | None = None  # set for roots, the test's own children

    def ask(self, command: str) -> int:
        self.sock.sendall(command.encode() + b"\n")
        return int(_read_line(self.sock))


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise AssertionError(f"a worker hung up after {data!r}")
        data += chunk
    return data


def _wait_exited(worker: Worker) -> None:
    """Block until the worker has exited, then reap it if it is the test's child."""
    poller = select.poll()
    poller.register(worker.pidfd, select.POLLIN)
    assert poller.poll(TIMEOUT * 1000), f"{worker.name} (pid {worker.pid}) did not exit"
    if worker.popen is not None:
        worker.popen.wait(TIMEOUT)
    else:
        # re-parented to this test (a subreaper): a zombie to reap; else its parent reaped it
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, worker.pidfd, os.WEXITED | os.WNOHANG)


def _release(worker: Worker) -> None:
    worker.sock.close()
    os.close(worker.pidfd)


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """Make this process the child subreaper of what it starts, for the duration."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = ctypes.c_int(0)
    assert libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0) == 0
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)


class MembershipPrograms(RuleBasedStateMachine):
    """Random process programs; `mount` and `always_look` are set by the test."""

    mount: LiveMount
    always_look: bool

    def __init__(self) -> None:
        super().__init__()
        self.live: list[Worker] = []  # in order of birth
        self.oracle: dict[str, str | None] = {}  # worker name -> its bus
        self.dead_pids: list[int] = []
        self.born = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # an abstract address: nothing to remove afterwards
        self.address = f"vbusfs-membership-property-{os.getpid()}-{id(self)}"
        self.listener.bind("\0" + self.address)
        self.listener.listen(4)
        self.listener.settimeout(TIMEOUT)
        # the previous example left no member behind
        for bus in BUSES:
            assert self._listed(bus) == set()

    # -- drawing -------------------------------------------------------

    def _pick(self, which: int) -> Worker:
        return self.live[which % len(self.live)]

    # -- steps ---------------------------------------------------------

    def _greet(self, popen: subprocess.Popen[bytes] | None) -> Worker:
        conn, _ = self.listener.accept()
        conn.settimeout(TIMEOUT)
        pid = int(_read_line(conn))
        # the worker is alive now and waits for a command: the pidfd is its, not a reuse
        worker = Worker(f"w{self.born}", pid, os.pidfd_open(pid), conn, popen)
        self.born += 1
        self.live.append(worker)
        return worker

    def _spawn_root(self) -> Worker:
        popen = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WORKER, self.address, self.mount.path],
            stdin=subprocess.DEVNULL,
        )
        try:
            worker = self._greet(popen)
        except BaseException:
            popen.kill()
            popen.wait()
            raise
        assert worker.pid == popen.pid
        self.oracle[worker.name] = None  # the test process is a member of nothing
        return worker

    @initialize()
    def first_root(self) -> None:
        self._spawn_root()
        self.check()

    @precondition(lambda self: len(self.live) < MAX_LIVE)
    @rule(look=st.booleans())
    def start_root(self, look: bool) -> None:
        self._spawn_root()
        self._maybe_check(look)

    @precondition(lambda self: 0 < len(self.live) < MAX_LIVE)
    @rule(which=st.integers(0, MAX_LIVE - 1), look=st.booleans())
    def fork(self, which: int, look: bool) -> None:
        parent = self._pick(which)
        parent.sock.sendall(b"fork\n")
        told = int(_read_line(parent.sock))
        child = self._greet(None)
        assert child.pid == told
        self.oracle[child.name] = self.oracle[parent.name]  # inherited at fork, §6
        self._maybe_check(look)

    @precondition(lambda self: self.live)
    @rule(
        which=st.integers(0, MAX_LIVE - 1),
        bus=st.sampled_from([*BUSES, "0", "nope"]),
        by_itself=st.booleans(),
        look=st.booleans(),
    )
    def write(self, which: int, bus: str, by_itself: bool, look: bool) -> None:
        """The worker writes its proc/self/vbus, or the test writes its proc/PID/vbus."""
        worker = self._pick(which)
        if by_itself:
            answer = worker.ask(f"write {bus}")
        else:
            try:
                with open(self.mount.join("proc", str(worker.pid), "vbus"), "w") as f:
                    f.write(bus)
                answer = 0
            except OSError as exc:
                answer = exc.errno
        if bus == "nope":
            assert answer == errno.ENOENT  # unknown bus: refused, membership unchanged
        else:
            assert answer == 0
            self.oracle[worker.name] = None if bus == "0" else bus
        self._maybe_check(look)

    @precondition(lambda self: self.live)
    @rule(which=st.integers(0, MAX_LIVE - 1), look=st.booleans())
    def exit(self, which: int, look: bool) -> None:
        """Any worker exits; its children, if any, are re-parented."""
        worker = self._pick(which)
        worker.sock.sendall(b"exit\n")
        _wait_exited(worker)
        self.live.remove(worker)
        del self.oracle[worker.name]
        self.dead_pids.append(worker.pid)
        _release(worker)
        self._maybe_check(look)

    # -- the check -----------------------------------------------------

    def _maybe_check(self, look: bool) -> None:
        if look or self.always_look:
            self.check()

    def _listed(self, bus: str) -> set[int]:
        members = self.mount.join("sys/vbus/instances", bus, "members")
        return {int(name) for name in os.listdir(members)}

    def check(self) -> None:
        for worker in self.live:
            with open(self.mount.join("proc", str(worker.pid), "vbus")) as f:
                shown = f.read()
            expected = self.oracle[worker.name] or "<none>"
            assert shown == expected + "\n", (worker.name, worker.pid)
        for bus in BUSES:
            expected_pids = {w.pid for w in self.live if self.oracle[w.name] == bus}
            assert self._listed(bus) == expected_pids, bus
        live_pids = {w.pid for w in self.live}
        for pid in self.dead_pids:
            # gone from proc/ too, unless the pid was already given to another process
            if pid not in live_pids and not os.path.exists(f"/proc/{pid}"):
                assert not os.path.exists(self.mount.join("proc", str(pid))), pid

    def teardown(self) -> None:
        """Kill every worker still alive (through its pidfd), reap, close everything."""
        try:
            for worker in self.live:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(worker.pidfd, signal.SIGKILL)
            for worker in self.live:
                _wait_exited(worker)
        finally:
            for worker in self.live:
                _release(worker)
            self.live.clear()
            self.listener.close()


def test_random_process_programs_agree_with_the_oracle(mode_mnt):
    mode_mnt.sh("mkdir config/vbus/instances/B config/vbus/instances/C", check=True)

    class Programs(MembershipPrograms):
        mount = mode_mnt
        always_look = mode_mnt.membership == "proc"

    # half the profile's examples: each starts a few dozen real processes and checks through
    # FUSE after most steps (ci: 10 examples of 25 steps, about 10-30 s per mode here)
    examples = max(1, settings.default.max_examples // 2)
    with subreaper():
        run_state_machine_as_test(Programs, settings=settings(max_examples=examples))
