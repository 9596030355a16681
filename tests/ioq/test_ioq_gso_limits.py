"""The switch's segmentation at the edge of IPv4's 16-bit total length.

A bare port may take messages up to Switch.MAX_SG (65560 bytes), more than an IPv4
packet can say it is long (65535 + 14 bytes of Ethernet): a large segment whose first
frame would not fit the total-length field is dropped (gso_dropped), never delivered
with the length wrapped.  IPv6's payload length does not count its own header, so the
same sizes fit it."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from vbusfs.ioq import Ioq, IoqEmpty, Switch
from vbusfs.testing import checksum

SG, BARE = 0, 1
GSO_TCPV4, GSO_TCPV6 = 1, 4
NEEDS_CSUM = 1
SRC4, DST4 = b"\n\0\0\x01", b"\n\0\0\x02"
SRC6 = bytes.fromhex("fd000000000000000000000000000001")
DST6 = bytes.fromhex("fd000000000000000000000000000002")
TCP_LEN = 32  # 20 bytes and timestamps
ETH = bytes([2, 0, 0, 0, 0, 2]) + bytes([2, 0, 0, 0, 0, 1])


def tcp(payload: bytes) -> bytes:
    options = b"\x01\x01\x08\x0a" + struct.pack("!II", 1, 2)
    return (
        struct.pack("!HHIIBBHHH", 40000, 5201, 1000, 1, 8 << 4, 0x18, 512, 0, 0) + options + payload
    )


def segment4(payload: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 7, 0x4000, 64, 6, 0, SRC4, DST4)
    return ETH + b"\x08\x00" + ip + tcp(payload)


def segment6(payload: bytes) -> bytes:
    ip = struct.pack("!IHBB16s16s", 0x60000000, 0, 6, 64, SRC6, DST6)
    return ETH + b"\x86\xdd" + ip + tcp(payload)


def vnet(gso_type: int, gso_size: int, ip_len: int) -> bytes:
    start = 14 + ip_len
    return struct.pack("<BBHHHH", NEEDS_CSUM, gso_type, start + TCP_LEN, gso_size, start, 16)


@pytest.fixture
def rings() -> Iterator[list[Ioq]]:
    made: list[Ioq] = []
    yield made
    for q in made:
        q.close()


def forward(rings: list[Ioq], message: bytes, buffers: int = 4):
    """Send message from a header-mode port 0 to a bare port 1 that takes MAX_SG."""
    tx_north = Ioq.create(2, Switch.MAX_SG, direction="to_south")
    rx_north = Ioq.create(buffers, Switch.MAX_SG, direction="to_north")
    rings.append(tx_north)
    rings.append(rx_north)
    tx = Ioq.attach(tx_north.fds, direction="to_south")
    rx = Ioq.attach(rx_north.fds, direction="to_north")
    rings.append(tx)
    rings.append(rx)
    sw = Switch()
    sw.set_port(SG, header=True)
    sw.set_port(BARE, header=False, max_len=Switch.MAX_SG)
    tx_north.send_batch_nowait([message])
    got = sw.forward(SG, tx, [None, rx])
    try:
        frames = rx_north.receive_batch_nowait(16)
    except IoqEmpty:
        frames = []
    return got, frames


def check_v4(frame: bytes, payload_len: int) -> None:
    ip = frame[14:34]
    assert struct.unpack("!H", ip[2:4])[0] == 20 + TCP_LEN + payload_len == len(frame) - 14
    assert checksum(ip) == 0
    seg = frame[34:]
    pseudo = SRC4 + DST4 + struct.pack("!BBH", 0, 6, len(seg))
    assert checksum(pseudo + seg) == 0


# 20 + 32 + 65483 = 65535: the longest an IPv4 total length can say
LONGEST4 = 0xFFFF - 20 - TCP_LEN


def test_a_frame_whose_ipv4_length_would_wrap_is_dropped_not_cut(rings):
    payload = bytes(range(256)) * 256
    sent = segment4(payload[: LONGEST4 + 1])
    got, frames = forward(rings, vnet(GSO_TCPV4, LONGEST4 + 1, 20) + sent)
    assert len(sent) == Switch.MAX_SG - 10  # the message is as long as a port takes
    assert got.gso_dropped == 1 and got.gso_segmented == 0
    assert got.delivered == (0, 0) and got.dropped == (0, 1)
    assert frames == []


def test_the_longest_ipv4_frame_is_delivered(rings):
    payload = (bytes(range(256)) * 256)[:LONGEST4]
    got, frames = forward(rings, vnet(GSO_TCPV4, LONGEST4, 20) + segment4(payload))
    assert got.gso_dropped == 0 and got.gso_segmented == 1 and got.delivered == (0, 1)
    assert len(frames) == 1 and len(frames[0]) == 14 + 0xFFFF
    check_v4(frames[0], LONGEST4)
    assert frames[0][66:] == payload


def test_the_same_segment_cut_smaller_is_delivered(rings):
    payload = (bytes(range(256)) * 256)[: LONGEST4 + 1]
    got, frames = forward(rings, vnet(GSO_TCPV4, 32768, 20) + segment4(payload))
    assert got.gso_segmented == 1 and got.delivered == (0, 2)
    assert [len(f) for f in frames] == [66 + 32768, 66 + LONGEST4 + 1 - 32768]
    for f in frames:
        check_v4(f, len(f) - 66)
    assert b"".join(f[66:] for f in frames) == payload


def test_ipv6_takes_what_ipv4_cannot_say(rings):
    # IPv6's payload length leaves out its 40-byte header: the whole message fits
    payload = (bytes(range(256)) * 256)[: Switch.MAX_SG - 10 - 14 - 40 - TCP_LEN]
    got, frames = forward(rings, vnet(GSO_TCPV6, len(payload), 40) + segment6(payload))
    assert got.gso_segmented == 1 and got.delivered == (0, 1)
    (frame,) = frames
    assert len(frame) == Switch.MAX_SG - 10
    assert struct.unpack("!H", frame[18:20])[0] == TCP_LEN + len(payload)
    pseudo = SRC6 + DST6 + struct.pack("!IxxxB", TCP_LEN + len(payload), 6)
    assert checksum(pseudo + frame[54:]) == 0
