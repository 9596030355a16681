"""Every example runs as a new user would run it, in a subprocess, and cleans up after itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mount

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOPBACK = os.path.join(ROOT, "examples", "venet_loopback.py")


def vbusfs_mounts() -> list[str]:
    """Mount points of every vbusfs mount this process can see (/proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            if fields[separator + 1] == "fuse.vbusfs":
                found.append(fields[4])
    return found


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    with subprocess.Popen(
        [sys.executable, LOOPBACK, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def check_loopback_output(stdout: str) -> None:
    assert "0: virtual-ethernet" in stdout
    mac = re.search(r"opened interface 0 as venet, MAC ((?:[0-9a-f]{2}:){5}[0-9a-f]{2})", stdout)
    assert mac is not None, stdout
    echoed = re.findall(
        rf"{mac.group(1)} -> ff:ff:ff:ff:ff:ff type 0x88b5 \d+ bytes: 'hello vbus, frame (\d)'",
        stdout,
    )
    assert echoed == ["0", "1", "2", "3", "4"], stdout
    assert "every frame came back unchanged" in stdout
    assert "rx_frames=5" in stdout and "tx_frames=5" in stdout
    assert stdout.rstrip().endswith("done")


def test_venet_loopback_mounts_its_own_vbusfs_and_leaves_no_mount():
    result = run_example()
    assert result.returncode == 0, result.stdout + result.stderr
    check_loopback_output(result.stdout)
    mounted = re.search(r"mounted vbusfs on (\S+)", result.stdout)
    assert mounted is not None
    assert f"unmounted {mounted.group(1)}" in result.stdout
    # other tests may mount and unmount vbusfs meanwhile: look for this example's mount
    assert mounted.group(1) not in vbusfs_mounts()
    assert not os.path.exists(mounted.group(1))


def test_venet_loopback_on_a_given_mount_leaves_it_as_it_found_it(mnt):
    listing = {
        tree: sorted(os.listdir(mnt.join(tree)))
        for tree in ("config/vbus/devices", "config/vbus/instances", "sys/vbus/devices")
    }
    result = run_example(mnt.path)
    assert result.returncode == 0, result.stdout + result.stderr
    check_loopback_output(result.stdout)
    assert "mounted vbusfs" not in result.stdout
    assert mnt.mounted()
    assert {tree: sorted(os.listdir(mnt.join(tree))) for tree in listing} == listing


def test_venet_loopback_refuses_a_bad_command_line():
    result = run_example("--help-me", "extra")
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_venet_bench_runs_both_transports_and_cleans_up():
    bench = os.path.join(ROOT, "bench", "venet.py")
    with subprocess.Popen(
        [sys.executable, bench, "--rounds", "1", "--seconds", "0.05"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as process:
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout + stderr
    for size in (64, 1500):
        for name in ("vbusfs", "socketpair"):
            assert re.search(rf"^ +{size} \| {name} +\| +[\d,]+ \|", stdout, re.M), stdout
    assert "target (issue 5)" in stdout
    mounted = re.search(r"vbusfs mounted on (\S+) \(daemon pid (\d+)\)", stdout)
    assert mounted is not None, stdout
    assert mounted.group(1) not in vbusfs_mounts()
    assert not os.path.exists(mounted.group(1))
    assert not os.path.exists(f"/proc/{mounted.group(2)}")  # the daemon is gone and reaped


def _bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run bench/SCRIPT small, from the checkout."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", script), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_the_soak_bench_runs_its_eight_workers_and_finds_the_daemon_clean():
    done = _bench("soak.py", "--seconds", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "internal errors in the daemon's log: 0; workers that failed: []" in done.stdout
    fds = re.findall(r"^\| (start|end) \| [\d,]+ \| (\d+) \| [\d,]+ \|$", done.stdout, re.M)
    assert len(fds) == 2 and fds[0][1] == fds[1][1], done.stdout  # fds back to the start
    assert re.search(r"[\d,]+ frames", done.stdout) and "junk requests" in done.stdout


def test_the_membership_bench_measures_both_modes_and_cleans_up():
    done = _bench("membership.py", "--counts", "30", "--window", "0.5", "--listings", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    modes = ["cgroup", "proc"] if os.getuid() == 0 else ["proc"]
    for mode in modes:
        for n in ("0", "30"):
            row = rf"^\| {mode} \| {n} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+x \| [\d.]+ \|"
            assert re.search(row, done.stdout, re.M), done.stdout
    assert "wrong listings: 0; internal errors in the daemons' logs: 0" in done.stdout
    if os.getuid() == 0:
        assert "targets (issue 12), cgroup mode with 30 unrelated processes" in done.stdout
    # every mount, daemon, member and the unrelated processes' parent is gone
    mounted = re.findall(
        r"vbusfs mounted on (\S+) \(daemon pid (\d+)\), member pid (\d+)", done.stdout
    )
    assert len(mounted) == len(modes), done.stdout
    spawner = re.search(r"N=30: unrelated processes started by pid (\d+)", done.stdout)
    assert spawner is not None, done.stdout
    for path, daemon, member in mounted:
        assert path not in vbusfs_mounts()
        assert not os.path.exists(path)
        assert not os.path.exists(f"/proc/{daemon}") and not os.path.exists(f"/proc/{member}")
    assert not os.path.exists(f"/proc/{spawner.group(1)}")


def test_the_devices_bench_runs_every_peer_and_cleans_up():
    done = _bench(
        "devices.py",
        *("--rounds", "1", "--seconds", "0.05", "--backing", "file"),
        *("--attr-reads", "20", "--attr-seconds", "0.5"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for row, unit in [
        ("4 KiB random reads, 32 in flight", "ops/s"),
        ("64 KiB sequential reads, 8 in flight", "MB/s"),
        ("4 KiB reads, 1 in flight", "us/op"),
    ]:
        peers = ["vdisk-process", "vdisk-thread", "socketpair", "pipe"]
        if "1 in flight" in row:
            peers += ["vdisk-process-adaptive", "vdisk-thread-adaptive"]
        for peer in peers:
            numbers = rf"\| +[\d,.]+ \| +[\d,.]+ \| {unit} +\| +[\d.]+x \| +[\d.]+x \|"
            assert re.search(rf"^\| {row} +\| {peer} +{numbers}$", out, re.M), (row, peer, out)
    assert "where the time goes" in out
    cpu = re.findall(
        r"^\| 4 KiB reads, 1 in flight +\| \S+ +\| +[\d.]+ \| +[\d.]+ \| +[\d.]+ \|$", out, re.M
    )
    assert len(cpu) == 6, out  # wall, client CPU and server CPU per op of each peer
    assert re.search(r"handle 4 KiB [\d.]+, client 4 KiB [\d.]+", out), out
    assert re.search(r"opening a vdisk, median of 20: process [\d.]+ ms .*thread [\d.]+ ms", out)
    for state in ("idle", "a process vdisk streams", "a thread vdisk streams"):
        assert re.search(rf"^\| {state} +\| +20 \| +\d+ \| +\d+ \|$", out, re.M), out
    assert out.count("(target >=") == 8 and out.count("(target <= 1.5x)") == 2, out
    # every mount, daemon, server and streaming client is gone, and the backing files too
    mounted = re.search(r"vbusfs mounted on (\S+) \(daemon pid (\d+)\)", out)
    assert mounted is not None, out
    assert mounted.group(1) not in vbusfs_mounts() and not os.path.exists(mounted.group(1))
    pids = [mounted.group(2), *re.findall(r"^(?:socketpair|pipe) server: pid (\d+)$", out, re.M)]
    pids += re.findall(r"streaming \w+ vdisk client \(pid (\d+)\)", out)
    assert len(pids) == 5, out
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    files = re.search(r"^removed the backing files: (.+)$", out, re.M)
    # one each for the two stream servers, the four vdisks and the in-process costs
    assert files is not None and len(files.group(1).split()) == 7, out
    assert not any(os.path.exists(path) for path in files.group(1).split())


@pytest.mark.slow
def test_the_fixtures_bench_measures_fresh_and_shared_daemons_and_cleans_up():
    done = _bench(
        "fixtures.py", "--rounds", "1", "--tests", "3", "--fresh-tests", "1", "--pytest-tests", "3"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for label in ("fresh daemon (vbus_fresh_daemon)", "shared, reset"):
        for load in ("none", "one class"):
            row = rf"^\| {re.escape(label)} \| {load} \| [\d,.]+ \| [\d,.]+ \|$"
            assert re.search(row, done.stdout, re.M), done.stdout
        row = rf"^\| {re.escape(label)} \| 3 \| [\d,.]+ \| [\d,.]+ \|$"
        assert re.search(row, done.stdout, re.M), done.stdout
    assert "target <= 50 ms" in done.stdout
    assert "internal errors in the daemons' logs: 0; mounts left: []" in done.stdout
    shared = re.search(r"shared daemon pid (\d+) on (\S+)", done.stdout)
    assert shared is not None, done.stdout
    assert shared.group(2) not in vbusfs_mounts()
    assert not os.path.exists(f"/proc/{shared.group(1)}")


def test_the_workers_bench_measures_both_peers_and_cleans_up():
    done = _bench("workers.py", "--calls", "10", "--rounds", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    cell = r" +[\d.]+ / +[\d.]+"
    for state in ("idle", "streaming, waiting in C", "busy in Python"):
        assert re.search(rf"^{state} +{cell}{cell} +[\d.]+x$", out, re.M), out
    assert re.search(r"busy in Python vs idle: [\d.]+x", out), out
    mounted = re.search(r"vbusfs mounted on (\S+) \(daemon pid (\d+)\)", out)
    assert mounted is not None, out
    assert mounted.group(1) not in vbusfs_mounts() and not os.path.exists(mounted.group(1))
    assert not os.path.exists(f"/proc/{mounted.group(2)}")
