"""venet-switch and venet-tap carrying real frames between real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from vbusfs import client
from vbusfs.testing import LiveMount, netns_available, serve_host

pytestmark = pytest.mark.mount

BROADCAST = b"\xff" * 6
ETH_TEST = b"\x88\xb5"

ECHO_ON_C = """
    import sys
    from vbusfs import client
    m = sys.argv[1]
    open(f"{m}/proc/self/vbus", "w").write("C")
    with client.connect(m) as bus, bus.open_venet(0) as nic:
        me = nic.mac
        print(me.hex(), flush=True)
        while True:
            frame = nic.recv(timeout=10)
            if frame[12:14] == b"\\x88\\xb5" and frame[14:18] == b"stop":
                break
            # answer every frame to its sender, from our own address
            nic.send(frame[6:12] + me + frame[12:14] + b"re:" + frame[14:])
"""


def eth(dst: bytes, src: bytes, payload: bytes) -> bytes:
    return dst + src + ETH_TEST + payload.ljust(46, b"\0")


def test_switch_between_two_buses_learns_and_never_echoes(mnt):
    mnt.sh(
        "mkdir config/vbus/instances/B config/vbus/instances/C config/vbus/devices/S && "
        "echo venet-switch > config/vbus/devices/S/type && "
        "ln -s ../../devices/S config/vbus/instances/B/ && "
        "ln -s ../../devices/S config/vbus/instances/C/",
        check=True,
    )
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ECHO_ON_C), mnt.path],
        stdout=subprocess.PIPE,
        text=True,
    ) as echo:
        assert echo.stdout is not None
        peer = bytes.fromhex(echo.stdout.readline().strip())
        with open(mnt.join("proc/self/vbus"), "w") as f:
            f.write("B")
        with client.connect(mnt.path) as bus, bus.open_venet(0) as nic:
            me = nic.mac
            nic.send(eth(BROADCAST, me, b"hello all"))
            answer = nic.recv(timeout=5)
            assert answer[:6] == me and answer[6:12] == peer  # flooded, then answered
            assert answer[14:26] == b"re:hello all"
            for i in range(50):  # the peer is learned now: unicast both ways
                nic.send(eth(peer, me, b"n%d" % i))
                assert nic.recv(timeout=5)[14:].startswith(b"re:n%d" % i)
            with pytest.raises(TimeoutError):
                nic.recv(timeout=0.2)  # nothing ever comes back to its sender
            assert mnt.sh("cat sys/vbus/devices/S/ports").stdout == "B.0 C.0\n"
            nic.send(eth(peer, me, b"stop"))
            # closing a device drops what is still in its transmit ring: wait for the peer
            assert echo.wait(10) == 0


@pytest.mark.root
@pytest.mark.skipif(not netns_available(), reason="needs unshare and root")
def test_ping_from_the_host_side_reaches_the_client(tmp_path_factory):
    mount = LiveMount(str(tmp_path_factory.mktemp("m")), private_netns=True).start()
    stop = threading.Event()
    try:
        mount.sh(
            "mkdir config/vbus/instances/B config/vbus/devices/T && "
            "echo venet-tap > config/vbus/devices/T/type && "
            "echo 1 > sys/vbus/devices/T/enabled && "
            "ln -s ../../devices/T config/vbus/instances/B/ && echo B > proc/self/vbus",
            check=True,
        )
        ifname = mount.sh("cat sys/vbus/devices/T/ifname").stdout.strip()
        inside = ["nsenter", "-t", str(mount.pid), "-n"]
        for command in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", "10.213.0.1/24", "dev", ifname],
            ["ip", "link", "set", ifname, "up"],
        ):
            subprocess.run([*inside, *command], check=True, capture_output=True)
        with open(mount.join("proc/self/vbus"), "w") as f:
            f.write("B")
        with client.connect(mount.path) as bus, bus.open_venet(0) as nic:
            host = threading.Thread(target=serve_host, args=(nic, bytes([10, 213, 0, 2]), stop))
            host.start()
            try:
                ping = subprocess.run(
                    [*inside, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.213.0.2"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            finally:
                stop.set()
                host.join()
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert "3 received" in ping.stdout
            assert nic.stats()["rx_frames"] >= 4  # an ARP request and three echo requests
    finally:
        stop.set()
        log = mount.stop()
    assert "Traceback" not in log, log


CORRUPT_RX_ON_D = """
    import mmap, sys
    from vbusfs import client
    m = sys.argv[1]
    open(f"{m}/proc/self/vbus", "w").write("D")
    with client.connect(m) as bus, bus.open_venet(0) as nic:
        ring = mmap.mmap(nic.rx.fds.ring, 0)
        for at in range(56, len(ring) - 31, 32):  # every posted buffer points far away
            ring[at + 8 : at + 16] = (1 << 60).to_bytes(8, "little")
        print("broken", flush=True)
        sys.stdin.read()
"""


def test_a_switch_client_that_breaks_its_receive_ring_is_dropped_alone(mnt):
    mnt.sh(
        "mkdir config/vbus/devices/S && echo venet-switch > config/vbus/devices/S/type && "
        "for b in B C D; do mkdir config/vbus/instances/$b && "
        "ln -s ../../devices/S config/vbus/instances/$b/; done",
        check=True,
    )
    with (
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(ECHO_ON_C), mnt.path],
            stdout=subprocess.PIPE,
            text=True,
        ) as echo,
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CORRUPT_RX_ON_D), mnt.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as vandal,
    ):
        assert echo.stdout is not None and vandal.stdout is not None and vandal.stdin
        peer = bytes.fromhex(echo.stdout.readline().strip())
        assert vandal.stdout.readline().strip() == "broken"
        with open(mnt.join("proc/self/vbus"), "w") as f:
            f.write("B")
        with client.connect(mnt.path) as bus, bus.open_venet(0) as nic:
            me = nic.mac
            nic.send(eth(BROADCAST, me, b"to all"))  # floods to C and to the broken D
            assert nic.recv(timeout=5)[14:20] == b"re:to "
            deadline = time.monotonic() + 5
            while "broke queue protocol" not in mnt.log:
                assert time.monotonic() < deadline, "the broken receive ring went unnoticed"
                time.sleep(0.05)
            for i in range(20):  # the sender and the healthy peer go on as before
                nic.send(eth(peer, me, b"m%d" % i))
                assert nic.recv(timeout=5)[14:].startswith(b"re:m%d" % i)
            assert nic.stats()["oversize"] == 0
            nic.send(eth(peer, me, b"stop"))
            assert echo.wait(10) == 0
        vandal.stdin.close()
        vandal.wait(10)
