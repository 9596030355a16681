"""`vbusfs monitor` on live mounts: real shell commands, real members and clients, a burst
of 10,000 changes with a fast and a stalled reader, `| head`, the unmount, and who may
watch what (behaviour §9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vbusfs import client
from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount

VBUSFS = [sys.executable, "-m", "vbusfs"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
Rec = dict[str, Any]


class CliMonitor:
    """`vbusfs monitor` in a process of its own, its lines gathered by a thread."""

    def __init__(
        self, mountpoint: str, *, as_json: bool = False, launcher: tuple[str, ...] = tuple(VBUSFS)
    ) -> None:
        options = ["--json"] if as_json else []
        self.as_json = as_json
        self.process = subprocess.Popen(
            [*launcher, "monitor", *options, mountpoint],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.records: list[Rec] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            record = json.loads(line) if self.as_json else parse_line(line)
            with self._changed:
                self.records.append(record)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, wanted: Callable[[Rec], bool], timeout: float = 15.0) -> int:
        """The index of the first record `wanted` accepts, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i, record in enumerate(self.records):
                    if wanted(record):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"not seen: {self.records[-5:]} {self.stderr_now()}")
                self._changed.wait(min(left, 0.2))

    def stderr_now(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def end(self, timeout: float = 15.0) -> tuple[int, str]:
        """Wait for the process to end: its status and what it said on stderr."""
        try:
            self.process.wait(timeout)
            self._reader.join(5)
            assert self.process.stderr is not None
            err = self.process.stderr.read()
        finally:
            self.kill()
        return self.process.returncode, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def parse_line(line: str) -> Rec:
    """`[time] event key=value ...` (test names hold no spaces) as a record."""
    when, event, *words = line.split()
    record: Rec = {"time": float(when.strip("[]")), "event": event}
    for word in words:
        key, _, value = word.partition("=")
        record[key] = int(value) if value.isdigit() and key in ("pid", "interface") else value
    return record


@pytest.fixture
def monitors() -> Iterator[list[CliMonitor]]:
    started: list[CliMonitor] = []
    try:
        yield started
    finally:
        for monitor in started:
            monitor.kill()


def ready(monitor: CliMonitor) -> int:
    """Wait for `monitor`'s first record, which says it is listening; the index after it."""
    assert monitor.wait_for(lambda r: True) == 0
    assert monitor.records[0]["event"] == "monitoring", monitor.records[0]
    return 1


def test_monitor_prints_each_walkthrough_step_as_it_happens(vbus_mount, monitors):
    mount = vbus_mount
    mount.sh("mkdir config/vbus/instances/B", check=True)
    monitor = CliMonitor(mount.path)
    monitors.append(monitor)
    start = ready(monitor)
    mount.sh(
        "mkdir config/vbus/devices/dev0 && echo venet-loopback > config/vbus/devices/dev0/type"
        f" && ln -s {mount.path}/config/vbus/devices/dev0 config/vbus/instances/B/"
        " && echo 02:00:00:00:00:01 > sys/vbus/devices/dev0/client_mac",
        check=True,
    )
    # a member joins by writing, forks a child (seen by the daemon's sweep), both exit
    shell = subprocess.run(
        ["bash", "-c", f"echo B > {mount.path}/proc/self/vbus; sleep 1.2 & echo $$ $!; wait"],
        capture_output=True,
        text=True,
        check=True,
    )
    shell_pid, child_pid = map(int, shell.stdout.split())
    # a client opens the device and closes it
    code = (
        "import os, sys; from vbusfs import client; b = client.connect(sys.argv[1]); "
        "n = b.open_venet(0); n.close(); print(os.getpid())"
    )
    opener_args = (sys.executable, code, mount.path)
    opener = subprocess.run(
        ["bash", "-c", 'echo B > "$2/proc/self/vbus" && exec "$0" -c "$1" "$2"', *opener_args],
        capture_output=True,
        text=True,
        check=True,
    )
    opener_pid = int(opener.stdout)
    mount.sh("rm config/vbus/instances/B/dev0 && rmdir config/vbus/devices/dev0", check=True)
    monitor.wait_for(lambda r: r["event"] == "left" and r["pid"] == opener_pid)
    monitor.wait_for(lambda r: r["event"] == "left" and r["pid"] == child_pid)
    monitor.wait_for(lambda r: r["event"] == "left" and r["pid"] == shell_pid)
    mount.sh("rmdir config/vbus/instances/B", check=True)
    monitor.wait_for(lambda r: r["event"] == "removed" and r.get("name") == "B")
    seen = monitor.records[start:]
    for record in seen:
        record.pop("time")
    ordered = [r for r in seen if r["event"] not in ("joined", "left")]
    link = {"bus": "B", "interface": 0, "device": "dev0", "link": "dev0"}
    assert ordered == [
        {"event": "created", "object": "device", "name": "dev0"},
        {"event": "type", "device": "dev0", "class": "venet-loopback"},
        {"event": "linked", **link},
        {"event": "stored", "device": "dev0", "attribute": "client_mac"},
        {"event": "opened", "bus": "B", "interface": 0, "device": "dev0", "pid": opener_pid},
        {"event": "closed", "bus": "B", "interface": 0, "device": "dev0", "pid": opener_pid},
        {"event": "unlinked", **link},
        {"event": "removed", "object": "device", "name": "dev0"},
        {"event": "removed", "object": "bus", "name": "B"},
    ]
    members = [(r["event"], r["pid"], r["how"]) for r in seen if r["event"] in ("joined", "left")]
    assert ("joined", child_pid, "fork") in members
    assert ("left", child_pid, "exit") in members
    assert members.index(("joined", child_pid, "fork")) < members.index(("left", child_pid, "exit"))
    assert ("joined", shell_pid, "write") in members
    assert ("left", shell_pid, "exit") in members
    assert ("joined", opener_pid, "write") in members
    assert ("left", opener_pid, "exit") in members
    assert all(r.get("bus") == "B" for r in seen if r["event"] in ("joined", "left"))
    monitor.process.send_signal(signal.SIGINT)
    assert monitor.end() == (0, "")


# What a script does: start the monitor in the background, read its first line (it is
# listening), make one change at once (a shell builtin's write, so it follows at once)
# and read it back. Each round is a fresh monitor. With the first line printed before the
# request was sent (first thing, or just before connecting), the change was lost in the
# first or second round in each of 10 runs; printed after the answer, none in 8.
SCRIPT = r"""
trap '[ -n "${MON_PID:-}" ] && kill "$MON_PID" 2>/dev/null' EXIT
for i in $(seq "$ROUNDS"); do
  coproc MON { exec "$@" monitor "$MNT" 2>&1; }
  read -r -t 20 banner <&"${MON[0]}" || { echo "round $i: no first line"; exit 1; }
  echo venet-loopback > "$MNT/config/vbus/devices/s$i/type"  # a builtin: no fork, no wait
  read -r -t 5 change <&"${MON[0]}" || { echo "round $i: missed after: $banner"; exit 1; }
  echo "$banner"
  echo "$change"
  kill "$MON_PID"; wait "$MON_PID"
done
"""


def test_a_script_that_waits_for_the_first_line_sees_its_next_change(vbus_mount):
    rounds = 5
    vbus_mount.sh(f"mkdir config/vbus/devices/s{{1..{rounds}}}", check=True)
    done = subprocess.run(
        ["bash", "-c", SCRIPT, "sh", *VBUSFS],
        env=dict(os.environ, MNT=vbus_mount.path, ROUNDS=str(rounds)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    lines = [parse_line(line) for line in done.stdout.splitlines()]
    for record in lines:
        record.pop("time")
    assert lines == [
        record
        for i in range(1, rounds + 1)
        for record in (
            {"event": "monitoring", "mountpoint": vbus_mount.path},
            {"event": "type", "device": f"s{i}", "class": "venet-loopback"},
        )
    ]


def accounted(records: list[Rec], first: int, last: int) -> list[Rec]:
    """Check that every number from `first` to `last` is a record or counted in a dropped
    record, in order; the records seen among them."""
    expected, seen = first, []
    for record in records:
        if record["event"] == "dropped":
            if expected > last:
                break
            assert record["first"] == expected, (record, expected)
            expected += record["count"]
        elif record["seq"] >= first:
            assert record["seq"] == expected, (record, expected)
            seen.append(record)
            expected += 1
        if expected > last:
            break
    assert expected > last, f"only up to {expected - 1} of {last} accounted for"
    return seen


BURST = 10_000


def test_a_burst_of_10000_changes_is_seen_or_counted_in_order(vbus_mount, monitors):
    """One reader keeps up (`vbusfs monitor --json`), one reads nothing until the burst is
    over: each record of the burst reaches both or is counted as dropped, in order, and the
    stalled one, whose buffer holds 4096, is told how many it lost."""
    mount = vbus_mount
    mount.sh(
        "mkdir config/vbus/instances/B config/vbus/devices/d0 config/vbus/devices/d1 && "
        "echo venet-tap > config/vbus/devices/d0/type && "
        "echo venet-tap > config/vbus/devices/d1/type",
        check=True,
    )
    fast = CliMonitor(mount.path, as_json=True)
    monitors.append(fast)
    ready(fast)
    assert fast.records[0]["seq"] == 0
    with client.monitor(mount.path) as stalled:  # it hears every change once it returns
        assert (stalled.bus, stalled.buffer) == (None, 4096)
        early: list[client.Record] = []
        # the burst follows this record at once, in both
        os.mkdir(mount.join("config/vbus/devices/start"))
        start = fast.records[fast.wait_for(lambda r: r.get("name") == "start")]["seq"]
        while not any(r.fields.get("name") == "start" for r in early):
            early.extend(stalled.receive(10))
        stalled_start = next(r.seq for r in early if r.fields.get("name") == "start")
        fds = [
            os.open(mount.join(f"sys/vbus/devices/d{i}/burstthresh"), os.O_WRONLY) for i in (0, 1)
        ]
        try:
            for i in range(BURST):
                os.write(fds[i % 2], b"%d" % (i % 97))
        finally:
            for fd in fds:
                os.close(fd)
        last = start + BURST
        fast.wait_for(lambda r: r.get("seq", 0) >= last or _ends_after(r, last), 20)
        kept = accounted(fast.records, start + 1, last)
        check_burst(kept, start)
        # the stalled reader reads at last: 4096 kept, the rest counted where they were lost
        got: list[Rec] = []
        while not got or _covered(got) < stalled_start + BURST:
            got.extend(r.as_json() for r in stalled.receive(10))
    kept = accounted(got, stalled_start + 1, stalled_start + BURST)
    check_burst(kept, stalled_start)
    lost = [r for r in got if r["event"] == "dropped"]
    assert lost and sum(r["count"] for r in lost) == BURST - len(kept)
    assert 4096 <= len(kept) < BURST


def check_burst(kept: list[Rec], start: int) -> None:
    for record in kept:
        k = record["seq"] - start - 1
        assert (record["event"], record["device"], record["attribute"]) == (
            "stored",
            f"d{k % 2}",
            "burstthresh",
        )


def _ends_after(record: Rec, last: int) -> bool:
    return record["event"] == "dropped" and record["first"] + record["count"] > last


def _covered(records: list[Rec]) -> int:
    """The highest number the records account for (seen or counted)."""
    top = 0
    for r in records:
        top = max(top, r["first"] + r["count"] - 1 if r["event"] == "dropped" else r["seq"])
    return top


def test_monitor_through_head_ends_quietly_at_the_broken_pipe(vbus_mount):
    mount = vbus_mount
    pipeline = subprocess.Popen(
        ["bash", "-c", 'set -o pipefail; "$@" | head -n 3', "sh", *VBUSFS, "monitor", mount.path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        n = 0
        while pipeline.poll() is None:  # changes until head has its lines and the monitor ends
            assert time.monotonic() < deadline, "the monitor did not end at the broken pipe"
            mount.sh(
                f"mkdir config/vbus/devices/h{n} && rmdir config/vbus/devices/h{n}", check=True
            )
            n += 1
            time.sleep(0.05)
        out, err = pipeline.communicate()
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.communicate()
    assert pipeline.returncode == 0, err  # pipefail: the monitor's own status too
    assert err == ""
    banner, *lines = out.splitlines()
    assert banner.split()[1:] == ["monitoring", f"mountpoint={mount.path}"]
    assert len(lines) == 2 and all("object=device name=h" in line for line in lines)


# `vbusfs monitor` where the FUSE adapter cannot be imported: the monitor (and the check
# that its path is a live mount) must not need it, so it listens a fraction of a second
# after it starts instead of after pyfuse3, trio's loop and the daemon have been imported.
NO_ADAPTER = (
    sys.executable,
    "-c",
    "import sys; sys.modules['pyfuse3'] = None\n"
    "from vbusfs.cli import main; sys.exit(main(sys.argv[1:]))",
)


def test_monitor_needs_neither_the_fuse_adapter_nor_the_daemon(vbus_mount, monitors):
    vbus_mount.sh("mkdir config/vbus/instances/B", check=True)
    monitor = CliMonitor(vbus_mount.path, launcher=NO_ADAPTER)
    monitors.append(monitor)
    ready(monitor)
    monitor.process.send_signal(signal.SIGTERM)
    status, err = monitor.end()
    assert (status, err) == (0, "")


@pytest.fixture
def open_mount() -> Iterator[LiveMount]:
    """A fresh mount other users reach (pytest's temporary tree is root's alone), with bus
    B, which nobody (65534) may join, and bus C."""
    top = tempfile.mkdtemp(prefix="vbusfs-monitor-")
    os.chmod(top, 0o755)
    mount = LiveMount(top).start()
    try:
        mount.sh(
            "mkdir config/vbus/instances/B config/vbus/instances/C && "
            "echo 65534 > config/vbus/instances/B/perms/owner",
            check=True,
        )
        yield mount
    finally:
        log = mount.stop()
        os.rmdir(top)
    assert "Traceback" not in log, log


def test_who_may_monitor_and_the_unmount_ends_every_monitor(open_mount, monitors):
    mount = open_mount
    # anyone else is refused: nobody, on no bus
    refused = subprocess.run(
        [*NOBODY, *VBUSFS, "monitor", mount.path], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 1
    assert refused.stderr == (
        f"vbusfs monitor: process {_pid_in(refused.stderr)} is not a member of any bus "
        "(Permission denied)\n"
    )
    # nobody, made the owner of bus B, joins it and becomes `vbusfs monitor`
    join = (
        "import sys; open(sys.argv[1] + '/proc/self/vbus', 'w').write('B'); "
        "from vbusfs.cli import main; sys.exit(main(sys.argv[2:]))"
    )
    as_member = (*NOBODY, sys.executable, "-c", join, mount.path)
    member = CliMonitor(mount.path, as_json=True, launcher=as_member)
    leaver = CliMonitor(mount.path, launcher=as_member)
    admin = CliMonitor(mount.path)
    monitors.extend([member, leaver, admin])
    for monitor in (member, leaver, admin):
        ready(monitor)
    mount.sh(
        "mkdir config/vbus/devices/x config/vbus/devices/y && "
        "echo venet-loopback > config/vbus/devices/x/type && "
        "echo venet-loopback > config/vbus/devices/y/type && "
        "ln -s ../../devices/x config/vbus/instances/C/ && "
        "ln -s ../../devices/y config/vbus/instances/B/ && "
        "echo 02:00:00:00:00:0c > sys/vbus/devices/x/client_mac && "
        "echo 02:00:00:00:00:0b > sys/vbus/devices/y/client_mac",
        check=True,
    )
    admin.wait_for(lambda r: r["event"] == "stored" and r.get("device") == "y")
    member.wait_for(lambda r: r["event"] == "stored" and r.get("device") == "y")
    # root takes the leaver's process off bus B: its monitor ends, saying why
    leaver_pid = leaver.process.pid
    mount.sh(f"echo 0 > proc/{leaver_pid}/vbus", check=True)
    assert leaver.end() == (
        1,
        f"vbusfs monitor: process {leaver_pid} is no longer a member of bus 'B' (left it)\n",
    )
    assert leaver.records[-1]["event"] == "revoked"
    log = mount.stop()
    assert "Traceback" not in log, log
    for monitor in (member, admin):
        assert monitor.end() == (0, "")
        last = monitor.records[-1]
        assert (last["event"], last["mountpoint"]) == ("unmounted", mount.path)
    heard = [(r["event"], r.get("bus"), r.get("device")) for r in member.records]
    # the member heard its own bus only: no C, no device made or typed (not on a bus then)
    assert heard == [
        ("monitoring", "B", None),  # a member's first record names the bus it hears
        ("linked", "B", "y"),
        ("stored", None, "y"),
        ("left", "B", None),
        ("unmounted", None, None),
    ]
    assert member.records[0]["seq"] == 0 and member.records[0]["mountpoint"] == mount.path
    assert admin.records[0] == {
        "time": admin.records[0]["time"],
        "event": "monitoring",
        "mountpoint": mount.path,
    }
    admin_heard = [(r["event"], r.get("bus"), r.get("device")) for r in admin.records]
    assert ("linked", "C", "x") in admin_heard and ("created", None, None) in admin_heard


def _pid_in(text: str) -> str:
    return text.split("process ", 1)[1].split(" ", 1)[0]


def test_the_trio_face_and_a_client_with_devices_open(vbus_mount):
    import errno

    import trio

    mount = vbus_mount
    mount.sh(
        "mkdir config/vbus/instances/B config/vbus/devices/d && "
        "echo venet-loopback > config/vbus/devices/d/type && "
        "ln -s ../../devices/d config/vbus/instances/B/",
        check=True,
    )

    async def watch() -> list[client.Record]:
        async with await client.monitor_async(mount.path) as monitor:
            assert (monitor.bus, monitor.buffer) == (None, 4096)
            await trio.to_thread.run_sync(os.mkdir, mount.join("config/vbus/devices/e"))
            got: list[client.Record] = []
            async for record in monitor.records():
                got.append(record)
                if record.fields.get("name") == "e":
                    return got
        raise AssertionError("the monitor ended")

    got = trio.run(watch)
    assert [(r.event, r.fields) for r in got] == [("created", {"object": "device", "name": "e"})]
    # a connection with a device open stays a client: it cannot become a monitor
    with open(mount.join("proc/self/vbus"), "w") as f:
        f.write("B")
    try:
        with client.connect(mount.path) as bus, bus.open_venet(0):
            with pytest.raises(client.ConnectorError) as refused:
                bus.request("monitor")
            assert refused.value.errno == errno.EBUSY
    finally:
        with open(mount.join("proc/self/vbus"), "w") as f:
            f.write("0")


def test_a_monitor_that_stops_reading_its_socket_is_let_go_quietly(vbus_mount):
    """Its records cannot be delivered (EPIPE) while it still holds the connection: the
    daemon ends that monitor, logs no error, and serves the next."""
    import socket

    mount = vbus_mount
    with client.monitor(mount.path) as deaf, client.monitor(mount.path) as other:
        deaf._sock.shutdown(socket.SHUT_RD)
        os.mkdir(mount.join("config/vbus/devices/a"))
        got = other.receive(10)
        assert [(r.event, r.fields.get("name")) for r in got] == [("created", "a")]
        # the deaf one was let go: it sends its hang-up into a connection already closed
        deadline = time.monotonic() + 10
        while True:
            try:
                deaf._sock.send(b"{}")
            except OSError:
                break
            assert time.monotonic() < deadline, "the daemon kept the deaf monitor"
            time.sleep(0.05)
    assert "Traceback" not in mount.log


def test_sigterm_ends_the_monitor_cleanly(vbus_mount, monitors):
    mount = vbus_mount
    mount.sh("mkdir config/vbus/instances/B", check=True)
    monitor = CliMonitor(mount.path)
    monitors.append(monitor)
    ready(monitor)
    monitor.process.send_signal(signal.SIGTERM)
    assert monitor.end() == (0, "")


def test_monitor_of_a_directory_that_is_no_mount_says_so(tmp_path):
    done = subprocess.run(
        [*VBUSFS, "monitor", str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"vbusfs monitor: {tmp_path} is not a vbusfs mount (no daemon answers there); "
        f"mount one with `vbusfs mount {tmp_path}`\n"
    )
