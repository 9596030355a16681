"""The connector's trust boundary: hostile member processes against a real mount.

Each attack is a real process (a member of a bus, or root, or nobody) talking to a
real daemon; the daemon must refuse with an errno, log honestly and little, and
stay up for everyone else.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

import pytest

from vbusfs import client
from vbusfs.testing import LiveMount, netns_available

pytestmark = pytest.mark.mount

SETUP = (
    "mkdir config/vbus/instances/B config/vbus/instances/C "
    "config/vbus/devices/L config/vbus/devices/M && "
    "echo venet-loopback > config/vbus/devices/L/type && "
    "echo venet-loopback > config/vbus/devices/M/type && "
    "echo 1 > sys/vbus/devices/L/enabled && echo 1 > sys/vbus/devices/M/enabled && "
    "ln -s ../../devices/L config/vbus/instances/B/ && "
    "ln -s ../../devices/M config/vbus/instances/C/"
)

# what every child starts with: a raw connector socket helper, as a member of a bus
PRELUDE = """
import errno, json, os, socket, sys, time
from vbusfs import client
from vbusfs.connector import RECEIVE, received, rights
m = sys.argv[1]

def join(bus):
    with open(f"{m}/proc/self/vbus", "w") as f:
        f.write(bus)

def raw():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect(client.find_connector(m, 5))
    hello = json.loads(s.recv(65536))
    return s, hello

def ask(s, data, fds=()):
    s.sendmsg([data], rights(fds))
    got = received(s.recvmsg(*RECEIVE))
    for fd in got.fds:
        os.close(fd)
    return json.loads(got.data)

def done(**result):
    print(json.dumps(result), flush=True)
"""


def run_child(mount: LiveMount, code: str, *args: str, user: tuple[str, ...] = ()) -> dict:
    """Run a member process to its end; what it printed last, as JSON."""
    source = PRELUDE + textwrap.dedent(code)
    done = subprocess.run(
        [*user, sys.executable, "-c", source, mount.path, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def join(mount: LiveMount, bus: str) -> None:
    with open(mount.join("proc", "self", "vbus"), "w") as f:
        f.write(bus)


def assert_honest(log: str) -> None:
    assert "internal error" not in log and "Traceback" not in log, log


@pytest.fixture
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMount]:
    top = tmp_path_factory.mktemp("mnt")
    mount = LiveMount(str(top), private_netns=netns_available(), debug=False).start()
    try:
        mount.sh(SETUP, check=True)
        yield mount
    finally:
        log = mount.stop()
    assert_honest(log)


# -- file descriptors ------------------------------------------------------------------

FLOOD = """
join("B")
first, _ = raw()  # a connection from before the flood, to ask on once fds run out
held, refusals = [], {}
for _ in range(int(sys.argv[2])):
    try:
        held.append(client.connect(m, timeout=5))
    except client.ConnectorError as exc:
        refusals.setdefault(errno.errorcode.get(exc.errno, str(exc.errno)), str(exc))
with_fds = [os.eventfd(0), os.eventfd(0)]
asked = ask(first, b'{"op":"list","seq":1}', with_fds) if refusals else None
done(held=len(held), refusals=refusals, asked=asked)
"""


def test_fd_exhaustion_is_a_refusal_and_the_mount_lives():
    """A daemon with 64 descriptors: a member's connection flood is refused with EMFILE."""
    top = tempfile.mkdtemp(prefix="vbusfs-emfile-")
    mount = LiveMount(top, debug=False, prefix=("prlimit", "--nofile=64:64", "--"))
    mount.start()
    try:
        mount.sh(SETUP, check=True)
        started = time.monotonic()
        result = run_child(mount, FLOOD, "200")
        took = time.monotonic() - started
        assert 0 < result["held"] < 64, result
        assert set(result["refusals"]) == {"EMFILE"}, result
        assert "out of file descriptors" in result["refusals"]["EMFILE"]
        # a request whose fds the daemon has no room for is refused too, on its connection
        assert result["asked"]["errno"] == errno.EMFILE, result
        # the connections went with their process: the mount is alive and serves the next
        assert mount.mounted() and mount.sh("cat sys/vbus/version").stdout == "1\n"
        join(mount, "B")
        deadline = time.monotonic() + 2.0
        while True:  # the flood's connections close as the daemon hears them hang up
            try:
                with client.connect(mount.path, timeout=5) as bus:
                    assert bus.interfaces() == [client.InterfaceEntry(0, "virtual-ethernet")]
                break
            except client.ConnectorError as exc:
                assert exc.errno == errno.EMFILE and time.monotonic() < deadline
                time.sleep(0.05)
        print(f"held {result['held']} connections, refused {200 - result['held']} in {took:.2f} s")
    finally:
        log = mount.stop()
        os.rmdir(top)
    # refused in accept, or once accepted, when reading the peer's /proc entry: either way
    # a refusal that says why
    assert re.search(
        r"refusing (a connection|process \d+): .*the daemon is out of file descriptors", log
    )
    assert "internal error serving" not in log, log


