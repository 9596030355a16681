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
