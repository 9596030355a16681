"""`vbusfs enet`: unmodified programs (ping, iperf3) on a bus, in private namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from enet_net import Net, in_ns, ns_run, switched, wait_for

from vbusfs.testing import LiveMount

pytestmark = [pytest.mark.mount, pytest.mark.root]
needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3")


def pair(
    net: Net, mnt: LiveMount, *args: str, mtu: int | None = None, b_args: tuple[str, ...] = ()
) -> tuple[str, str]:
    """Two namespaces, each with `vbusfs enet` on its own bus (`args`, and `b_args` for the
    second), one switch between the buses; addresses 10.14.0.1 and .2. Returns the
    namespaces."""
    switched(mnt, "a", "b", mtu=mtu)
    sides = []
    for n, bus in enumerate(("a", "b"), 1):
        ns = net.netns(bus)
        d = net.start(mnt, bus, ns, *args, *(b_args if bus == "b" else ()))
        assert ns_run(ns, "ip", "addr", "add", f"10.14.0.{n}/24", "dev", d.ifname).returncode == 0
        sides.append(ns)
    return sides[0], sides[1]


def iperf3(net: Net, server_ns: str, client_ns: str, *args: str) -> float:
    """Gbit/s of a 1 s TCP run from client_ns to 10.14.0.2 in server_ns; the server (one
    run, then it exits) is gone on return, so the next call's server can bind its port."""
    server = net.spawn(server_ns, "iperf3", "-s", "-1", "-B", "10.14.0.2")
    for _ in range(50):  # until the server listens (refused: an error, yet status 0)
        out = ns_run(client_ns, "iperf3", "-c", "10.14.0.2", "-t", "1", "-J", *args)
        end = json.loads(out.stdout).get("end", {}) if out.stdout.strip() else {}
        if out.returncode == 0 and "sum_received" in end:
            break
        time.sleep(0.1)
    assert "sum_received" in end, out.stdout[-2000:] + out.stderr
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(10)
    return float(end["sum_received"]["bits_per_second"]) / 1e9


