"""A tiny IPv4 host for a venet interface: answers ARP and ICMP echo for one address.

Enough for `ping` from the far side of a venet-tap device to get replies
from a member process, which is how the ping example and its test show a
real frame path end to end.
"""

from __future__ import annotations

import struct
import threading

ETH_ARP = b"\x08\x06"
ETH_IPV4 = b"\x08\x00"
ETH_IPV6 = b"\x86\xdd"


def checksum(data: bytes) -> int:
    """The Internet checksum (one's complement sum of 16-bit words)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def reply_to(frame: bytes, mac: bytes, ip: bytes) -> bytes | None:
    """The answer host (`mac`, `ip`) gives to `frame`, or None."""
    kind = frame[12:14]
    if kind == ETH_ARP and frame[20:22] == b"\x00\x01" and frame[38:42] == ip:
        sender_mac, sender_ip = frame[22:28], frame[28:32]
        arp = b"\x00\x01\x08\x00\x06\x04\x00\x02" + mac + ip + sender_mac + sender_ip
        return sender_mac + mac + ETH_ARP + arp
    if kind == ETH_IPV4 and len(frame) >= 34 and frame[23] == 1 and frame[30:34] == ip:
        header = (frame[14] & 0x0F) * 4
        ip_header = bytearray(frame[14 : 14 + header])
        # swapping source and destination leaves the header checksum as it was
        ip_header[12:16], ip_header[16:20] = frame[30:34], frame[26:30]
        icmp = bytearray(frame[14 + header :])
        if not icmp or icmp[0] != 8:
            return None
        icmp[0] = 0
        icmp[2:4] = b"\0\0"
        icmp[2:4] = checksum(bytes(icmp)).to_bytes(2, "big")
        return frame[6:12] + mac + ETH_IPV4 + bytes(ip_header) + bytes(icmp)
    return None


def offload_udp_frame(
    dst: bytes,
    src: bytes,
    payload: bytes,
    *,
    saddr: bytes = b"\n\0\0\x01",
    daddr: bytes = b"\n\0\0\x02",
) -> tuple[bytes, int, int]:
    """An Ethernet/IPv4/UDP frame as a sender with checksum offload leaves it (the UDP
    checksum field holds only the folded pseudo-header sum), with the virtio-net
    header's csum_start and csum_offset for it."""
    length = 8 + len(payload)
    partial = ~checksum(saddr + daddr + struct.pack("!BBH", 0, 17, length)) & 0xFFFF
    udp = struct.pack("!HHHH", 1000, 2000, length, partial) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst + src + ETH_IPV4 + ip + udp, 14 + 20, 6


def offload_tcp_segment(
    dst: bytes,
    src: bytes,
    payload: bytes,
    *,
    seq: int = 0,
    flags: int = 0x18,
    tcp_options: bytes = b"",
    ip_options: bytes = b"",
    ipv6: bool = False,
) -> bytes:
    """An Ethernet/IP/TCP large segment as a sender with TSO leaves it: one TCP header
    (port 40000 to 5201, ack 777, window 512; `flags` PSH|ACK unless told) before the whole
    `payload`, its lengths and checksums 0 for whoever cuts it into frames. IPv4 from
    10.0.0.1 to 10.0.0.2 (identification 4242, don't fragment), or IPv6 from fd00::1 to
    fd00::2. :func:`tso_header` is the virtio-net header that goes before it."""
    doff = (20 + len(tcp_options)) // 4
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 777, doff << 4, flags, 512, 0, 0)
    tcp += tcp_options + payload
    if ipv6:
        ip = struct.pack("!IHBB", 0x60000000, 0, 6, 64) + bytes.fromhex(
            "fd000000000000000000000000000001fd000000000000000000000000000002"
        )
        return dst + src + ETH_IPV6 + ip + tcp
    ihl = 5 + len(ip_options) // 4
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 0, 4242, 0x4000, 64, 6, 0, b"\n\0\0\1", b"\n\0\0\2"
    )
    return dst + src + ETH_IPV4 + ip + ip_options + tcp


def tso_header(gso_type: int, gso_size: int, frame: bytes) -> bytes:
    """The virtio-net header a sender with TSO puts before `frame` (an
    :func:`offload_tcp_segment`): `gso_type` (the venet ABI's VNET_GSO_*), `gso_size`
    payload bytes a frame, the TCP checksum to complete from the TCP header on."""
    from vbusfs.connector import venet as abi  # here: the tiny host's import stays cheap

    ip_len = (frame[14] & 15) * 4 if frame[12:14] == ETH_IPV4 else 40
    tcp = 14 + ip_len
    hdr_len = tcp + (frame[tcp + 12] >> 4) * 4
    return abi.vnet_header(abi.VNET_HDR_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, tcp, 16)


def serve_host(nic: object, ip: bytes, stop: threading.Event) -> None:
    """Answer ARP and ping on `nic` (a `vbusfs.client.Venet`) until `stop` is set."""
    mac: bytes = nic.mac  # type: ignore[attr-defined]
    while not stop.is_set():
        try:
            frame = nic.recv(timeout=0.2)  # type: ignore[attr-defined]
        except TimeoutError:
            continue
        answer = reply_to(frame, mac, ip)
        if answer is not None:
            nic.send(answer)  # type: ignore[attr-defined]
