"""The venet protocol as the original defined it (behaviour §7.4), for all three classes.

Every function in every state (no queues, one queue, both queues, link up, link down
again, capabilities negotiated), with wrong lengths; each refusal must change
nothing (checked by what LINKDOWN says afterwards). Then the data-path rules with
real rings: FLUSHRX with posted buffers, mtu bounds, txmitigation's completion
signals, burstthresh's polling (the loopback's and the switch's threads), linkstate events,
and a large segment with SG.
"""

from __future__ import annotations

import errno
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from vbusfs import client
from vbusfs.connector import venet as abi
from vbusfs.ioq import Ioq, IoqEmpty
from vbusfs.testing import (
    LiveMount,
    checksum,
    netns_available,
    offload_tcp_segment,
    offload_udp_frame,
    tso_header,
)

pytestmark = pytest.mark.mount

# interface ids on bus B (the order they are linked in)
CLASSES = {"venet-loopback": ("L", 0), "venet-tap": ("T", 1), "venet-switch": ("S", 2)}
ME, PEER = bytes([2, 0, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 0, 2])


def frame(size: int = 60, payload: bytes = b"") -> bytes:
    return (PEER + ME + b"\x88\xb5" + payload).ljust(size, b"\0")


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMount]:
    """One mount for the module: bus B holds a loopback, a tap and a switch; this process
    is its member."""
    mount = LiveMount(
        str(tmp_path_factory.mktemp("venet")), private_netns=netns_available()
    ).start()
    try:
        mount.sh(
            "mkdir config/vbus/instances/B && "
            + " && ".join(
                f"mkdir config/vbus/devices/{d} && echo {c} > config/vbus/devices/{d}/type && "
                f"ln -s ../../devices/{d} config/vbus/instances/B/"
                for c, (d, _) in CLASSES.items()
            )
            + " && echo 1 > sys/vbus/devices/L/enabled",
            check=True,
        )
        with open(mount.join("proc/self/vbus"), "w") as f:
            f.write("B")
        yield mount
    finally:
        with open(mount.join("proc/self/vbus"), "w") as f:
            f.write("0")
        log = mount.stop()
    assert "Traceback" not in log, log


@pytest.fixture
def connected(bus: LiveMount) -> Iterator[client.Client]:
    with client.connect(bus.path) as c:
        yield c


# ---- every function, every state ---------------------------------------------------


class Opened:
    """One raw open of a venet interface, with rings made and attached on request."""

    def __init__(self, c: client.Client, interface_id: int) -> None:
        self.iface = c.open(interface_id, abi.VERSION)
        self.rings: list[Ioq] = []

    def attach(self, index: int) -> None:
        ring = Ioq.create(8, 2048, direction="to_north" if index == 0 else "to_south")
        self.rings.append(ring)
        self.iface.attach_queue(index, ring)

    def call(self, function: int, data: bytes = b"") -> bytes:
        return self.iface.call(function, data)

    def close(self) -> None:
        self.iface.close()
        for ring in self.rings:
            ring.close()


def _negcap(o: Opened) -> None:
    o.call(abi.NEGCAP, abi.negcap_request(abi.CAP_GROUP_SG, abi.CAP_SG))


# state -> the steps that reach it from a fresh open, and whether the link is up there
STATES: dict[str, tuple[list[Callable[[Opened], object]], bool]] = {
    "fresh": ([], False),
    "rx only": ([lambda o: o.attach(0)], False),
    "tx only": ([lambda o: o.attach(1)], False),
    "queues": ([lambda o: o.attach(0), lambda o: o.attach(1)], False),
    "negotiated": ([lambda o: o.attach(0), lambda o: o.attach(1), _negcap], False),
    "up": ([lambda o: o.attach(0), lambda o: o.attach(1), lambda o: o.call(abi.LINKUP)], True),
    "down again": (
        [
            lambda o: o.attach(0),
            lambda o: o.attach(1),
            lambda o: o.call(abi.LINKUP),
            lambda o: o.call(abi.LINKDOWN),
        ],
        False,
    ),
    "up after negcap": (
        [lambda o: o.attach(0), lambda o: o.attach(1), _negcap, lambda o: o.call(abi.LINKUP)],
        True,
    ),
}