@needs_iperf3
def test_ping_and_iperf3_cross_a_switch_between_two_namespaces(mnt: LiveMount, net: Net):
    a, b = pair(net, mnt)
    assert all("offloads" in d.banner for d in net.drivers), [d.banner for d in net.drivers]
    ping = ns_run(a, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.14.0.2")
    assert "3 received" in ping.stdout, ping.stdout + ping.stderr
    assert iperf3(net, b, a) > 0.05
    stats = mnt.sh("cat sys/vbus/devices/sw/ports").stdout.split()
    assert stats == ["a.0", "b.0"]


@needs_iperf3
def test_bare_frames_without_offloads_carry_ping_and_iperf3(mnt: LiveMount, net: Net):
    a, b = pair(net, mnt, "--no-offloads")
    assert all("bare frames" in d.banner for d in net.drivers)
    ping = ns_run(a, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.14.0.2")
    assert "2 received" in ping.stdout, ping.stdout + ping.stderr
    assert iperf3(net, b, a) > 0.01


@needs_iperf3
def test_offloads_and_bare_frames_on_one_switch_carry_tcp_both_ways(mnt: LiveMount, net: Net):
    # a's kernel hands its TAP large TCP segments; the switch cuts them for b's bare port
    a, b = pair(net, mnt, b_args=("--no-offloads",))
    banners = [d.banner for d in net.drivers]
    assert "offloads" in banners[0] and "bare frames" in banners[1], banners
    ping = ns_run(a, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.14.0.2")
    assert "3 received" in ping.stdout, ping.stdout + ping.stderr
    assert iperf3(net, b, a) > 0.05  # a sends: large segments, cut
    assert iperf3(net, b, a, "-R") > 0.05  # b sends: bare frames, given a zero header


def test_the_tap_takes_the_devices_mtu_and_mac_and_carries_jumbo_frames(mnt: LiveMount, net: Net):
    a, _ = pair(net, mnt, "--no-offloads", mtu=9000)
    link = ns_run(a, "ip", "-o", "link", "show", net.drivers[0].ifname).stdout
    assert "mtu 9000" in link
    mac = mnt.sh("cat sys/vbus/instances/a/devices/0/client_mac").stdout.strip()
    assert f"link/ether {mac}" in link
    big = ("-M", "do", "-s", "8900")  # one 8928-byte IP packet, never fragmented
    ping = ns_run(a, "ping", "-c", "2", "-i", "0.2", "-W", "2", *big, "10.14.0.2")
    assert "2 received" in ping.stdout, ping.stdout + ping.stderr


def test_a_venet_tap_device_reaches_the_host_side_of_its_tap(mnt: LiveMount, net: Net):
    # the daemon runs in a private network namespace of its own: its TAP lives there
    mnt.sh(
        "mkdir config/vbus/instances/t config/vbus/devices/tap && "
        "echo venet-tap > config/vbus/devices/tap/type && "
        "echo 1 > sys/vbus/devices/tap/enabled && "
        "ln -s ../../devices/tap config/vbus/instances/t/",
        check=True,
    )
    host_if = mnt.sh("cat sys/vbus/devices/tap/ifname").stdout.strip()
    host = f"/proc/{mnt.pid}/ns/net"
    for cmd in (["addr", "add", "10.14.1.1/24", "dev", host_if], ["link", "set", host_if, "up"]):
        assert mnt.sh(f"nsenter --net={host} ip {' '.join(cmd)}").returncode == 0
    ns = net.netns("t")
    d = net.start(mnt, "t", ns)
    assert ns_run(ns, "ip", "addr", "add", "10.14.1.2/24", "dev", d.ifname).returncode == 0
    ping = ns_run(ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.14.1.1")
    assert "3 received" in ping.stdout, ping.stdout + ping.stderr


def carrier(ns: str, ifname: str) -> str:
    flags = ns_run(ns, "ip", "-o", "link", "show", ifname).stdout.split()[2]
    return "0" if "NO-CARRIER" in flags else "1" if "LOWER_UP" in flags else "?"


def test_the_carrier_follows_the_devices_link_state(mnt: LiveMount, net: Net):
    mnt.sh(
        "mkdir config/vbus/instances/t config/vbus/devices/tap && "
        "echo venet-tap > config/vbus/devices/tap/type && "
        "ln -s ../../devices/tap config/vbus/instances/t/",
        check=True,
    )
    ns = net.netns("t")
    d = net.start(mnt, "t", ns)
    assert wait_for(lambda: carrier(ns, d.ifname) == "0")  # not enabled: no host side
    mnt.sh("echo 1 > sys/vbus/devices/tap/enabled", check=True)
    assert wait_for(lambda: carrier(ns, d.ifname) == "1")
    mnt.sh("echo 0 > sys/vbus/devices/tap/enabled", check=True)
    assert wait_for(lambda: carrier(ns, d.ifname) == "0")


def test_a_second_driver_on_an_open_interface_is_refused_ebusy(mnt: LiveMount, net: Net):
    switched(mnt, "a")
    ns = net.netns("a")
    net.start(mnt, "a", ns)
    second = net.start(mnt, "a", ns, "--ifname", "other0", wait=False)
    assert second.process.wait(20) == 1
    assert "interface 0 is open by another client" in second.stderr()
    assert "other0" not in ns_run(ns, "ip", "-o", "link").stdout


def test_sigterm_removes_the_tap_and_releases_the_device(mnt: LiveMount, net: Net):
    switched(mnt, "a")
    ns = net.netns("a")
    d = net.start(mnt, "a", ns)
    assert d.end(signal.SIGTERM) == 0
    assert d.ifname not in ns_run(ns, "ip", "-o", "link").stdout
    again = net.start(mnt, "a", ns)  # the device can be opened at once
    assert again.ifname == d.ifname


def test_sigkill_leaves_no_tap_and_the_daemon_releases_the_device(mnt: LiveMount, net: Net):
    switched(mnt, "a")
    ns = net.netns("a")
    d = net.start(mnt, "a", ns)
    assert d.end(signal.SIGKILL) == -signal.SIGKILL
    assert wait_for(lambda: d.ifname not in ns_run(ns, "ip", "-o", "link").stdout)
    net.start(mnt, "a", ns)  # reopened: the daemon released the dead driver's open


BURST = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    s.sendto(b"x" * 1000, ("10.14.0.2", 9))
    if i % 50 == 49:
        time.sleep(0.002)  # A's own TAP queue is not the one measured
"""


def rx_packets(ns: str, ifname: str) -> int:
    out = ns_run(ns, "ip", "-s", "-j", "link", "show", ifname).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def test_a_bare_driver_holds_a_burst_that_arrives_while_it_waits_for_a_cpu(
    mnt: LiveMount, net: Net
):
    """The switch drops a frame for a port with no receive buffer posted (§7.4): a bare
    driver's default ring (4096 slots) holds a burst of 2000 frames that arrive while it
    is stopped, which 256 slots would not."""
    a, b = pair(net, mnt, "--no-offloads")
    ping = ns_run(a, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.14.0.2")  # ARP too
    assert "2 received" in ping.stdout, ping.stdout + ping.stderr
    driver_b = net.drivers[-1]
    before = rx_packets(b, driver_b.ifname)
    os.kill(driver_b.pid, signal.SIGSTOP)
    try:
        sent = ns_run(a, sys.executable, "-c", BURST, "2000")
        assert sent.returncode == 0, sent.stderr
        time.sleep(0.5)  # A's driver and the switch forward it all meanwhile
    finally:
        os.kill(driver_b.pid, signal.SIGCONT)
    assert wait_for(lambda: rx_packets(b, driver_b.ifname) - before >= 2000), (
        rx_packets(b, driver_b.ifname) - before
    )


@pytest.mark.parametrize(
    ("args", "bus", "code", "says"),
    [
        (("--id", "x"), "a", 2, "is not a number"),
        (("--id", "-1"), "a", 2, "is not a number"),
        (("--spin-us", "1.5"), "a", 2, "is not a number"),
        (("--id", "7"), "a", 1, "the bus has no interface 7"),
        (("--slots", "0"), "a", 1, "slots is 1 to 1023 for 65560-byte slots"),
        (("--slots", "1024"), "a", 1, "slots is 1 to 1023 for 65560-byte slots"),
        (("--no-offloads", "--slots", "32769"), "a", 1, "slots is 1 to 32768 for 2048-byte"),
        ((), None, 1, "this process is on no bus"),
        (("--mount", "/nonexistent"), "a", 1, "is not a live vbusfs mount"),
        (("--ifname", "a-name-far-too-long"), "a", 1, "is not an interface name"),
        (
            ("--ifname", "lo"),
            "a",
            1,
            "cannot create lo: an interface of that name exists and is no TAP",
        ),
    ],
)
def test_bad_arguments_get_a_clear_error_and_change_nothing(
    mnt: LiveMount, net: Net, args: tuple[str, ...], bus: str | None, code: int, says: str
):
    switched(mnt, "a")
    ns = net.netns("a")
    d = net.start(mnt, bus or "", ns, *args, wait=False)
    assert d.process.wait(20) == code
    err = d.stderr()
    assert says in err, err
    assert "Traceback" not in err
    assert len(ns_run(ns, "ip", "-o", "link").stdout.splitlines()) == 1  # lo only
    assert mnt.sh("cat sys/vbus/devices/sw/ports").stdout.split() == ["a.0"]
    net.start(mnt, "a", ns)  # nothing was left open


EMBEDDED = """
import sys, threading
from vbusfs.enet import Enet
with open(sys.argv[1] + "/proc/self/vbus", "w") as f:
    f.write("b")
with Enet(sys.argv[1], ifname="emb%d", spin_us=0) as nic:
    print(nic.ifname, nic.sg, flush=True)
    threading.Thread(target=lambda: (sys.stdin.readline(), nic.stop())).start()
    nic.run()
    c = nic.counts()
    print(c.to_device, c.to_host, c.host_dropped, flush=True)
"""


def test_the_python_api_drives_an_interface_a_program_embeds(mnt: LiveMount, net: Net):
    switched(mnt, "a", "b")
    a, b = net.netns("a"), net.netns("b")
    d = net.start(mnt, "a", a)
    embedded = subprocess.Popen(
        [*in_ns(b), sys.executable, "-c", EMBEDDED, mnt.path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert embedded.stdout is not None and embedded.stdin is not None
        ifname, sg = embedded.stdout.readline().split()
        assert ifname == "emb0" and sg == "True"
        ns_run(a, "ip", "addr", "add", "10.14.0.1/24", "dev", d.ifname)
        ns_run(b, "ip", "addr", "add", "10.14.0.2/24", "dev", ifname)
        ping = ns_run(a, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.14.0.2")
        assert "3 received" in ping.stdout, ping.stdout + ping.stderr
        embedded.stdin.write("stop\n")
        embedded.stdin.flush()
        out, err = embedded.communicate(timeout=20)
        assert embedded.returncode == 0, err
        to_device, to_host, dropped = map(int, out.split())
        assert to_device >= 3 and to_host >= 3 and dropped == 0  # the replies, the requests
        assert "emb0" not in ns_run(b, "ip", "-o", "link").stdout
    finally:
        if embedded.poll() is None:
            embedded.kill()
        embedded.communicate()
