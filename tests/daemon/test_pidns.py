"""PidNamespaces against real pid namespaces (`unshare --pid --fork --mount-proc`).

Each test starts namespaces whose shell prints the pids of what it started, as that
namespace numbers them. The oracle is the kernel's `NSpid:` line in /proc/HOST/status
(the pid at each level, ours first), read independently of the ioctls under test.
Every process started here is killed and waited for, even on failure: the namespace's
init is SIGKILLed (which kills everything in its namespace and the ones below) and
`--kill-child` ties it to the unshare process we own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from vbusfs.daemon import PidNamespaces
from vbusfs.daemon._pidns import NS_GET_TGID_IN_PIDNS
from vbusfs.model import BLIND, IdentityView, NotSupported

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def nspid(host: int) -> list[int]:
    """The pid of `host` at every level of its namespaces, ours first (the oracle)."""
    with open(f"/proc/{host}/status") as f:
        line = next(line for line in f if line.startswith("NSpid:"))
    return [int(n) for n in line.split()[1:]]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, found through /proc/*/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(FileNotFoundError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with contextlib.suppress(FileNotFoundError):
                    with open(f"/proc/{parent}/task/{task}/children") as f:
                        kids = [int(k) for k in f.read().split()]
                    found += kids
                    todo += kids
    return found


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


class Namespace:
    """A running pid namespace: what its script printed, and its processes seen from here."""

    def __init__(self, unshare: subprocess.Popen[str], said: list[int]) -> None:
        self.unshare = unshare
        self.said = said

    def processes(self) -> dict[int, list[int]]:
        """host pid -> NSpid, for every process below our unshare."""
        return {host: nspid(host) for host in descendants(self.unshare.pid)}

    def host_of(self, number: int, level: int = 1) -> int:
        """Our pid of the process numbered `number` at namespace `level` (1: the first)."""
        hosts = [h for h, ns in self.processes().items() if len(ns) > level and ns[level] == number]
        assert len(hosts) == 1, (number, level, self.processes())
        return hosts[0]


@contextlib.contextmanager
def pid_namespace(script: str) -> Iterator[Namespace]:
    """Run `script` (sh) as the init of a new pid namespace until the block ends.

    The script's first line of output is a list of numbers (the pids it started, as
    its namespace sees them); the block starts once it is printed.
    """
    unshare = subprocess.Popen([*UNSHARE, "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    started: list[int] = []
    try:
        assert unshare.stdout is not None
        ready, _, _ = select.select([unshare.stdout], [], [], 15)
        assert ready, "the namespace never said its pids"
        line = unshare.stdout.readline()
        namespace = Namespace(unshare, [int(n) for n in line.split()])
        started = descendants(unshare.pid)
        yield namespace
    finally:
        started += descendants(unshare.pid)
        # Killing the namespace's init kills everything in it and below it; --kill-child
        # does the same if we only get to kill unshare itself.
        for host in started:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                if len(nspid(host)) > 1 and nspid(host)[1] == 1:
                    os.kill(host, signal.SIGKILL)
        unshare.kill()
        unshare.wait()
        if unshare.stdout is not None:
            unshare.stdout.close()
        deadline = time.monotonic() + 15
        while not all(gone(host) for host in started):
            assert time.monotonic() < deadline, "a namespace process outlived its test"
            time.sleep(0.02)


def pid_namespace_fds() -> int:
    """How many pid-namespace fds this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pid:[")
    return count


@pytest.fixture
def spaces() -> Iterator[PidNamespaces]:
    with PidNamespaces() as made:
        yield made


# Two sleeps, then the shell's own pid; the shell stays as the namespace's init.
TWO_SLEEPS = "sleep 600 & a=$!; sleep 600 & echo $a $! $$; wait"


def test_a_caller_in_our_namespace_gets_the_identity(spaces):
    view = spaces.view_of(os.getpid())
    assert isinstance(view, IdentityView)
    assert view.own == os.getpid()
    assert len(spaces) == 0  # no fd, no ioctl for our own namespace


def test_a_thread_of_ours_is_its_process(spaces):
    seen: list[int] = []
    done = threading.Event()
    thread = threading.Thread(target=lambda: (seen.append(threading.get_native_id()), done.wait()))
    thread.start()
    try:
        while not seen:
            time.sleep(0.01)
        assert seen[0] != os.getpid()
        assert spaces.view_of(seen[0]).own == os.getpid()
    finally:
        done.set()
        thread.join()


def test_a_caller_pid_of_0_sees_nothing(spaces):
    view = spaces.view_of(0)
    assert view is BLIND
    assert (view.own, view.inward(1), view.outward(os.getpid())) == (None, None, None)


def test_a_caller_that_is_gone_sees_nothing(spaces):
    child = subprocess.Popen(["true"])
    child.wait()
    assert spaces.view_of(child.pid) is BLIND


def test_pids_translate_between_a_namespace_and_ours(spaces):
    with pid_namespace(TWO_SLEEPS) as ns:
        first, second, init = ns.said
        assert init == 1
        hosts = {inner: ns.host_of(inner) for inner in ns.said}
        for inner, host in hosts.items():
            assert nspid(host) == [host, inner]  # the oracle agrees with what was said
        caller = hosts[first]  # a sleep asks
        view = spaces.view_of(caller)
        assert view.own == first
        for inner, host in hosts.items():
            assert view.inward(inner) == host
            assert view.outward(host) == inner
        # our own process is not in the namespace, in either direction
        assert os.getpid() not in hosts
        assert view.outward(os.getpid()) is None
        assert view.inward(os.getpid()) is None  # a number only we have
        assert view.outward(1) is None  # our init is not theirs
        assert view.inward(0) is None and view.inward(2**32 + first) is None
        # the namespace's init sees the same
        assert spaces.view_of(hosts[init]).own == 1
        assert spaces.view_of(hosts[init]).inward(second) == hosts[second]


def test_nested_namespaces_translate_at_each_level(spaces):
    inner_script = "sleep 600 & echo $! $$; wait"
    outer_script = (
        "sleep 600 & a=$!; "
        f"{' '.join(UNSHARE)} sh -c '{inner_script}' | (read b c; echo $a $b $c; cat) & wait"
    )
    with pid_namespace(outer_script) as ns:
        outer_sleep, inner_sleep, inner_init = ns.said
        assert inner_init == 1
        deep_sleep = ns.host_of(inner_sleep, level=2)
        deep_init = ns.host_of(inner_init, level=2)
        shallow_sleep = ns.host_of(outer_sleep, level=1)
        middle = nspid(deep_sleep)[1]  # the deep sleep's number in the outer namespace
        assert len(nspid(deep_sleep)) == 3 and len(nspid(shallow_sleep)) == 2

        deep = spaces.view_of(deep_sleep)
        assert deep.own == inner_sleep
        assert deep.inward(inner_sleep) == deep_sleep
        assert deep.inward(inner_init) == deep_init
        assert deep.outward(deep_sleep) == inner_sleep
        assert deep.outward(shallow_sleep) is None  # only in the outer namespace
        assert deep.outward(os.getpid()) is None

        shallow = spaces.view_of(shallow_sleep)
        assert shallow.own == outer_sleep
        assert shallow.outward(deep_sleep) == middle  # a nested process is visible above
        assert shallow.inward(middle) == deep_sleep
        assert shallow.outward(shallow_sleep) == outer_sleep
        assert len(spaces) == 2


THREADED = textwrap.dedent(
    """
    import os, sys, threading
    said = []
    threading.Thread(target=lambda: (said.append(threading.get_native_id()),
                                     threading.Event().wait()), daemon=True).start()
    while not said:
        pass
    print(os.getpid(), said[0], flush=True)
    threading.Event().wait()
    """
)


def test_thread_ids_translate_to_their_thread_group(spaces, tmp_path):
    program = tmp_path / "threaded.py"
    program.write_text(THREADED)
    script = f"{sys.executable} {program} & wait"
    with pid_namespace(script) as ns:
        inner_tgid, inner_tid = ns.said
        assert inner_tid != inner_tgid
        host_tgid = ns.host_of(inner_tgid)
        host_tid = next(
            int(t) for t in os.listdir(f"/proc/{host_tgid}/task") if nspid(int(t))[1] == inner_tid
        )
        assert host_tid != host_tgid
        # a caller that is a thread: its own pid is its process's
        view = spaces.view_of(host_tid)
        assert view.own == inner_tgid
        # a thread id, in either direction, names its whole process
        assert view.inward(inner_tid) == host_tgid
        assert view.outward(host_tid) == inner_tgid
        assert view.inward(inner_tgid) == host_tgid


def test_the_fd_cache_stays_bounded_and_evicted_views_still_translate():
    before = pid_namespace_fds()
    with contextlib.ExitStack() as stack, PidNamespaces(capacity=3) as spaces:
        namespaces = [stack.enter_context(pid_namespace(TWO_SLEEPS)) for _ in range(7)]
        views = []
        for ns in namespaces:
            first, second, _ = ns.said
            view = spaces.view_of(ns.host_of(first))
            assert view.inward(second) == ns.host_of(second)
            views.append(view)
            assert len(spaces) <= 3
            assert pid_namespace_fds() - before <= 3
        assert len(spaces) == 3
        # the first views' namespaces were evicted: they are opened again, still bounded
        for ns, view in zip(namespaces, views, strict=True):
            first, second, _ = ns.said
            assert view.own == first
            assert view.inward(second) == ns.host_of(second)
            assert view.outward(ns.host_of(second)) == second
            assert pid_namespace_fds() - before <= 3
    assert pid_namespace_fds() == before  # close() gave every fd back


def test_an_evicted_view_whose_caller_is_gone_translates_nothing():
    with PidNamespaces(capacity=1) as spaces:
        with pid_namespace(TWO_SLEEPS) as ns:
            first, second, _ = ns.said
            caller = ns.host_of(first)
            stale = spaces.view_of(caller)
            assert stale.inward(second) is not None
        with pid_namespace(TWO_SLEEPS) as other:
            spaces.view_of(other.host_of(other.said[0]))  # evicts the first namespace
            assert gone(caller)
            assert stale.inward(second) is None
            assert stale.outward(os.getpid()) is None


def test_without_the_ioctls_a_caller_outside_our_namespace_is_refused():
    def old_kernel(fd: int, request: int, arg: int) -> int:
        raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))

    with PidNamespaces(ioctl=old_kernel) as spaces:
        assert not spaces.translates
        assert spaces.view_of(os.getpid()) == IdentityView(os.getpid())  # ours: served
        with pid_namespace(TWO_SLEEPS) as ns:
            with pytest.raises(NotSupported) as refused:
                spaces.view_of(ns.host_of(ns.said[0]))
            assert refused.value.errno == errno.EOPNOTSUPP
        assert len(spaces) == 0


