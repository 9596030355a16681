"""venet-switch software segmentation (behaviour §7.4), in C: a large TCP segment from
a port that negotiated offloads, going to a bare port, is cut into ordinary frames.

Every frame that comes out is checked here in Python, independently of the C: its IP
and TCP checksums, lengths, identification, sequence number and flags, and the payload
the frames carry together."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from switch_ports import Port, mac, make_port, send

from vbusfs.connector import venet as abi
from vbusfs.ioq import Switch
from vbusfs.testing import checksum, offload_tcp_segment, tso_header

TX_SLOT = abi.MAX_SG_MESSAGE
BARE_SLOT = 2048
SG, BARE = 0, 1
FIN, PSH, ACK, CWR = 0x01, 0x08, 0x10, 0x80
#: TCP options a Linux sender carries on a bulk flow: NOP, NOP, timestamps
TS_OPTION = b"\x01\x01\x08\x0a" + struct.pack("!II", 123456, 654321)


@pytest.fixture
def ports() -> Iterator[list[Port]]:
    made: list[Port] = []
    yield made
    for p in made:
        p.close()


def switch_of(made: list[Port], *bare_rx: tuple[int, int]) -> Switch:
    """Port 0 in header mode (offloads), then one bare port per (count, slot)."""
    made.append(make_port(4, TX_SLOT))
    for count, slot in bare_rx:
        made.append(make_port(count, slot))
    sw = Switch()
    sw.set_port(SG, header=True)
    return sw


def tcp4_segment(payload: bytes, seq: int, flags: int, ip_options: bytes = b"") -> bytes:
    """An Ethernet/IPv4/TCP large segment as a sender with TSO leaves it."""
    return offload_tcp_segment(
        mac(9), mac(1), payload, seq=seq, flags=flags, tcp_options=TS_OPTION, ip_options=ip_options
    )


def tcp6_segment(payload: bytes, seq: int, flags: int) -> bytes:
    return offload_tcp_segment(
        mac(9), mac(1), payload, seq=seq, flags=flags, tcp_options=TS_OPTION, ipv6=True
    )


def check_v4(frames: list[bytes], sent: bytes, mss: int, delivered: int | None = None) -> None:
    """Each frame a complete, correctly checksummed IPv4/TCP frame; together the whole
    (or, when only the first `delivered` came, those first ones)."""
    ip_len = (sent[14] & 15) * 4
    hl = 14 + ip_len + (sent[14 + ip_len + 12] >> 4) * 4
    payload = sent[hl:]
    n = -(-len(payload) // mss)
    assert len(frames) == (n if delivered is None else delivered)
    seq0 = struct.unpack("!I", sent[14 + ip_len + 4 : 14 + ip_len + 8])[0]
    for i, f in enumerate(frames):
        ip, tcp = f[14 : 14 + ip_len], f[14 + ip_len :]
        assert f[:14] == sent[:14] and len(f) <= 1514
        assert ip[0] == sent[14] and ip[20:] == sent[34 : 14 + ip_len]  # options kept
        assert struct.unpack("!H", ip[2:4])[0] == len(f) - 14
        assert struct.unpack("!H", ip[4:6])[0] == 4242 + i
        assert checksum(ip) == 0
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
        assert checksum(pseudo + tcp) == 0
        check_tcp(tcp, sent[14 + ip_len :], i, n, seq0 + i * mss)
        assert f[hl:] == payload[i * mss : (i + 1) * mss]


def check_v6(frames: list[bytes], sent: bytes, mss: int) -> None:
    hl = 54 + (sent[54 + 12] >> 4) * 4
    payload = sent[hl:]
    assert len(frames) == -(-len(payload) // mss)
    seq0 = struct.unpack("!I", sent[58:62])[0]
    for i, f in enumerate(frames):
        ip, tcp = f[14:54], f[54:]
        assert f[:14] == sent[:14] and len(f) <= 1514
        assert ip[:4] == sent[14:18] and ip[6:] == sent[20:54]
        assert struct.unpack("!H", ip[4:6])[0] == len(tcp)
        pseudo = ip[8:40] + struct.pack("!IxxxB", len(tcp), 6)
        assert checksum(pseudo + tcp) == 0
        check_tcp(tcp, sent[54:], i, len(frames), seq0 + i * mss)
        assert f[hl:] == payload[i * mss : (i + 1) * mss]


def check_tcp(tcp: bytes, sent_tcp: bytes, i: int, n: int, seq: int) -> None:
    assert tcp[:4] == sent_tcp[:4]  # ports
    assert struct.unpack("!I", tcp[4:8])[0] == seq & 0xFFFFFFFF
    assert tcp[8:13] == sent_tcp[8:13] and tcp[14:16] == sent_tcp[14:16]  # ack, doff, window
    flags = sent_tcp[13]
    if i < n - 1:
        flags &= ~(FIN | PSH)
    if i > 0:
        flags &= ~CWR
    assert tcp[13] == flags
    hl = (sent_tcp[12] >> 4) * 4
    assert tcp[18:hl] == sent_tcp[18:hl]  # urgent pointer and options


def pattern(n: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


def test_a_tcpv4_large_segment_reaches_bare_ports_cut_into_frames(ports):
    sw = switch_of(ports, (16, BARE_SLOT), (16, BARE_SLOT))
    # the sequence number wraps inside the train; IP options and ECN ride along
    big = tcp4_segment(pattern(10000), 0xFFFFF000, ACK | PSH | FIN | CWR, b"\x01" * 4)
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV4 | abi.VNET_GSO_ECN, 1440, big) + big)
    # flooded (its destination is unknown) to both bare ports, seven frames each
    assert got.gso_segmented == 2 and got.gso_dropped == 0
    assert got.delivered == (0, 7, 7) and got.dropped == (0, 0, 0)
    first, second = ports[1].received(), ports[2].received()
    assert first == second
    check_v4(first, big, 1440)
    assert len(first[0]) == 14 + 24 + 32 + 1440 and len(first[-1]) == 14 + 24 + 32 + 10000 % 1440


def test_a_tcpv6_large_segment_reaches_a_bare_port_cut_into_frames(ports):
    sw = switch_of(ports, (16, BARE_SLOT))
    big = tcp6_segment(pattern(5000), 1000, ACK)
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV6, 1200, big) + big)
    assert got.gso_segmented == 1 and got.delivered == (0, 5)
    frames = ports[1].received()
    check_v6(frames, big, 1200)
    assert [len(f) for f in frames] == [86 + 1200] * 4 + [86 + 200]


def test_a_segment_of_one_frame_and_an_sg_port_beside(ports):
    sw = switch_of(ports, (16, BARE_SLOT))
    ports.append(make_port(4, TX_SLOT))
    sw.set_port(2, header=True)
    big = tcp4_segment(b"small", 5, ACK | PSH)
    message = tso_header(abi.VNET_GSO_TCPV4, 1448, big) + big
    got = send(sw, ports, SG, message)
    assert got.delivered == (0, 1, 1) and got.gso_segmented == 1
    check_v4(ports[1].received(), big, 1448)
    assert ports[2].received() == [message]  # an SG port takes it whole, header and all


def test_many_frames_from_one_segment_arrive_in_order(ports):
    # more frames than one batch's worth of buffers: handed over as they fill
    sw = switch_of(ports, (256, BARE_SLOT))
    big = tcp4_segment(pattern(65000), 42, ACK | FIN)
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV4, 500, big) + big)
    assert got.delivered == (0, 130) and got.dropped == (0, 0)
    check_v4(ports[1].received(), big, 500)


def test_frames_without_a_buffer_are_dropped_and_the_rest_delivered(ports):
    sw = switch_of(ports, (4, BARE_SLOT))
    big = tcp4_segment(pattern(10000), 0, ACK | PSH)
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV4, 1448, big) + big)
    # the first four in order; the other three counted dropped, never half a frame
    assert got.delivered == (0, 4) and got.dropped == (0, 3) and got.gso_segmented == 1
    frames = ports[1].received()
    check_v4(frames, big, 1448, delivered=4)
    assert all(f[47] == ACK for f in frames)  # PSH belongs to the last one, not delivered
    # the receiver read them, so its four buffers are free again: the next segment fills
    # them the same way, and the three frames past them are dropped again
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV4, 1448, big) + big)
    assert got.delivered == (0, 4) and got.dropped == (0, 3)
    # buffers too small for a frame end the train there, nothing half-written
    small = make_port(8, 1000)
    ports.append(small)
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV4, 1448, big) + big)
    assert got.delivered[2] == 0 and got.dropped[2] == 7
    assert small.received() == []


BAD = {
    "udp (ufo)": (abi.VNET_GSO_UDP, 1448, lambda f: f),
    "gso_size 0": (abi.VNET_GSO_TCPV4, 0, lambda f: f),
    "ipv6 frame as tcpv4": (abi.VNET_GSO_TCPV4, 1448, lambda f: tcp6_segment(f[66:], 0, ACK)),
    "ipv4 frame as tcpv6": (abi.VNET_GSO_TCPV6, 1448, lambda f: f),
    "vlan tag": (abi.VNET_GSO_TCPV4, 1448, lambda f: f[:12] + b"\x81\x00\x00\x05" + f[12:]),
    "not tcp": (abi.VNET_GSO_TCPV4, 1448, lambda f: f[:23] + b"\x11" + f[24:]),
    "ip version 5": (abi.VNET_GSO_TCPV4, 1448, lambda f: b"%s\x55%s" % (f[:14], f[15:])),
    "ihl 4": (abi.VNET_GSO_TCPV4, 1448, lambda f: b"%s\x44%s" % (f[:14], f[15:])),
    "fragment": (abi.VNET_GSO_TCPV4, 1448, lambda f: f[:20] + b"\x20\x00" + f[22:]),
    "extension header": (
        abi.VNET_GSO_TCPV6,
        1448,
        lambda f: (lambda s: s[:20] + b"\x00" + s[21:])(tcp6_segment(f[66:], 0, ACK)),
    ),
    "tcp header past the end": (abi.VNET_GSO_TCPV4, 1448, lambda f: f[:34] + b"\0" * 12),
    "tcp data offset 4": (abi.VNET_GSO_TCPV4, 1448, lambda f: f[:46] + b"\x40" + f[47:]),
    "tcp data offset past the end": (
        abi.VNET_GSO_TCPV4,
        1448,
        lambda f: f[:46] + b"\xf0" + f[47:60],
    ),
    "no payload": (abi.VNET_GSO_TCPV4, 1448, lambda f: f[:66]),
    "frames longer than the mtu": (abi.VNET_GSO_TCPV4, 1461, lambda f: f),
    "over 2048 frames": (abi.VNET_GSO_TCPV4, 1, lambda f: f),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_large_segment_that_cannot_be_cut_is_dropped_and_counted(ports, case):
    sw = switch_of(ports, (16, BARE_SLOT), (16, BARE_SLOT))
    gso_type, size, spoil = BAD[case]
    good = tcp4_segment(pattern(4000), 0, ACK)  # 14 + 20 + 32 = 66 bytes of headers
    frame = spoil(good)
    got = send(sw, ports, SG, abi.vnet_header(0, gso_type, 66, size, 34, 16) + frame)
    assert got.gso_dropped == 2 and got.gso_segmented == 0
    assert got.delivered == (0, 0, 0) and got.dropped == (0, 1, 1)
    assert ports[1].received() == [] and ports[2].received() == []
    # the same switch cuts the good one
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV4, 1448, good) + good)
    assert got.delivered == (0, 3, 3)
    check_v4(ports[1].received(), good, 1448)


def test_a_port_with_a_larger_mtu_takes_larger_frames(ports):
    sw = switch_of(ports, (16, 9100))
    sw.set_port(1, header=False, max_len=9014)
    big = tcp4_segment(pattern(30000), 0, ACK)
    got = send(sw, ports, SG, tso_header(abi.VNET_GSO_TCPV4, 8948, big) + big)
    assert got.delivered == (0, 4)
    frames = ports[1].received()
    assert [len(f) for f in frames] == [9014] * 3 + [66 + 30000 - 3 * 8948]
