"""venet-tap's `enabled` makes a real TAP interface, in the daemon's own netns."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time

import pytest

from vbusfs import client
from vbusfs.connector import venet as abi
from vbusfs.testing import LiveMount, checksum, netns_available

pytestmark = [
    pytest.mark.mount,
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs unshare and root"),
]


@pytest.fixture
def netns_mount(tmp_path_factory):
    mount = LiveMount(str(tmp_path_factory.mktemp("m")), private_netns=True).start()
    try:
        yield mount
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log


def links_in(pid: int | None) -> str:
    prefix = ["nsenter", "-t", str(pid), "-n"] if pid else []
    done = subprocess.run([*prefix, "ip", "-o", "link", "show"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_enabled_creates_and_removes_the_tap_interface(netns_mount):
    m = netns_mount
    m.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type", check=True)
    m.sh("echo 1 > sys/vbus/devices/D/enabled", check=True)
    ifname = m.sh("cat sys/vbus/devices/D/ifname").stdout.strip()
    assert ifname.startswith("vbus")
    host_mac = m.sh("cat sys/vbus/devices/D/host_mac").stdout.strip()
    inside = links_in(m.pid)
    line = next(line for line in inside.splitlines() if f": {ifname}:" in line)
    assert f"link/ether {host_mac}" in line
    assert f": {ifname}:" not in links_in(None)  # never in the machine's own namespace
    m.sh("echo 1 > sys/vbus/devices/D/enabled", check=True)  # same value: no change
    assert m.sh("cat sys/vbus/devices/D/ifname").stdout.strip() == ifname
    m.sh("echo 0 > sys/vbus/devices/D/enabled", check=True)
    assert m.sh("cat sys/vbus/devices/D/ifname").stdout == "<disabled>\n"
    assert f": {ifname}:" not in links_in(m.pid)


def test_removing_an_enabled_device_removes_its_tap(netns_mount):
    m = netns_mount
    m.sh(
        "mkdir config/vbus/devices/A config/vbus/devices/B && "
        "echo venet-tap > config/vbus/devices/A/type && "
        "echo venet-tap > config/vbus/devices/B/type && "
        "echo 1 > sys/vbus/devices/A/enabled && echo 1 > sys/vbus/devices/B/enabled",
        check=True,
    )
    names = {m.sh(f"cat sys/vbus/devices/{d}/ifname").stdout.strip() for d in "AB"}
    assert len(names) == 2
    m.sh("rmdir config/vbus/devices/A", check=True)
    left = links_in(m.pid)
    assert sum(f": {n}:" in left for n in names) == 1


def test_sigterm_with_an_enabled_tap_exits_cleanly(tmp_path_factory):
    mount = LiveMount(str(tmp_path_factory.mktemp("m")), private_netns=True).start()
    mount.sh(
        "mkdir config/vbus/devices/A && echo venet-tap > config/vbus/devices/A/type && "
        "echo 1 > sys/vbus/devices/A/enabled",
        check=True,
    )
    assert mount.process is not None
    mount.process.terminate()
    assert mount.process.wait(10) == 0
    log = mount.stop()
    assert "Traceback" not in log and "unmounted" in log


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_enabling_without_cap_net_admin_is_refused_and_the_log_says_why(tmp_path_factory):
    # The daemon keeps CAP_SYS_ADMIN (it must mount) but loses CAP_NET_ADMIN for good.
    no_net_admin = ("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--")
    mount = LiveMount(
        str(tmp_path_factory.mktemp("m")), private_netns=True, prefix=no_net_admin, debug=False
    ).start()
    try:
        mount.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type")
        done = mount.sh("echo 1 > sys/vbus/devices/D/enabled")
        assert done.returncode != 0
        assert "Operation not permitted" in done.stderr  # EPERM, what TUNSETIFF answered
        assert mount.sh("cat sys/vbus/devices/D/enabled").stdout == "0\n"  # nothing changed
        assert mount.sh("cat sys/vbus/devices/D/ifname").stdout == "<disabled>\n"
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log
    reasons = [line for line in log.splitlines() if "CAP_NET_ADMIN" in line]
    assert len(reasons) == 1, log  # one line, at warning level (the daemon ran without --debug)
    assert "WARNING device D: cannot enable: creating a TAP interface" in reasons[0]
    assert "needs CAP_NET_ADMIN in the daemon's network namespace" in reasons[0]
    assert "run the daemon as root or with that capability" in reasons[0]


# ---- offloads: SG granted, the TAP carries virtio-net headers and large segments -------

HOST_IP, CLIENT_IP = bytes([10, 213, 0, 1]), bytes([10, 213, 0, 2])
FAR_IP = bytes([10, 214, 0, 2])  # behind a plain TAP (no offloads) the test holds
FAR_MAC = bytes([2, 0, 0, 0, 0, 0x99])

# Runs in the daemon's netns: a plain TAP (no IFF_VNET_HDR, so no TSO: the kernel must
# cut anything it forwards there into segments that fit its mtu); prints each TCP frame's
# length as it reads them, until the 20,000 bytes the client sent have come out.
PROBE = """
import fcntl, os, select, struct, subprocess, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", b"probe0", 0x0002 | 0x1000))
for cmd in ("ip addr add 10.214.0.1/24 dev probe0", "ip link set probe0 up",
            "ip neigh add 10.214.0.2 lladdr 02:00:00:00:00:99 dev probe0"):
    subprocess.run(cmd.split(), check=True)
