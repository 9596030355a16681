"""The connector's messages: one JSON object per SOCK_SEQPACKET datagram.

File descriptors (a queue's ring, data segment and eventfds) travel beside
a message as SCM_RIGHTS. Bytes (device call data) travel as base64 text.
Requests carry a `seq` their reply repeats; events carry `event`.

How a client finds the daemon: the mount's root directory has the extended
attribute `user.vbusfs.connector`, whose value is the path of the daemon's
socket. It works from any mount namespace that sees the mount.
"""

from __future__ import annotations

import base64
import json
from typing import Any

XATTR = "user.vbusfs.connector"
MAX_MESSAGE = 65536
MAX_FDS = 8
PROTOCOL = 1


class WireError(Exception):
    """A message that is not one."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes is over {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"not a connector message: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("a connector message is a JSON object")
    return message


def pack_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unpack_bytes(text: Any) -> bytes:
    if not isinstance(text, str):
        raise WireError("bytes travel as base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise WireError(f"bad base64: {exc}") from None
