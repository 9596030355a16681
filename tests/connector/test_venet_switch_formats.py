"""venet-switch ports of different formats (behaviour §7.4), in C: bare frames and
frames with a virtio-net header (SG granted) cross between them converted."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from switch_ports import Port, mac, make_port, send

from vbusfs.connector import venet as abi
from vbusfs.ioq import Switch
from vbusfs.testing import checksum, offload_udp_frame

COUNT = 8
SLOT = abi.MAX_SG_MESSAGE + 64  # room for one message too long for any port
BARE, SG = 0, 1


@pytest.fixture
def switch() -> Iterator[tuple[Switch, list[Port]]]:
    ports = [make_port(COUNT, SLOT, tx_count=COUNT, tx_slot=SLOT) for _ in range(3)]
    sw = Switch()
    sw.set_port(1, header=True)  # port 0 bare (1514), port 1 SG, port 2 bare, mtu 1500
    yield sw, ports
    for p in ports:
        p.close()


def test_a_bare_frame_reaches_an_sg_port_with_a_zero_header(switch):
    sw, ports = switch
    frame = (b"\xff" * 6 + mac(1) + b"\x88\xb5").ljust(60, b"b")
    got = send(sw, ports, 0, frame)
    assert got.delivered == (0, 1, 1)
    assert ports[1].received() == [bytes(abi.VNET_HDR_LEN) + frame]
    assert ports[2].received() == [frame]


def test_an_sg_frame_reaches_a_bare_port_with_its_checksum_completed(switch):
    sw, ports = switch
    frame, start, offset = offload_udp_frame(b"\xff" * 6, mac(2), b"payload" * 100)
    header = abi.vnet_header(abi.VNET_HDR_F_NEEDS_CSUM, abi.VNET_GSO_NONE, 0, 0, start, offset)
    got = send(sw, ports, 1, header + frame)
    assert got.delivered == (1, 0, 1) and got.bad_size == 0
    (out,) = ports[0].received()
    assert ports[2].received() == [out]
    assert len(out) == len(frame) and out[:start] == frame[:start]
    # the UDP checksum now verifies over the pseudo-header and the datagram
    udp = out[start:]
    pseudo = out[26:34] + struct.pack("!BBH", 0, 17, len(udp))
    assert checksum(pseudo + udp) == 0
    assert udp[offset : offset + 2] != frame[start + offset : start + offset + 2]
    # without NEEDS_CSUM the frame goes as it is, header off
    send(sw, ports, 1, abi.vnet_header() + frame)
    assert ports[0].received() == [frame]


def test_a_large_segment_with_no_tcp_headers_to_a_bare_port_is_dropped_and_counted(switch):
    # its IP header is filler (version 7): nothing to cut it by (see test_venet_switch_gso)
    sw, ports = switch
    big = (b"\xff" * 6 + mac(3) + b"\x08\x00").ljust(20054, b"s")
    header = abi.vnet_header(abi.VNET_HDR_F_NEEDS_CSUM, abi.VNET_GSO_TCPV4, 54, 1448, 34, 16)
    got = send(sw, ports, 1, header + big)
    assert got.gso_dropped == 2 and got.dropped == (1, 0, 1) and got.delivered == (0, 0, 0)
    assert ports[0].received() == [] and ports[2].received() == []
    # a bare port's frame longer than its mtu allows is no frame at all
    assert send(sw, ports, 0, big).bad_size == 1


def test_sg_ports_pass_large_segments_and_headers_unchanged(switch):
    sw, ports = switch
    sw.set_port(2, header=True)
    big = (mac(9) + mac(4) + b"\x08\x00").ljust(30000, b"g")
    header = abi.vnet_header(abi.VNET_HDR_F_NEEDS_CSUM, abi.VNET_GSO_TCPV4, 54, 1448, 34, 16)
    got = send(sw, ports, 1, header + big)
    assert got.delivered == (0, 0, 1) and got.gso_dropped == 1  # port 0 is bare
    assert ports[2].received() == [header + big]
    # too short to hold a header and an Ethernet header; too long for any port
    got = send(sw, ports, 1, header + bytes(13), bytes(abi.MAX_SG_MESSAGE + 1))
    assert got.bad_size == 2


def test_set_port_refuses_what_no_port_can_be(switch):
    sw, _ = switch
    for bad in ((Switch.MAX_PORTS, False, None), (0, False, 13), (0, True, 23), (0, True, 70000)):
        index, header, max_len = bad
        with pytest.raises(ValueError):
            sw.set_port(index, header=header, max_len=max_len)


def test_forward_hands_source_slots_back_every_n_frames(switch):
    sw, ports = switch
    frames = [(mac(9) + mac(5) + b"\x88\xb5").ljust(60, bytes([i])) for i in range(7)]
    ports[0].tx_north.send_batch_nowait(frames)
    got = sw.forward(0, ports[0].tx, [p.rx for p in ports], signal_every=3)
    assert got.frames == 7 and got.signals == 3  # after 3, after 6, and the last one
    assert ports[1].received() == [bytes(10) + f for f in frames]  # SG port: zero headers
    assert ports[2].received() == frames
    assert ports[0].tx_north.send_batch_nowait([frames[0]] * COUNT) == COUNT  # all slots back
    got = sw.forward(0, ports[0].tx, [p.rx for p in ports])
    assert got.frames == COUNT and got.signals == 1  # 0: once, at the end
    with pytest.raises(ValueError):
        sw.forward(0, ports[0].tx, [p.rx for p in ports], signal_every=-1)