NEG8 = abi.negcap_request(abi.CAP_GROUP_SG, 0x3F)
# (function, data) -> {state: errno, or None for success}; a state not named: success
EINVAL, EEXIST, ENOENT = errno.EINVAL, errno.EEXIST, errno.ENOENT
DOWN = ("fresh", "rx only", "tx only", "queues", "negotiated", "down again")
NO_QUEUES = ("fresh", "rx only", "tx only")
UP = ("up", "up after negcap")
CALLS: list[tuple[str, int, bytes, dict[str, int]]] = [
    ("LINKUP", abi.LINKUP, b"", {**dict.fromkeys(NO_QUEUES, EINVAL), **dict.fromkeys(UP, EEXIST)}),
    ("LINKDOWN", abi.LINKDOWN, b"", dict.fromkeys(DOWN, ENOENT)),
    ("MACQUERY", abi.MACQUERY, b"", {}),
    ("NEGCAP", abi.NEGCAP, NEG8, dict.fromkeys(UP, EINVAL)),
    ("NEGCAP 4 bytes", abi.NEGCAP, NEG8[:4], dict.fromkeys(STATES, EINVAL)),
    ("NEGCAP 9 bytes", abi.NEGCAP, NEG8 + b"\0", dict.fromkeys(STATES, EINVAL)),
    ("NEGCAP empty", abi.NEGCAP, b"", dict.fromkeys(STATES, EINVAL)),
    ("FLUSHRX", abi.FLUSHRX, b"", dict.fromkeys(DOWN, EINVAL)),
    ("PMTDQUERY", 5, b"", dict.fromkeys(STATES, EINVAL)),
    ("EVQQUERY", 6, bytes(32), dict.fromkeys(STATES, EINVAL)),
    ("L4ROQUERY", 7, bytes(32), dict.fromkeys(STATES, EINVAL)),
    ("function 99", 99, b"", dict.fromkeys(STATES, EINVAL)),
    ("function -1", -1, b"", dict.fromkeys(STATES, EINVAL)),
]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_function_in_every_state_answers_the_original_errno(connected, cls):
    interface_id = CLASSES[cls][1]
    checked = 0
    for state, (steps, up) in STATES.items():
        for name, function, data, refusals in CALLS:
            o = Opened(connected, interface_id)
            try:
                for step in steps:
                    step(o)
                want, link = refusals.get(state), up
                where = f"{cls} {state}: {name}"
                if want is None:
                    reply = o.call(function, data)
                    if function == abi.MACQUERY:
                        assert len(reply) == 6, where
                    if function == abi.NEGCAP:
                        assert abi.negcap_reply(reply) == (abi.CAP_GROUP_SG, 0x0F), where
                    if function == abi.LINKUP:
                        link = True
                    if function == abi.LINKDOWN:
                        link = False
                else:
                    with pytest.raises(client.ConnectorError) as info:
                        o.call(function, data)
                    assert info.value.errno == want, where
                # a refusal changed nothing: the link is where it was (LINKDOWN says)
                if link:
                    assert o.call(abi.LINKDOWN) == b"", where
                else:
                    with pytest.raises(client.ConnectorError) as info:
                        o.call(abi.LINKDOWN)
                    assert info.value.errno == ENOENT, where
                checked += 1
            finally:
                o.close()
    assert checked == len(STATES) * len(CALLS)


# (group, asked) -> granted: the intersection with what vbusfs supports
GRANTS = [
    (abi.CAP_GROUP_SG, 0x3F, abi.CAP_SG | abi.CAP_TSO4 | abi.CAP_TSO6 | abi.CAP_ECN),
    (abi.CAP_GROUP_SG, abi.CAP_SG | abi.CAP_TSO4, abi.CAP_SG | abi.CAP_TSO4),
    (abi.CAP_GROUP_SG, abi.CAP_UFO | abi.CAP_PMTD, 0),
    (abi.CAP_GROUP_SG, 0, 0),
    (abi.CAP_GROUP_EVENTQ, abi.CAP_EVQ_LINKSTATE | abi.CAP_EVQ_TXC, abi.CAP_EVQ_LINKSTATE),
    (abi.CAP_GROUP_EVENTQ, abi.CAP_EVQ_TXC, 0),
    (abi.CAP_GROUP_L4RO, 0xFFFFFFFF, 0),
    (3, 0xFFFFFFFF, 0),  # an unknown group grants nothing, and is no error
    (0xFFFFFFFF, 1, 0),
]