print("ready", flush=True)
payload = 0
while payload < 20000 and select.select([fd], [], [], 10)[0]:
    frame = os.read(fd, 70000)
    if frame[12:14] == b"\\x08\\x00" and frame[23] == 6 and frame[30:34] == bytes([10, 214, 0, 2]):
        ihl, doff = (frame[14] & 15) * 4, (frame[14 + (frame[14] & 15) * 4 + 12] >> 4) * 4
        payload += len(frame) - 14 - ihl - doff
        print(len(frame), flush=True)
print("done", payload, flush=True)
"""


def _ipv4(src: bytes, dst: bytes, body: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 7, 0x4000, 64, 6, 0, src, dst)
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + body


def _tcp(
    src: bytes,
    dst: bytes,
    ports: tuple[int, int],
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    options: bytes = b"",
    partial: bool = False,
) -> bytes:
    """A TCP segment; `partial`: its checksum field holds only the pseudo-header sum."""
    doff = (20 + len(options)) // 4
    head = struct.pack("!HHIIBBHHH", *ports, seq, ack, doff << 4, flags, 65535, 0, 0) + options
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(head) + len(payload))
    csum = (~checksum(pseudo) & 0xFFFF) if partial else checksum(pseudo + head + payload)
    return head[:16] + struct.pack("!H", csum) + head[18:] + payload


def _offload_mount(m: LiveMount) -> tuple[str, bytes]:
    m.sh(
        "mkdir config/vbus/instances/B config/vbus/devices/T && "
        "echo venet-tap > config/vbus/devices/T/type && echo 1 > sys/vbus/devices/T/enabled && "
        "ln -s ../../devices/T config/vbus/instances/B/",
        check=True,
    )
    ifname = m.sh("cat sys/vbus/devices/T/ifname").stdout.strip()
    host_mac = bytes.fromhex(
        m.sh("cat sys/vbus/devices/T/host_mac").stdout.strip().replace(":", "")
    )
    inside = ["nsenter", "-t", str(m.pid), "-n"]
    for command in (
        "ip link set lo up",
        f"ip addr add 10.213.0.1/24 dev {ifname}",
        f"ip link set {ifname} up",
        "sysctl -qw net.ipv4.ip_forward=1",
    ):
        subprocess.run([*inside, *command.split()], check=True, capture_output=True)
    with open(m.join("proc/self/vbus"), "w") as f:
        f.write("B")
    return ifname, host_mac


SG_ALL = {abi.CAP_GROUP_SG: abi.CAP_SG | abi.CAP_TSO4 | abi.CAP_TSO6 | abi.CAP_ECN}


def test_a_large_segment_from_the_client_leaves_the_host_side_as_mtu_sized_segments(
    netns_mount,
):
    m = netns_mount
    _, host_mac = _offload_mount(m)
    inside = ["nsenter", "-t", str(m.pid), "-n"]
    with subprocess.Popen(
        [*inside, sys.executable, "-c", PROBE], stdout=subprocess.PIPE, text=True
    ) as probe:
        try:
            assert probe.stdout is not None and probe.stdout.readline() == "ready\n"
            with client.connect(m.path) as bus, bus.open_venet(0, capabilities=SG_ALL) as nic:
                assert nic.sg and nic.granted == SG_ALL
                payload = bytes(range(256)) * 78 + bytes(32)  # 20,000 bytes
                segment = _tcp(CLIENT_IP, FAR_IP, (4000, 5000), 1, 1, 0x18, payload, partial=True)
                header = abi.vnet_header(
                    abi.VNET_HDR_F_NEEDS_CSUM, abi.VNET_GSO_TCPV4, 54, 1400, 34, 16
                )
                frame = host_mac + nic.mac + b"\x08\x00" + _ipv4(CLIENT_IP, FAR_IP, segment)
                nic.send(header + frame)  # one frame of 20,064 bytes on the ring
                lines = probe.stdout.read().split()
                stats = nic.stats()
        finally:
            probe.kill()
    assert lines[-2:] == ["done", "20000"], lines
    sizes = [int(n) for n in lines[:-2]]
    assert len(sizes) == 15 and max(sizes) <= 1514, sizes  # 1,400 bytes of payload each
    assert stats["tx_frames"] == 1 and stats["oversize"] == stats["dropped"] == 0


SENDER = """
import socket, sys
s = socket.create_connection(("10.213.0.2", 5001), timeout=10)
s.sendall(bytes(200000))
"""


def test_host_tcp_hands_the_client_large_segments_with_their_header(netns_mount):
    m = netns_mount
    ifname, host_mac = _offload_mount(m)
    inside = ["nsenter", "-t", str(m.pid), "-n"]
    with client.connect(m.path) as bus, bus.open_venet(0, capabilities=SG_ALL) as nic:
        client_mac = ":".join(f"{b:02x}" for b in nic.mac)
        neigh = f"ip neigh add 10.213.0.2 lladdr {client_mac} dev {ifname}".split()
        subprocess.run([*inside, *neigh], check=True, capture_output=True)
        with subprocess.Popen(
            [*inside, sys.executable, "-c", SENDER], stderr=subprocess.DEVNULL
        ) as sender:
            try:
                largest = _accept_and_watch(nic, host_mac)
            finally:
                sender.kill()
    flags, gso_type, _, gso_size, _, _ = struct.unpack(abi.VNET_HDR_FORMAT, largest[:10])
    assert len(largest) > abi.VNET_HDR_LEN + abi.MAX_FRAME  # one frame past the mtu
    assert gso_type == abi.VNET_GSO_TCPV4 and 0 < gso_size <= 1460
    assert flags & abi.VNET_HDR_F_NEEDS_CSUM


def _accept_and_watch(nic: client.Venet, host_mac: bytes) -> bytes:
    """Answer the host's SYN as a TCP peer would, then return the first frame that is
    larger than an Ethernet frame."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = nic.recv(timeout=max(0.01, deadline - time.monotonic()))
        frame = got[abi.VNET_HDR_LEN :]
        if len(frame) > abi.MAX_FRAME:
            return got
        if frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        tcp = frame[34:]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        if tcp[13] & 0x12 == 0x02:  # a SYN: answer SYN-ACK, window 65535, MSS 1460
            synack = _tcp(
                CLIENT_IP, HOST_IP, (dport, sport), 1000, seq + 1, 0x12, options=b"\x02\x04\x05\xb4"
            )
            reply = host_mac + nic.mac + b"\x08\x00" + _ipv4(CLIENT_IP, HOST_IP, synack)
            nic.send(abi.vnet_header() + reply)
    raise AssertionError("no large segment came from the host")