# Runs in a child: PidNamespaces made, then no fd left; the view must raise EMFILE.
OUT_OF_FDS = textwrap.dedent(
    """
    import errno, os, resource, sys
    from vbusfs.daemon import PidNamespaces
    spaces = PidNamespaces()
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    try:
        spaces.view_of(int(sys.argv[1]))
    except OSError as e:
        print(errno.errorcode[e.errno], len(spaces))
    else:
        print("no error", len(spaces))
    """
)


def test_running_out_of_fds_is_an_oserror_not_a_verdict():
    with pid_namespace(TWO_SLEEPS) as ns:
        caller = ns.host_of(ns.said[0])
        child = subprocess.run(
            [sys.executable, "-c", OUT_OF_FDS, str(caller)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.stdout.split() == ["EMFILE", "0"], child.stderr


def test_the_ioctl_numbers_are_the_kernels():
    # _IOR(0xb7, 9, int) as <linux/nsfs.h> spells it, and the kernel answers it
    assert NS_GET_TGID_IN_PIDNS == 0x8004B709
    fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
    try:
        assert fcntl.ioctl(fd, NS_GET_TGID_IN_PIDNS, os.getpid()) == os.getpid()
    finally:
        os.close(fd)


# Runs as nobody: may not follow root's /proc/PID/ns/pid links.
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
UNPRIVILEGED = textwrap.dedent(
    """
    import errno, sys
    from vbusfs.daemon import PidNamespaces
    from vbusfs.model import VbusError
    spaces = PidNamespaces()
    for caller in sys.argv[1:]:
        try:
            view = spaces.view_of(int(caller))
        except VbusError as e:
            print(errno.errorcode[e.errno])
        else:
            print(type(view).__name__, view.own)
    """
)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_a_daemon_without_root_serves_its_namespace_and_refuses_the_rest():
    with pid_namespace(TWO_SLEEPS) as ns:
        inside = ns.host_of(ns.said[0])
        child = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", UNPRIVILEGED, str(os.getpid()), str(inside)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert child.stdout.splitlines() == [f"IdentityView {os.getpid()}", "EACCES"], child.stderr