@pytest.mark.parametrize("cls", CLASSES)
def test_negcap_grants_the_intersection_per_group(connected, cls):
    o = Opened(connected, CLASSES[cls][1])
    try:
        for gid, asked, granted in GRANTS:
            reply = o.call(abi.NEGCAP, abi.negcap_request(gid, asked))
            assert len(reply) == 8 and abi.negcap_reply(reply) == (gid, granted), (gid, asked)
    finally:
        o.close()


# ---- the data path --------------------------------------------------------------------


def test_flushrx_hands_every_posted_buffer_back_empty(connected):
    o = Opened(connected, CLASSES["venet-loopback"][1])
    try:
        o.attach(0)
        o.attach(1)
        o.call(abi.LINKUP)
        rx, tx = o.rings
        assert o.call(abi.FLUSHRX) == b""
        flushed = rx.receive_batch_nowait(64)  # the device answered after flushing
        assert flushed == [b""] * 8  # all 8 posted buffers, length 0
        with pytest.raises(IoqEmpty):
            rx.receive_nowait()
        assert o.iface.stats()["flushed"] == 8
        tx.send(frame(payload=b"after"), timeout=5)  # the reposted buffers take frames again
        assert rx.receive(timeout=5) == frame(payload=b"after")
    finally:
        o.close()


@pytest.mark.parametrize("face", ["sync", "trio"])
def test_the_client_library_flushes_reposts_and_skips_empty_buffers(bus, connected, face):
    if face == "trio":
        import trio

        caps = {abi.CAP_GROUP_SG: abi.CAP_SG | abi.CAP_UFO}

        async def main() -> tuple[int, bytes]:
            async with (
                await client.connect_async(bus.path) as c,
                await c.open_venet(0, slots=16, capabilities=caps) as nic,
            ):
                assert nic.granted == {abi.CAP_GROUP_SG: abi.CAP_SG} and nic.sg
                assert nic.rx.slot_size >= abi.MAX_SG_MESSAGE
                empty = await nic.flush_rx()
                await nic.send(abi.vnet_header() + frame(payload=b"trio"))
                return empty, await nic.recv()

        header = abi.vnet_header()
        assert trio.run(main) == (16, header + frame(payload=b"trio"))
        return
    with connected.open_venet(0, slots=16) as nic:
        assert nic.flush_rx() == 16
        nic.send(frame(payload=b"one"))
        assert nic.recv(timeout=5) == frame(payload=b"one")
        nic.send(frame(payload=b"two"))
        deadline = time.monotonic() + 5
        while nic.stats()["rx_frames"] < 2:  # until the device has put it in a buffer
            assert time.monotonic() < deadline
        assert nic.flush_rx() == 15  # "two" sits in one buffer: kept, the rest flushed
        assert nic.recv(timeout=5) == frame(payload=b"two")


@pytest.mark.parametrize("cls", CLASSES)
def test_mtu_bounds_and_busy_while_open(bus, connected, cls):
    device, interface_id = CLASSES[cls]
    mtu = f"sys/vbus/devices/{device}/mtu"
    assert bus.sh(f"cat {mtu}").stdout == "1500\n"
    for bad in ("67", "65536", "-1", "x", "1500 1", ""):
        assert bus.sh(f"echo '{bad}' > {mtu}").returncode != 0, bad
        assert bus.sh(f"cat {mtu}").stdout == "1500\n"
    for good in ("68", "65535", "9000", "1500"):
        bus.sh(f"echo {good} > {mtu}", check=True)
        assert bus.sh(f"cat {mtu}").stdout == f"{good}\n"
    with connected.open_venet(interface_id, slots=8):
        busy = bus.sh(f"echo 9000 > {mtu}")
        assert "Device or resource busy" in busy.stderr
        assert bus.sh(f"cat {mtu}").stdout == "1500\n"
    bus.sh(f"echo 1500 > {mtu}", check=True)  # free again once closed


