"""Hostile members (issue 11): no object a member controls can block, spin or bloat the daemon.

Each attack runs in a real member process against a real mount while a second member
(on another bus) keeps sending frames through its own device.  During each attack the
daemon must answer a FUSE read and the other member's round trip within a couple of
seconds, its CPU and memory must stay within bounds, and only the attacker is refused
or dropped.  The figures are printed (pytest -s shows them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.mount

SETUP = (
    "mkdir config/vbus/instances/A config/vbus/instances/V "
    "config/vbus/devices/L config/vbus/devices/T config/vbus/devices/M && "
    "echo venet-loopback > config/vbus/devices/L/type && "
    "echo venet-tap > config/vbus/devices/T/type && "
    "echo venet-loopback > config/vbus/devices/M/type && "
    "echo 1 > sys/vbus/devices/L/enabled && echo 1 > sys/vbus/devices/M/enabled && "
    "ln -s ../../devices/L config/vbus/instances/A/ && "
    "ln -s ../../devices/T config/vbus/instances/A/ && "
    "ln -s ../../devices/M config/vbus/instances/V/"
)

#: what the daemon may spend during an attack (it burned ~75% of a CPU, or blocked)
MAX_CPU = 0.25
#: peak resident growth and address-space growth allowed over a whole attack
MAX_RSS_GROWTH = 64 << 20
MAX_VM_GROWTH = 512 << 20
#: a FUSE read and another member's frame must come back within this
MAX_LATENCY = 2.0

PRELUDE = """
import errno, fcntl, mmap, os, sys, time
from vbusfs import client
from vbusfs.connector import venet
from vbusfs.ioq import Ioq, IoqEmpty, lowlevel
m = sys.argv[1]
open(f"{m}/proc/self/vbus", "w").write(sys.argv[2])
bus = client.connect(m)
FRAME = bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xB5]) + bytes(46)

def refused(iface, index, fds):
    try:
        bus.request("queue", tuple(fds), handle=iface.handle, index=index)
    except client.ConnectorError as e:
        return e.errno
    return 0

