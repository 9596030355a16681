"""The C switch behind a live mount: three member processes on three buses, one venet-switch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from vbusfs import client

pytestmark = pytest.mark.mount

BROADCAST = b"\xff" * 6

ECHO = """
    import sys
    from vbusfs import client
    m, bus_name = sys.argv[1], sys.argv[2]
    open(f"{m}/proc/self/vbus", "w").write(bus_name)
    with client.connect(m) as bus, bus.open_venet(0) as nic:
        me = nic.mac
        print(me.hex(), flush=True)
        while True:
            frame = nic.recv(timeout=10)
            if frame[14:18] == b"stop":
                break
            # answer every frame to its sender, from our own address, naming our bus
            nic.send(frame[6:12] + me + frame[12:14] + bus_name.encode() + b":" + frame[14:])
"""


def eth(dst: bytes, src: bytes, payload: bytes) -> bytes:
    return dst + src + b"\x88\xb5" + payload.ljust(46, b"\0")


@contextmanager
def echo_on(mnt, bus_name: str) -> Iterator[bytes]:
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ECHO), mnt.path, bus_name],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            yield bytes.fromhex(proc.stdout.readline().strip())
        finally:
            try:
                proc.wait(10)
            finally:
                proc.kill()


def test_switch_with_three_clients_floods_then_unicasts(mnt) -> None:
    mnt.sh(
        "mkdir config/vbus/devices/S && echo venet-switch > config/vbus/devices/S/type && "
        "for b in B C D; do mkdir config/vbus/instances/$b && "
        "ln -s ../../devices/S config/vbus/instances/$b/; done",
        check=True,
    )
    with ExitStack() as stack:
        peer_c = stack.enter_context(echo_on(mnt, "C"))
        peer_d = stack.enter_context(echo_on(mnt, "D"))
        with open(mnt.join("proc/self/vbus"), "w") as f:
            f.write("B")
        with client.connect(mnt.path) as bus, bus.open_venet(0) as nic:
            me = nic.mac
            nic.send(eth(BROADCAST, me, b"hello all"))
            answers = {nic.recv(timeout=5)[6:12] for _ in range(2)}
            assert answers == {peer_c, peer_d}  # flooded to both other ports
            for i in range(20):  # learned: each unicast reaches one port only
                peer, name = (peer_c, b"C") if i % 2 else (peer_d, b"D")
                nic.send(eth(peer, me, b"n%d" % i))
                answer = nic.recv(timeout=5)
                assert answer[6:12] == peer and answer[14:].startswith(name + b":n%d" % i)
            with pytest.raises(TimeoutError):
                nic.recv(timeout=0.2)  # no extra copy went anywhere, none came back
            assert nic.stats()["tx_frames"] == 21
            for peer in (peer_c, peer_d):
                nic.send(eth(peer, me, b"stop"))
            # closing a device drops what is still in its transmit ring: let both go out
            deadline = time.monotonic() + 5
            while nic.stats()["tx_frames"] < 23:
                assert time.monotonic() < deadline
                time.sleep(0.01)