def test_loopback_frames_are_bounded_by_mtu(bus, connected):
    bus.sh("echo 100 > sys/vbus/devices/L/mtu", check=True)
    try:
        with connected.open_venet(0, slots=8) as nic:
            for bad in (bytes(13), frame(115), frame(2000)):
                nic.send(bad)
            nic.send(frame(114, b"fits"))
            assert nic.recv(timeout=5) == frame(114, b"fits")
            assert nic.stats()["oversize"] == 3
    finally:
        bus.sh("echo 1500 > sys/vbus/devices/L/mtu", check=True)


@pytest.mark.parametrize("cls", ["venet-loopback", "venet-switch", "venet-tap"])
@pytest.mark.parametrize(
    ("txmitigation", "signals"), [("1", (100, 100)), ("0", (100, 100)), ("10", (10, 12))]
)
def test_txmitigation_batches_transmit_completion_signals(
    bus, connected, cls, txmitigation, signals
):
    device, interface_id = CLASSES[cls]
    bus.sh(f"echo {txmitigation} > sys/vbus/devices/{device}/txmitigation", check=True)
    try:
        with connected.open_venet(interface_id, slots=128) as nic:
            nic.send_batch([frame(payload=b"%d" % i) for i in range(100)])
            if cls == "venet-loopback":
                got: list[bytes] = []
                while len(got) < 100:
                    got += nic.recv_batch(100, timeout=5)
                assert got == [frame(payload=b"%d" % i) for i in range(100)]
            deadline = time.monotonic() + 5  # the switch's lone port and a disabled tap
            while (stats := nic.stats())["tx_frames"] < 100:  # take them and drop them
                assert time.monotonic() < deadline, stats
            # one per frame; or one per 10 frames and one as a batch of 64 ends (at most 2)
            low, high = signals
            assert low <= stats["tx_signals"] <= high, stats
    finally:
        bus.sh(f"echo 10 > sys/vbus/devices/{device}/txmitigation", check=True)


@pytest.mark.parametrize("burstthresh", ["0", "1000"])
def test_burstthresh_decides_between_polling_and_sleeping(bus, connected, burstthresh):
    bus.sh(f"echo {burstthresh} > sys/vbus/devices/L/burstthresh", check=True)
    try:
        with connected.open_venet(0, slots=8) as nic:
            for i in range(100):
                nic.send(frame(payload=b"%d" % i))
                assert nic.recv(timeout=5) == frame(payload=b"%d" % i)
                # a gap of 0.3 ms with this thread asleep: the device's thread has its
                # core, finds its ring empty and waits (a 1 ms poll, or a sleep) before
                # the next frame comes; a wake-up late by over 0.7 ms misses the poll
                time.sleep(300e-6)
            stats = nic.stats()
        if burstthresh == "0":
            assert stats["polled"] == 0 and stats["slept"] >= 50, stats  # never polls
        else:
            assert stats["polled"] >= 30, stats  # 70-92 of 100 with three busy loops beside
    finally:
        bus.sh("echo 20 > sys/vbus/devices/L/burstthresh", check=True)


ECHO_CHILD = """
import sys
from vbusfs import client
m = sys.argv[1]
open(f"{m}/proc/self/vbus", "w").write("C")
with client.connect(m) as bus, bus.open_venet(0, slots=8) as nic:
    print(nic.mac.hex(), flush=True)
    while (got := nic.recv(timeout=10))[14:18] != b"stop":
        nic.send(got[6:12] + nic.mac + got[12:])  # back to its sender
"""


@pytest.mark.parametrize("burstthresh", ["0", "1000"])
def test_the_switchs_thread_polls_with_burstthresh_and_sleeps_without(bus, connected, burstthresh):
    # port B.2 (this process) and port C.0 (a child echoing every frame back to us)
    bus.sh(
        f"echo {burstthresh} > sys/vbus/devices/S/burstthresh && "
        "mkdir config/vbus/instances/C && ln -s ../../devices/S config/vbus/instances/C/",
        check=True,
    )
    try:
        with (
            subprocess.Popen(
                [sys.executable, "-c", ECHO_CHILD, bus.path], stdout=subprocess.PIPE, text=True
            ) as child,
            connected.open_venet(2, slots=8) as nic,
        ):
            assert child.stdout is not None
            peer = bytes.fromhex(child.stdout.readline().strip())  # it is up
            for i in range(100):
                sent = peer + nic.mac + b"\x88\xb5" + b"%04d" % i + bytes(42)
                nic.send(sent)
                assert nic.recv(timeout=5)[12:] == sent[12:]
                # a gap of 0.3 ms with this thread asleep: the switch's thread has its
                # core, finds every ring empty and waits (a 1 ms poll, or a sleep)
                # before the next frame comes
                time.sleep(300e-6)
            stats = nic.stats()
            nic.send(peer + nic.mac + b"\x88\xb5" + b"stop" + bytes(42))
            assert child.wait(10) == 0
        # two idle spells a round trip: after our frame (the child answers) and after its
        # answer (we sleep the gap); each counts on every linked port
        if burstthresh == "0":
            assert stats["polled"] == 0 and stats["slept"] >= 100, stats  # never polls
        else:
            assert stats["polled"] >= 60, stats  # a large share of 200
    finally:
        bus.sh(
            "echo 20 > sys/vbus/devices/S/burstthresh && "
            "rm config/vbus/instances/C/S && rmdir config/vbus/instances/C",
            check=True,
        )


