"""The venet ABI (behaviour §7.4): the numbers a venet device and its driver agree on.

Data only, imported by the device side (`vbusfs.classes`) and the driver side
(`vbusfs.client`, `vbusfs enet`) alike, so the two cannot drift apart. It must import
nothing.

The function numbers, capability groups and bits are the original's (`venet.h`); the
per-frame header with SG granted is the virtio-net header a TAP opened with
IFF_VNET_HDR reads and writes (`linux/virtio_net.h`), a documented deviation from the
original's `venet_sg` descriptors (behaviour §7.4).
"""

from __future__ import annotations

#: the interface type every venet device offers its buses
INTERFACE_TYPE = "virtual-ethernet"
#: the only venet version there is (`open` takes it)
VERSION = 1

# device calls (function numbers); any other is EINVAL (the original's 5..7, the
# PMTD, event-queue and L4RO queries, belong to capabilities never granted here)
LINKUP = 0
LINKDOWN = 1
MACQUERY = 2
NEGCAP = 3
FLUSHRX = 4

# queue indices: RX carries frames device -> client, TX client -> device
RX_QUEUE = 0
TX_QUEUE = 1

#: an Ethernet header (destination, source, ethertype): the shortest frame
HEADER = 14
#: the default MTU, and so the longest bare frame
MTU = 1500
MAX_FRAME = MTU + HEADER
#: the `mtu` attribute's bounds
MIN_MTU = 68
MAX_MTU = 65535

# ---- NEGCAP: request and reply are both <II (gid, bits), little-endian ---------
CAPS_FORMAT = "<II"
CAPS_LEN = 8

CAP_GROUP_SG = 0
CAP_GROUP_EVENTQ = 1
CAP_GROUP_L4RO = 2

# group SG
CAP_SG = 1 << 0
CAP_TSO4 = 1 << 1
CAP_TSO6 = 1 << 2
CAP_ECN = 1 << 3
CAP_UFO = 1 << 4
CAP_PMTD = 1 << 5

# group EVENTQ
CAP_EVQ_LINKSTATE = 1 << 0
CAP_EVQ_TXC = 1 << 1

#: what vbusfs's venet classes grant, per group (an unknown group: nothing)
SUPPORTED = {
    CAP_GROUP_SG: CAP_SG | CAP_TSO4 | CAP_TSO6 | CAP_ECN,
    CAP_GROUP_EVENTQ: CAP_EVQ_LINKSTATE,
    CAP_GROUP_L4RO: 0,
}


def negcap_request(gid: int, bits: int) -> bytes:
    """The 8 bytes NEGCAP takes."""
    return gid.to_bytes(4, "little") + bits.to_bytes(4, "little")


def negcap_reply(data: bytes) -> tuple[int, int]:
    """(gid, granted bits) from NEGCAP's 8-byte reply."""
    if len(data) != CAPS_LEN:
        raise ValueError(f"a NEGCAP reply is {CAPS_LEN} bytes, not {len(data)}")
    return int.from_bytes(data[:4], "little"), int.from_bytes(data[4:], "little")


# ---- frames with SG granted: a virtio-net header first ---------------------------
#: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little-endian)
VNET_HDR_FORMAT = "<BBHHHH"
VNET_HDR_LEN = 10
VNET_HDR_F_NEEDS_CSUM = 1
VNET_HDR_F_DATA_VALID = 2
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_GSO_UDP = 3
VNET_GSO_TCPV6 = 4
VNET_GSO_ECN = 0x80
#: the longest frame after the header: a 64 KiB IP packet, Ethernet header, VLAN tag
MAX_GSO_FRAME = 65550
#: the longest message on a ring with SG granted (receive buffers this large take any)
MAX_SG_MESSAGE = VNET_HDR_LEN + MAX_GSO_FRAME
#: a driver's ring slot without SG: any bare frame of the default MTU fits
SLOT_SIZE = 2048


def sg_granted(granted: dict[int, int]) -> bool:
    """Do frames carry a virtio-net header? (`granted`: capability group -> bits)"""
    return bool(granted.get(CAP_GROUP_SG, 0) & CAP_SG)


def ring_slot_size(granted: dict[int, int], slot_size: int | None = None) -> int:
    """The ring slot a driver makes: `slot_size` if given, else one that takes any frame
    the negotiated format allows."""
    return slot_size or (MAX_SG_MESSAGE if sg_granted(granted) else SLOT_SIZE)


# TUNSETOFFLOAD bits (a TAP's side of the SG group): what the reader of a TAP takes
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08


def tun_offloads(granted_sg: int) -> int | None:
    """TUNSETOFFLOAD bits for a granted SG group (None: bare frames, no header)."""
    if not granted_sg & CAP_SG:
        return None
    bits = TUN_F_CSUM
    if granted_sg & CAP_TSO4:
        bits |= TUN_F_TSO4
    if granted_sg & CAP_TSO6:
        bits |= TUN_F_TSO6
    if granted_sg & CAP_ECN and bits & (TUN_F_TSO4 | TUN_F_TSO6):
        bits |= TUN_F_TSO_ECN
    return bits


def vnet_header(
    flags: int = 0,
    gso_type: int = VNET_GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    """A 10-byte virtio-net header (all zero: an ordinary, fully checksummed frame)."""
    fields = (hdr_len, gso_size, csum_start, csum_offset)
    return bytes((flags, gso_type)) + b"".join(f.to_bytes(2, "little") for f in fields)


# ---- events (EVQ_LINKSTATE granted) ----------------------------------------------
#: the `device_kind` of the connector's device event telling the carrier; data {"up": bool}
EVENT_LINKSTATE = "linkstate"

__all__ = [
    "CAPS_FORMAT",
    "CAPS_LEN",
    "CAP_ECN",
    "CAP_EVQ_LINKSTATE",
    "CAP_EVQ_TXC",
    "CAP_GROUP_EVENTQ",
    "CAP_GROUP_L4RO",
    "CAP_GROUP_SG",
    "CAP_PMTD",
    "CAP_SG",
    "CAP_TSO4",
    "CAP_TSO6",
    "CAP_UFO",
    "EVENT_LINKSTATE",
    "FLUSHRX",
    "HEADER",
    "INTERFACE_TYPE",
    "LINKDOWN",
    "LINKUP",
    "MACQUERY",
    "MAX_FRAME",
    "MAX_GSO_FRAME",
    "MAX_MTU",
    "MAX_SG_MESSAGE",
    "MIN_MTU",
    "MTU",
    "NEGCAP",
    "RX_QUEUE",
    "SLOT_SIZE",
    "SUPPORTED",
    "TUN_F_CSUM",
    "TUN_F_TSO4",
    "TUN_F_TSO6",
    "TUN_F_TSO_ECN",
    "TX_QUEUE",
    "VERSION",
    "VNET_GSO_ECN",
    "VNET_GSO_NONE",
    "VNET_GSO_TCPV4",
    "VNET_GSO_TCPV6",
    "VNET_GSO_UDP",
    "VNET_HDR_FORMAT",
    "VNET_HDR_F_DATA_VALID",
    "VNET_HDR_F_NEEDS_CSUM",
    "VNET_HDR_LEN",
    "negcap_reply",
    "negcap_request",
    "ring_slot_size",
    "sg_granted",
    "tun_offloads",
    "vnet_header",
]