def sealed_memfd(size):
    fd = os.memfd_create("forged", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd

def until_stdin_closes():
    print("READY", flush=True)
    sys.stdin.read()
"""

VICTIM = """
with bus.open_venet(0) as nic:
    print("READY", flush=True)
    for line in sys.stdin:
        t = time.monotonic()
        nic.send(FRAME, timeout=5)
        assert nic.recv(timeout=5) == FRAME
        print(f"{time.monotonic() - t:.4f}", flush=True)
"""


def child(mnt, code: str, bus: str) -> subprocess.Popen[str]:
    source = textwrap.dedent(PRELUDE) + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", source, mnt.path, bus],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), (line, proc.stderr.read() if proc.stderr else "")
    return line


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate("", timeout=30)
    return proc.returncode, out, err


def status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    """Measures the daemon while an attack runs: CPU, memory, and two latencies."""

    def __init__(self, mnt, victim: subprocess.Popen[str]) -> None:
        self.mnt, self.victim, self.pid = mnt, victim, mnt.pid
        self.hwm0 = status(self.pid, "VmHWM")
        self.vm0 = status(self.pid, "VmSize")

    def fuse_read(self) -> float:
        t = time.monotonic()
        with open(self.mnt.join("sys", "vbus", "devices", "M", "enabled")) as f:
            assert f.read().strip() == "1"
        return time.monotonic() - t

    def round_trip(self) -> float:
        assert self.victim.stdin is not None and self.victim.stdout is not None
        t = time.monotonic()
        self.victim.stdin.write("ping\n")
        self.victim.stdin.flush()
        line = self.victim.stdout.readline()
        assert line, self.victim.stderr.read() if self.victim.stderr else ""
        return time.monotonic() - t

    def check(self, name: str, seconds: float = 1.5) -> dict[str, float]:
        """Measure for `seconds` while the attack runs; assert the bounds."""
        c0, t0 = cpu_seconds(self.pid), time.monotonic()
        reads, trips = [], []
        while time.monotonic() - t0 < seconds:
            reads.append(self.fuse_read())
            trips.append(self.round_trip())
            time.sleep(0.1)
        cpu = (cpu_seconds(self.pid) - c0) / (time.monotonic() - t0)
        figures = {
            "cpu": cpu,
            "fuse_read_max_s": max(reads),
            "round_trip_max_s": max(trips),
            "rss_peak_growth_mib": (status(self.pid, "VmHWM") - self.hwm0) / 2**20,
            "vm_growth_mib": (status(self.pid, "VmSize") - self.vm0) / 2**20,
            "rss_mib": status(self.pid, "VmRSS") / 2**20,
        }
        print(f"\n{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
        assert figures["fuse_read_max_s"] < MAX_LATENCY, figures
        assert figures["round_trip_max_s"] < MAX_LATENCY, figures
        assert cpu < MAX_CPU, figures
        assert figures["rss_peak_growth_mib"] < MAX_RSS_GROWTH / 2**20, figures
        assert figures["vm_growth_mib"] < MAX_VM_GROWTH / 2**20, figures
        return figures


@pytest.fixture
def arena(mnt) -> Iterator[Probe]:
    mnt.sh(SETUP, check=True)
    victim = child(mnt, VICTIM, "V")
    try:
        ready(victim)
        probe = Probe(mnt, victim)
        probe.check("before any attack", 0.5)
        yield probe
        # the victim was never dropped: it still has its device
        probe.round_trip()
    finally:
        victim.kill()
        victim.communicate()


def attack(probe: Probe, name: str, code: str) -> str:
    """Run an attacker on bus A; measure while it attacks; the attacker's own output."""
    attacker = child(probe.mnt, code, "A")
    try:
        line = ready(attacker)
        probe.check(name)
        rc, out, err = finish(attacker)
        assert rc == 0, err
        return line + out
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.communicate()


def test_a_saturated_blocking_wake_up_socket_never_blocks_the_daemon(arena):
    # the wedge, against the new signalling: the attacker fills the socket
    # that wakes it, clears O_NONBLOCK on the shared description, keeps north's irq
    # enabled with nothing pending, and sends frames the loopback returns: every
    # return makes the daemon signal north
    out = attack(
        arena,
        "wedge",
        """
        import threading
        nic = bus.open_venet(0)
        wake = nic.rx.fds.to_north
        try:
            while True:
                os.write(wake, b"x")
        except BlockingIOError:
            pass
        flags = fcntl.fcntl(wake, fcntl.F_GETFL)
        fcntl.fcntl(wake, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        ring = mmap.mmap(nic.rx.fds.ring, 56 + 32 * nic.rx.count)
        stop, back = threading.Event(), [0]
        def hammer():
            while not stop.is_set():
                ring[8], ring[9] = 1, 0  # north enabled, nothing pending
                try:
                    nic.tx.send_nowait(FRAME)
                except Exception:
                    pass
                try:
                    back[0] += len(nic.rx.receive_batch_nowait(64))
                except IoqEmpty:
                    pass
                time.sleep(0.001)
        t = threading.Thread(target=hammer)
        t.start()
        time.sleep(0.3)
        print(f"READY {back[0]}", flush=True)
        sys.stdin.read()
        stop.set()
        t.join()
        print(f"returned {back[0]}")
        """,
    )
    # the daemon kept signalling the attacker and returning its frames
    assert int(out.split()[-1]) > 10, out


def test_an_eventfd_to_wake_north_is_refused(arena):
    # the wedge as it was: a saturated eventfd, O_NONBLOCK cleared, as the
    # fd that wakes north.  The daemon would have to write it: refused
    out = attack(
        arena,
        "legacy eventfd",
        """
        iface = bus.open(0, 1)
        rx = Ioq.create(64, 2048, direction="to_north")
        efd = os.eventfd(0, os.EFD_NONBLOCK)
        os.eventfd_write(efd, 0xFFFFFFFFFFFFFFFE)  # saturated: one more write blocks
        fcntl.fcntl(efd, fcntl.F_SETFL, 0)
        print("READY", refused(iface, 0, rx.fds._replace(to_north=efd)), flush=True)
        sys.stdin.read()
        """,
    )
    assert out.split()[1] == str(22), out  # EINVAL


def test_a_semaphore_eventfd_is_refused(arena):
    # CPU burn: a semaphore eventfd with a huge count is readable forever, one per read
    out = attack(
        arena,
        "semaphore eventfd",
        """
        iface = bus.open(0, 1)
        tx = Ioq.create(64, 2048, direction="to_south")
        efd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
        os.eventfd_write(efd, 2**62)
        print("READY", refused(iface, 1, tx.fds._replace(to_south=efd)), flush=True)
        sys.stdin.read()
        """,
    )
    assert out.split()[1] == str(22), out


def test_huge_data_segments_are_refused(arena):
    # 5 queues with 4 TiB sparse memfds (and one just over the 64 MiB limit):
    # the daemon would have mapped them all
    out = attack(
        arena,
        "huge segments",
        """
        iface = bus.open(0, 1)
        tx = Ioq.create(64, 2048, direction="to_south")
        codes = [refused(iface, 1, tx.fds._replace(data=sealed_memfd(4 << 40)))
                 for _ in range(5)]
        codes.append(refused(iface, 1, tx.fds._replace(data=sealed_memfd((64 << 20) + 4096))))
        print("READY", *codes, flush=True)
        sys.stdin.read()
        """,
    )
    assert out.split()[1:7] == [str(22)] * 6, out


def test_a_large_loopback_segment_costs_the_daemon_no_memory_in_proportion(arena):
    # 16 MiB data segment on the loopback's transmit queue (the daemon used to
    # allocate 64x it), with frames and oversize messages through it
    out = attack(
        arena,
        "loopback 16 MiB segment",
        """
        iface = bus.open(0, 1)
        rx = Ioq.create(256, 2048, direction="to_north")
        tx = Ioq.create(16, 1 << 20, direction="to_south")
        iface.attach_queue(0, rx)
        iface.attach_queue(1, tx)
        iface.call(venet.LINKUP)
        back = 0
        for i in range(200):
            tx.send(FRAME if i % 2 else bytes(1 << 20), timeout=5)
            try:
                back += len(rx.receive_batch_nowait(64))
            except IoqEmpty:
                pass
        deadline = time.monotonic() + 10
        while back < 100 and time.monotonic() < deadline:
            try:
                back += len(rx.receive_batch_nowait(64))
            except IoqEmpty:
                time.sleep(0.01)
        print("READY", back, flush=True)
        sys.stdin.read()
        print(iface.stats()["oversize"])
        """,
    )
    # every frame came back; every 1 MiB message was dropped, uncopied
    assert [int(n) for n in out.split()[1:]] == [100, 100], out


def test_overlapping_descriptors_on_a_disabled_tap_are_dropped_uncopied(arena):
    # 64 descriptors each spanning an 8 MiB segment, to a venet-tap with no host
    # interface: the daemon used to copy every one into Python bytes (+512 MiB)
    out = attack(
        arena,
        "tap 64 x 8 MiB descriptors",
        """
        iface = bus.open(1, 1)
        rx = Ioq.create(64, 2048, direction="to_north")
        tx = Ioq.create(64, 128 << 10, direction="to_south")
        iface.attach_queue(0, rx)
        iface.attach_queue(1, tx)
        iface.call(venet.LINKUP)
        for rounds in range(5):
            for i in range(64):
                lowlevel.push(tx, "both", i, 0, 8 << 20)
            tx.inject()
            deadline = time.monotonic() + 5
            while lowlevel.count_of(tx, "inuse") and time.monotonic() < deadline:
                time.sleep(0.01)
            while not lowlevel.is_empty(tx, "valid"):
                lowlevel.pop(tx, "valid")
        print("READY", iface.stats()["dropped"], flush=True)
        sys.stdin.read()
        """,
    )
    assert int(out.split()[1]) == 5 * 64, out


def test_a_storm_of_empty_wake_ups_costs_the_daemon_little(arena):
    # the attacker writes the eventfd that wakes the daemon as fast as it can, with
    # nothing on its ring: every wake-up finds no work
    out = attack(
        arena,
        "wake-up storm",
        """
        import threading
        nic = bus.open_venet(0)
        wake, stop, kicks = nic.tx.fds.to_south, threading.Event(), [0]
        def storm():
            while not stop.is_set():
                os.eventfd_write(wake, 1)
                kicks[0] += 1
        t = threading.Thread(target=storm)
        t.start()
        time.sleep(0.3)
        print("READY", flush=True)
        sys.stdin.read()
        stop.set()
        t.join()
        print(kicks[0])
        """,
    )
    assert int(out.split()[-1]) > 1000, out


@pytest.mark.parametrize("aim", ["path", "abstract", "nothing"])
def test_a_wake_up_socket_aimed_at_another_socket_is_refused(arena, tmp_path, aim):
    # a confused deputy: the attacker hands the daemon (root) a datagram socket
    # connected to some other local socket, e.g. a logging service's, which the
    # daemon would send a byte to on every wake-up.  Refused at attach; had it been
    # taken, the frames the attacker then sends make the daemon wake "north" often
    address = {"path": str(tmp_path / "victim.sock"), "abstract": f"\0vbusfs-victim-{os.getpid()}"}
    with contextlib.ExitStack() as stack:
        victim = None
        if aim != "nothing":
            victim = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            victim.bind(address[aim])
            victim.setblocking(False)
        out = attack(
            arena,
            f"wake-up socket aimed at {aim}",
            f"""
            import socket
            aimed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            if {aim != "nothing"}:
                aimed.connect({address.get(aim)!r})
            iface = bus.open(0, 1)
            rx = Ioq.create(64, 2048, direction="to_north")
            tx = Ioq.create(64, 2048, direction="to_south")
            code = refused(iface, 0, rx.fds._replace(to_north=aimed.fileno()))
            if code:
                iface.attach_queue(0, rx)  # the same connection goes on with its own pair
            iface.attach_queue(1, tx)
            iface.call(venet.LINKUP)
            back = 0
            for _ in range(20):
                tx.send(FRAME, timeout=5)
                try:
                    assert rx.receive(timeout=2) == FRAME
                except Exception:
                    break  # never woken: the daemon woke the aimed socket instead
                back += 1
            print("READY", code, back, flush=True)
            sys.stdin.read()
            """,
        )
        assert out.split()[1:3] == [str(errno.EINVAL), "20"], out
        if victim is not None:
            with pytest.raises(BlockingIOError):
                victim.recv(16)