@pytest.mark.parametrize("cls", ["venet-loopback", "venet-switch"])
def test_linkstate_events_go_only_to_clients_that_negotiated_them(bus, cls):
    interface_id = CLASSES[cls][1]
    with client.connect(bus.path) as c:
        with c.open_venet(interface_id, slots=8):
            pass  # nothing negotiated: no event
        caps = {abi.CAP_GROUP_EVENTQ: abi.CAP_EVQ_LINKSTATE}
        with c.open_venet(interface_id, slots=8, capabilities=caps) as nic:
            assert nic.granted == caps
            event = c.wait_event(timeout=5)
            assert (event.kind, event.interface_id, event.device_kind) == (
                "device",
                interface_id,
                abi.EVENT_LINKSTATE,
            )
            assert client.linkstate(event) is True  # loopback and switch: always up
            nic.link_down()
            nic.link_up()
            assert client.linkstate(c.wait_event(timeout=5)) is True
        assert c.events() == []  # nothing else, and nothing from the first open


@pytest.mark.skipif(not netns_available(), reason="needs unshare and root")
def test_venet_tap_enabled_is_the_carrier_a_client_hears(bus):
    caps = {abi.CAP_GROUP_EVENTQ: abi.CAP_EVQ_LINKSTATE}
    enabled = "sys/vbus/devices/T/enabled"
    with client.connect(bus.path) as c, c.open_venet(1, slots=8, capabilities=caps):
        assert client.linkstate(c.wait_event(timeout=5)) is False  # disabled: no carrier
        bus.sh(f"echo 1 > {enabled}", check=True)
        assert client.linkstate(c.wait_event(timeout=5)) is True
        bus.sh(f"echo 1 > {enabled}", check=True)  # the same value: no change, no event
        bus.sh(f"echo 0 > {enabled}", check=True)
        assert client.linkstate(c.wait_event(timeout=5)) is False
        assert c.events() == []


def test_sg_loopback_echoes_large_segments_with_their_header(connected):
    caps = {abi.CAP_GROUP_SG: abi.CAP_SG | abi.CAP_TSO4 | abi.CAP_UFO}
    slot = abi.MAX_SG_MESSAGE + 64  # room for one message too long for the device
    with connected.open_venet(0, slots=4, capabilities=caps, slot_size=slot) as nic:
        assert nic.granted[abi.CAP_GROUP_SG] == abi.CAP_SG | abi.CAP_TSO4
        header = abi.vnet_header(abi.VNET_HDR_F_NEEDS_CSUM, abi.VNET_GSO_TCPV4, 54, 1448, 34, 16)
        big = header + frame(20054, b"segment")
        nic.send(big)
        assert nic.recv(timeout=5) == big  # one frame, header unchanged
        smallest = abi.vnet_header() + frame(14)
        largest = abi.vnet_header() + frame(abi.MAX_GSO_FRAME)
        for bad in (abi.vnet_header() + bytes(13), bytes(abi.MAX_SG_MESSAGE + 1)):
            nic.send(bad)
        nic.send(largest)
        nic.send(smallest)
        assert nic.recv(timeout=5) == largest
        assert nic.recv(timeout=5) == smallest
        assert nic.stats()["oversize"] == 2


