"""Parsing and rendering of the values venet attributes hold (strict, EINVAL on junk)."""

from __future__ import annotations

import random
import re

from vbusfs.model import InvalidValue

_MAC = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")
_UINT = re.compile(r"[0-9]+")
U32_MAX = (1 << 32) - 1


def parse_mac(text: str) -> bytes:
    if not _MAC.fullmatch(text):
        raise InvalidValue(f"{text!r} is not a MAC address (six hex octets separated by ':')")
    return bytes(int(part, 16) for part in text.split(":"))


def format_mac(mac: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in mac)


def random_mac(rng: random.Random) -> bytes:
    """A random locally administered unicast address."""
    octets = bytearray(rng.getrandbits(8) for _ in range(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return bytes(octets)


def parse_bool(text: str) -> bool:
    if text == "1":
        return True
    if text == "0":
        return False
    raise InvalidValue(f"{text!r} is neither 0 nor 1")


def parse_u32(text: str) -> int:
    if not _UINT.fullmatch(text) or int(text) > U32_MAX:
        raise InvalidValue(f"{text!r} is not a non-negative integer below 2^32")
    return int(text)