@pytest.mark.root
def test_connections_per_uid_are_capped_with_a_clear_refusal():
    top = tempfile.mkdtemp(prefix="vbusfs-cap-")
    os.chmod(top, 0o755)
    mount = LiveMount(top, debug=False).start()
    try:
        # nobody may join B (behaviour §6.2: a new bus is for root and its creator alone)
        mount.sh(SETUP + " && echo 0701 > config/vbus/instances/B/perms/mode", check=True)
        nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        result = run_child(mount, FLOOD, "70", user=nobody)
        assert result["held"] == 63, result  # and the one from before the flood
        assert result["refusals"] == {
            "EAGAIN": "[Errno 11] too many connections for uid 65534 (at most 64)"
        }
        join(mount, "B")  # another uid is still served
        with client.connect(mount.path) as bus:
            assert bus.interfaces() == [client.InterfaceEntry(0, "virtual-ethernet")]
    finally:
        log = mount.stop()
        os.rmdir(top)
    assert_honest(log)
    assert "too many connections for uid 65534" in log


@pytest.mark.parametrize(
    ("option", "refusal"),
    [
        ("--max-connections", "too many connections (at most 2)"),
        ("--max-connections-per-uid", f"too many connections for uid {os.getuid()} (at most 2)"),
    ],
)
def test_vbusfs_mount_sets_the_connection_caps(tmp_path, monkeypatch, option, refusal):
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(tmp_path / "run"))
    mnt = tmp_path / "m"
    mnt.mkdir()
    vbusfs = [sys.executable, "-m", "vbusfs"]
    mounted = subprocess.run(
        [*vbusfs, "mount", option, "2", str(mnt)], capture_output=True, text=True, timeout=60
    )
    try:
        assert mounted.returncode == 0, mounted.stderr
        # root administers the daemon, so it may connect while on no bus
        held = [client.connect(str(mnt)), client.connect(str(mnt))]
        with pytest.raises(client.ConnectorError) as refused:
            client.connect(str(mnt))
        assert refused.value.errno == errno.EAGAIN
        assert refused.value.strerror == refusal
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # served again once the daemon has heard the one that left
            try:
                held.append(client.connect(str(mnt)))
                break
            except client.ConnectorError as exc:
                assert exc.errno == errno.EAGAIN and time.monotonic() < deadline
                time.sleep(0.05)
        for bus in held:
            bus.close()
    finally:
        gone = subprocess.run([*vbusfs, "umount", str(mnt)], capture_output=True, text=True)
    assert mounted.returncode != 0 or gone.returncode == 0, gone.stderr


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
@pytest.mark.parametrize("option", ["--max-connections", "--max-connections-per-uid"])
def test_vbusfs_mount_refuses_a_cap_that_is_not_a_positive_integer(tmp_path, option, value):
    done = subprocess.run(
        [sys.executable, "-m", "vbusfs", "mount", option, value, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"argument {option}: {value!r} is not a positive integer" in done.stderr
    assert not os.path.ismount(tmp_path)


# -- logs ------------------------------------------------------------------------------

BAD_LOOP = """
join("B")
bad = [b"junk", b"[" * 60000, b"x" * 70000, b'{"op":"nope","seq":1}', b'{"op":"list","seq":"x"}',
       b'{"op":"call","seq":2,"handle":"h"}', b"[]"]
codes = set()
n = 0
end = time.monotonic() + float(sys.argv[2])
s, _ = raw()
while time.monotonic() < end:
    reply = ask(s, bad[n % len(bad)])
    codes.add(reply["errno"])
    n += 1
    if n % 50 == 0:  # and now and then on a fresh connection
        s.close()
        s, _ = raw()
done(requests=n, codes=sorted(codes), served=ask(s, b'{"op":"list","seq":9}'))
"""


def test_a_flood_of_bad_requests_is_refused_and_logged_little(setup):
    before = os.path.getsize(setup.log_path)
    seconds = 3.0
    result = run_child(setup, BAD_LOOP, str(seconds))
    grown = os.path.getsize(setup.log_path) - before
    rate = grown / seconds
    print(f"{result['requests']} bad requests in {seconds} s: log grew {grown} B ({rate:.0f} B/s)")
    assert result["requests"] > 500, result
    # every one refused, with an errno: EMSGSIZE for the one over 65,536 bytes
    assert result["codes"] == sorted([errno.EINVAL, errno.EMSGSIZE]), result
    assert result["served"] == {"interfaces": [{"id": 0, "type": "virtual-ethernet"}], "seq": 9}
    assert rate < 1024, setup.log  # 5 lines at once, then 2 a second, of ~150 bytes
    log = setup.log
    assert "bad request from client" in log and "nested too deeply" in log
    assert "held back since the last line" in log


def test_deeply_nested_json_is_a_refusal_with_an_errno(setup):
    result = run_child(
        setup,
        """
        join("B")
        s, _ = raw()
        done(deep=ask(s, b"[" * 65000), deeper=ask(s, b'{"op":' * 10000))
        """,
    )
    for reply in result.values():
        assert reply["errno"] == errno.EINVAL and reply["seq"] is None
        assert "nested too deeply" in reply["message"] or "not a connector" in reply["message"]
    assert "internal error" not in setup.log


# -- authority -------------------------------------------------------------------------

LEAVER = """
join("B")
bus = client.connect(m)
before = [i.id for i in bus.interfaces()]
nic = bus.open_venet(0)
join(sys.argv[2])
outcome = {}
for what, call in (("list", bus.interfaces), ("open", lambda: bus.open(0, 1))):
    try:
        call()
        outcome[what] = "served"
    except client.ConnectorError as exc:
        outcome[what] = [exc.errno, exc.strerror]
print("left", flush=True)
sys.stdin.readline()
done(before=before, **outcome)
"""


@pytest.mark.parametrize("to", ["0", "C"])
def test_a_process_that_leaves_its_bus_loses_it_on_the_same_connection(setup, to):
    source = PRELUDE + textwrap.dedent(LEAVER)
    with subprocess.Popen(
        [sys.executable, "-c", source, setup.path, to],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline() == "left\n", child.stderr and child.stderr.read()
            # what it had open on B was closed when it left: B's device is free at once
            join(setup, "B")
            with client.connect(setup.path) as bus, bus.open_venet(0) as nic:
                nic.send(b"\x02" * 60)
                assert nic.recv(timeout=5) == b"\x02" * 60
            child.stdin.write("\n")
            child.stdin.close()
            result = json.loads(child.stdout.read().splitlines()[-1])
        finally:
            child.kill()
            child.wait()
    assert result["before"] == [0]
    for what in ("list", "open"):
        code, message = result[what]
        assert code == errno.EACCES, result
        assert "no longer a member of bus 'B'" in message


# A member connects, opens a device and forks a child; the child leaves the bus (it is
# no member), and keeps the connected socket when its parent exits.  Stdin "go" tells
# the child to ask; with argv[2] == "wait" it waits for that, else it asks at once.
INHERITOR = """
import select
join("B")
bus = client.connect(m)
nic = bus.open_venet(0)
r, w = os.pipe()
if os.fork() == 0:
    join("0")
    parent = os.pidfd_open(os.getppid())
    os.write(w, b"x")
    select.select([parent], [], [])  # the parent has exited
    if sys.argv[2] == "wait":
        sys.stdin.readline()
    outcome = {"member": open(f"{m}/proc/self/vbus").read().strip()}
    for what, call in (("list", bus.interfaces), ("open", lambda: bus.open(0, 1)),
                       ("call", lambda: nic.interface.call(0))):
        try:
            call()
            outcome[what] = "served"
        except client.ConnectorError as exc:
            outcome[what] = [exc.errno, exc.strerror]
    done(**outcome)
    os._exit(0)
os.read(r, 1)
print("parent", os.getpid(), flush=True)
os._exit(0)
"""


def assert_refused_as_exited(result: dict, parent: int) -> None:
    assert result["member"] == "<none>", result
    for what in ("list", "open", "call"):
        assert result[what] != "served", result  # the old connection spoke for B again
        code, message = result[what]
        assert code == errno.ESRCH, result
        assert f"process {parent} has exited" in message, result


def test_a_connection_left_in_a_child_dies_with_the_process_that_made_it(setup):
    source = PRELUDE + textwrap.dedent(INHERITOR)
    with subprocess.Popen(
        [sys.executable, "-c", source, setup.path, "now"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            out, err = parent.communicate(timeout=60)  # to EOF: the child's end too
        finally:
            parent.kill()
    lines = out.splitlines()
    assert lines and lines[0].startswith("parent "), err
    assert_refused_as_exited(json.loads(lines[-1]), int(lines[0].split()[1]))
    # what the parent had open went with it: the device is free at once
    join(setup, "B")
    with client.connect(setup.path) as bus, bus.open_venet(0) as nic:
        nic.send(b"\x02" * 60)
        assert nic.recv(timeout=5) == b"\x02" * 60
    assert_honest(setup.log)


def recycle(pid: int, argv: list[str]) -> subprocess.Popen[str] | None:
    """Start `argv` as process `pid` (free again), through ns_last_pid; None if beaten."""
    for _ in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if proc.pid == pid:
            return proc
        proc.kill()  # another fork took it first: try again
        proc.communicate()
    return None


@pytest.mark.root
@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/ns_last_pid"), reason="no ns_last_pid to recycle a pid"
)
def test_a_recycled_pid_on_the_same_bus_lends_no_authority_to_an_old_connection(setup):
    # the same, and then the parent's pid goes to a new process that joins the bus:
    # looked up by pid alone, the child's connection would speak for bus B again
    source = PRELUDE + textwrap.dedent(INHERITOR)
    member = PRELUDE + 'join("B"); print("joined", flush=True); sys.stdin.read()'
    recycled = None
    with subprocess.Popen(
        [sys.executable, "-c", source, setup.path, "wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None and parent.stdin is not None
            line = parent.stdout.readline()
            assert line.startswith("parent "), parent.stderr and parent.stderr.read()
            pid = int(line.split()[1])
            parent.wait(timeout=10)  # reaped: its pid is free
            recycled = recycle(pid, [sys.executable, "-c", member, setup.path])
            if recycled is None:
                pytest.skip(f"pid {pid} went to another process 200 times")
            assert recycled.stdout is not None and recycled.stdout.readline() == "joined\n"
            members = os.listdir(setup.join("sys", "vbus", "instances", "B", "members"))
            assert str(pid) in members  # a member of B, with the old connection's pid
            parent.stdin.write("go\n")
            parent.stdin.close()
            out = parent.stdout.read()  # to EOF: the child has answered and exited
        finally:
            parent.kill()
            if recycled is not None:
                recycled.kill()
                recycled.communicate()
    assert_refused_as_exited(json.loads(out.splitlines()[-1]), pid)
    assert_honest(setup.log)


# -- small ones ------------------------------------------------------------------------


def test_a_client_that_shuts_its_reading_side_costs_no_internal_error(setup):
    result = run_child(
        setup,
        """
        join("B")
        s, _ = raw()
        s.shutdown(socket.SHUT_RD)
        s.send(b'{"op":"list","seq":1}')  # its reply cannot be delivered
        open(f"{m}/proc/self/vbus", "r").read()
        time.sleep(0.3)
        done(ok=True)
        """,
    )
    assert result == {"ok": True}
    # an event for a client that reads nothing (a second one, still connected)
    deaf = PRELUDE + (
        "join('B'); s, _ = raw(); s.shutdown(socket.SHUT_RD); print('ok', flush=True); "
        "time.sleep(30)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", deaf, setup.path], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ok\n"
            link = "rm config/vbus/instances/C/M && ln -s ../../devices/M config/vbus/instances/B/"
            setup.sh(link, check=True)
            time.sleep(0.3)
            join(setup, "B")
            with client.connect(setup.path) as bus:
                assert len(bus.interfaces()) == 2
        finally:
            child.kill()
            child.wait()
    assert_honest(setup.log)


MEMFDS = """
import fcntl, mmap
from vbusfs.ioq import Ioq
join("B")
bus = client.connect(m)
dev = bus.open(0, 1)
ring = Ioq.create(8, 2048, direction="to_north")
ring_fd, data_fd, to_south, to_north = ring.fds

def reopened(fd, flags):
    return os.open(f"/proc/self/fd/{fd}", flags)

def sealed_copy(fd):
    # the same bytes in a memfd sealed against writes: it cannot be mapped shared writable
    size = os.fstat(fd).st_size
    new = os.memfd_create("sealed", os.MFD_ALLOW_SEALING)
    os.write(new, os.pread(fd, size, 0))
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(new, fcntl.F_ADD_SEALS, seals)
    return new

def huge(fd):
    new = os.memfd_create("huge", os.MFD_ALLOW_SEALING)
    os.ftruncate(new, 1 << 46)
    os.write(new, os.pread(fd, 4096, 0))
    fcntl.fcntl(new, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return new

outcome = {}
for name, fds in {
    "ring read-only": (reopened(ring_fd, os.O_RDONLY), data_fd, to_south, to_north),
    "data read-only": (ring_fd, reopened(data_fd, os.O_RDONLY), to_south, to_north),
    "ring sealed": (sealed_copy(ring_fd), data_fd, to_south, to_north),
    "data sealed": (ring_fd, sealed_copy(data_fd), to_south, to_north),
    "data too big": (ring_fd, huge(data_fd), to_south, to_north),
    "eventfds swapped for memfds": (ring_fd, data_fd, data_fd, ring_fd),
}.items():
    try:
        bus.request("queue", fds, handle=dev.handle, index=0)
        outcome[name] = "attached"
    except client.ConnectorError as exc:
        outcome[name] = [errno.errorcode.get(exc.errno, exc.errno), exc.strerror]
outcome["still served"] = [i.id for i in bus.interfaces()]
done(**outcome)
"""


def test_segments_that_cannot_be_mapped_are_refused_with_an_errno(setup):
    result = run_child(setup, MEMFDS)
    print(json.dumps(result, indent=1))
    assert result.pop("still served") == [0]
    expected = {
        "ring read-only": "EACCES",
        "data read-only": "EACCES",
        "ring sealed": "EPERM",
        "data sealed": "EPERM",
    }
    for name, (code, message) in result.items():
        assert code == expected.get(name, code), (name, code, message)
        assert code in ("EACCES", "EPERM", "EINVAL", "EFBIG"), (name, code, message)
        assert message, name
    assert "internal error" not in setup.log


# -- a wedged daemon -------------------------------------------------------------------


def test_requests_time_out_against_a_stopped_daemon(setup):
    import trio

    join(setup, "B")
    bus = client.connect(setup.path, timeout=1.0)
    os.kill(setup.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(client.ConnectorTimeout) as info:
            bus.interfaces()
        took = time.monotonic() - started
        assert info.value.errno == errno.ETIMEDOUT and isinstance(info.value, TimeoutError)
        assert "the daemon did not answer 'list' within 1 s" in str(info.value)
        assert 0.9 < took < 3.0, took
        # a new connection too: even the lookup of the socket (a FUSE getxattr) is bounded
        started = time.monotonic()
        with pytest.raises(client.ConnectorTimeout):
            client.connect(setup.path, timeout=0.5)
        assert time.monotonic() - started < 2.0

        async def trio_face() -> None:
            with pytest.raises(client.ConnectorTimeout):
                await client.connect_async(setup.path, timeout=0.5)

        trio.run(trio_face)
        print(f"a request to a stopped daemon gave up after {took:.3f} s")
    finally:
        os.kill(setup.pid, signal.SIGCONT)
    # once the daemon runs again, the same connection is served (the late reply is ignored)
    assert bus.interfaces() == [client.InterfaceEntry(0, "virtual-ethernet")]
    bus.close()


def test_trio_requests_time_out_against_a_stopped_daemon(setup):
    import trio

    join(setup, "B")

    async def main() -> None:
        async with await client.connect_async(setup.path, timeout=0.5) as bus:
            os.kill(setup.pid, signal.SIGSTOP)
            try:
                with pytest.raises(client.ConnectorTimeout):
                    await bus.interfaces()
            finally:
                os.kill(setup.pid, signal.SIGCONT)
            assert await bus.interfaces() == [client.InterfaceEntry(0, "virtual-ethernet")]

    trio.run(main)