SG_CHILD = """
import sys
from vbusfs import client
from vbusfs.connector import venet as abi
m, to_parent, large, tcp = (sys.argv[1], *map(bytes.fromhex, sys.argv[2:5]))
open(f"{m}/proc/self/vbus", "w").write("C")
caps = {abi.CAP_GROUP_SG: abi.CAP_SG | abi.CAP_TSO4}
with client.connect(m) as bus, bus.open_venet(0, slots=8, capabilities=caps) as nic:
    print(nic.mac.hex(), flush=True)
    got = nic.recv(timeout=10)
    print(got[:10].hex(), len(got), flush=True)
    nic.send(large)  # a large segment with no TCP in it: never reaches a bare port
    nic.send(to_parent)
    nic.send(tcp)  # a large TCP segment: cut into frames for the bare port
    sys.stdin.read()
    print(nic.stats()["gso_dropped"], nic.stats()["gso_segmented"], flush=True)
"""


def test_switch_ports_of_both_formats_through_the_daemon(bus, connected):
    # port B.2 bare (this process), port C.0 with SG (a child on bus C)
    bus.sh("mkdir config/vbus/instances/C && ln -s ../../devices/S config/vbus/instances/C/")
    try:
        with connected.open_venet(2, slots=8) as nic:
            payload = b"through the switch" * 20
            udp, _, _ = offload_udp_frame(nic.mac, PEER, payload)  # to us, learned once we send
            csum = abi.vnet_header(abi.VNET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6)
            large = abi.vnet_header(0, abi.VNET_GSO_TCPV4, 54, 1400, 0, 0) + frame(9000)
            # a large TCP segment of 3000 bytes, 1400 a frame
            segment = offload_tcp_segment(nic.mac, PEER, bytes(range(256)) * 11 + bytes(184))
            tcp = tso_header(abi.VNET_GSO_TCPV4, 1400, segment) + segment
            argv = [(csum + udp).hex(), large.hex(), tcp.hex()]
            with subprocess.Popen(
                [sys.executable, "-c", SG_CHILD, bus.path, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ) as child:
                assert child.stdout is not None and child.stdin is not None
                assert len(child.stdout.readline().strip()) == 12  # its MAC: it is up
                nic.send(b"\xff" * 6 + nic.mac + b"\x88\xb5" + bytes(46))
                assert child.stdout.readline().split() == ["00" * 10, str(10 + 60)]
                got = nic.recv(timeout=5)  # the checksum completed, the header gone
                assert got[:6] == nic.mac and got[6:12] == PEER and len(got) == len(udp)
                pseudo = got[26:34] + struct.pack("!BBH", 0, 17, len(got) - 34)
                assert checksum(pseudo + got[34:]) == 0 and got[42:] == payload
                cut = [nic.recv(timeout=5) for _ in range(3)]  # 1400, 1400 and 200 bytes
                assert [len(f) for f in cut] == [54 + 1400] * 2 + [54 + 200]
                for f in cut:
                    pseudo = f[26:34] + struct.pack("!BBH", 0, 6, len(f) - 34)
                    assert checksum(f[14:34]) == 0 and checksum(pseudo + f[34:]) == 0
                assert b"".join(f[54:] for f in cut) == tcp[10 + 54 :]
                child.stdin.close()
                assert child.stdout.readline().split() == ["1", "1"]  # one of each
                assert child.wait(10) == 0
    finally:
        bus.sh("rm config/vbus/instances/C/S && rmdir config/vbus/instances/C", check=True)


@pytest.mark.parametrize(
    ("granted_sg", "bits"),
    [
        (0, None),
        (abi.CAP_TSO4, None),  # no header without SG, whatever else is granted
        (abi.CAP_SG, abi.TUN_F_CSUM),
        (abi.CAP_SG | abi.CAP_ECN, abi.TUN_F_CSUM),  # ECN only with a TSO
        (abi.CAP_SG | abi.CAP_TSO4, abi.TUN_F_CSUM | abi.TUN_F_TSO4),
        (
            abi.CAP_SG | abi.CAP_TSO4 | abi.CAP_TSO6 | abi.CAP_ECN,
            abi.TUN_F_CSUM | abi.TUN_F_TSO4 | abi.TUN_F_TSO6 | abi.TUN_F_TSO_ECN,
        ),
    ],
)
def test_a_granted_sg_group_gives_a_taps_offload_bits(granted_sg, bits):
    assert abi.tun_offloads(granted_sg) == bits
