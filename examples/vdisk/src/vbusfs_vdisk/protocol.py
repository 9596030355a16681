"""The vdisk wire format: requests, responses and the device calls' replies, as bytes.

Pure: struct packing and validated parsing, no I/O, no vbusfs import, so the
device, the clients, the tests and a socket-based peer all share it.

A request is a 24-byte header, then (WRITE only) the data to write::

    u64 tag      chosen by the client, echoed in the response
    u64 offset   bytes from the start of the disk, a multiple of 512
    u32 length   bytes to read or write, a multiple of 512
    u16 op       READ 1, WRITE 2, FLUSH 3
    u16 flags    0 (reserved)

A response is a 16-byte header, then (a successful READ only) the data read::

    u64 tag      the request's
    u32 status   0, or the errno of the refusal
    u32 length   bytes of data after the header

All little-endian. `parse_request` checks the shape of a request (what needs no
disk to check) and raises `ProtocolError` with the errno the device answers;
the disk's own checks (range, read-only) are `vbusfs_vdisk.Disk`'s. Every
refusal, whatever its cause, is a response: a peer never sees a request
dropped or the device fail because of what it sent.

Errnos, in the order they are checked: EINVAL (a header shorter than 24
bytes, flags not 0), EOPNOTSUPP (an op that is not READ, WRITE or FLUSH),
EINVAL (a payload that does not match the op and length, an offset or length
not a multiple of 512, a FLUSH with an offset or a length), then the disk's:
EROFS (WRITE to a read-only disk), EINVAL (READ past the end, or more than the
response buffer holds), ENOSPC (WRITE past the end), and an I/O failure's own
errno (EIO ...).
"""

from __future__ import annotations

import errno
import struct
from typing import NamedTuple

#: interface version a client opens (`Client.open(interface_id, VERSION)`)
VERSION = 1
#: sector size: every offset and length is a multiple of it (also the reported block size)
SECTOR = 512

READ, WRITE, FLUSH = 1, 2, 3
OPS = {READ: "READ", WRITE: "WRITE", FLUSH: "FLUSH"}

REQUEST = struct.Struct("<QQIHH")  # tag, offset, length, op, flags
RESPONSE = struct.Struct("<QII")  # tag, status, length
REQUEST_SIZE = REQUEST.size  # 24
RESPONSE_SIZE = RESPONSE.size  # 16

# the device calls (`OpenInterface.call(function, data)`)
CAPACITY_CALL = 0  # no data in; CAPACITY_REPLY out
FLUSH_CALL = 1  # no data in; nothing out: every write so far is durable
CAPACITY_REPLY = struct.Struct("<QII")  # size in bytes, block size, flags
CAPACITY_READONLY = 1  # a flag of CAPACITY_REPLY

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1


class ProtocolError(Exception):
    """A request or response that breaks the wire format; `errno` is the answer to it.

    `tag` is the request's tag when the header could be read, else 0.
    """

    def __init__(self, code: int, message: str, tag: int = 0) -> None:
        super().__init__(code, message)
        self.errno = code
        self.tag = tag

    def __str__(self) -> str:
        return f"{self.args[1]} [{errno.errorcode.get(self.errno, self.errno)}]"


class Request(NamedTuple):
    """A parsed request; `payload` is a view of the WRITE data in the caller's buffer."""

    op: int
    tag: int
    offset: int
    length: int
    payload: memoryview


class Response(NamedTuple):
    """A parsed response; `data` is a view of the READ data in the caller's buffer."""

    tag: int
    status: int
    data: memoryview


class Capacity(NamedTuple):
    """What the CAPACITY call answers."""

    size: int
    block_size: int
    readonly: bool


# ---- requests ---------------------------------------------------------------------


def _check_fields(op: int, tag: int, offset: int, length: int) -> None:
    """The caller's values fit the header (a ValueError is a bug of the caller's)."""
    if not (0 <= tag <= U64_MAX and 0 <= offset <= U64_MAX and 0 <= length <= U32_MAX):
        raise ValueError("tag and offset must fit in 64 bits and length in 32, unsigned")
    if not 0 <= op <= 0xFFFF:
        raise ValueError(f"op must fit in 16 bits, not {op}")


def pack_request(
    op: int, tag: int, offset: int = 0, length: int = 0, payload: bytes = b""
) -> bytes:
    """A request as bytes; no check beyond the field widths (tests send bad ones on purpose)."""
    _check_fields(op, tag, offset, length)
    return REQUEST.pack(tag, offset, length, op, 0) + payload


def pack_request_into(
    buffer: memoryview | bytearray, op: int, tag: int, offset: int, length: int
) -> int:
    """Write a request header at the start of `buffer`; the payload, if any, goes after it
    (at `REQUEST_SIZE`). Returns the header's size."""
    _check_fields(op, tag, offset, length)
    REQUEST.pack_into(buffer, 0, tag, offset, length, op, 0)
    return REQUEST_SIZE


def read_request(tag: int, offset: int, length: int) -> bytes:
    return pack_request(READ, tag, offset, length)


def write_request(tag: int, offset: int, data: bytes) -> bytes:
    return pack_request(WRITE, tag, offset, len(data), data)


def flush_request(tag: int) -> bytes:
    return pack_request(FLUSH, tag)


def parse_request(request: memoryview | bytes | bytearray) -> Request:
    """The request in `request` (exactly one, header and payload); ProtocolError if malformed."""
    view = request if isinstance(request, memoryview) else memoryview(request)
    if len(view) < REQUEST_SIZE:
        raise ProtocolError(
            errno.EINVAL, f"a request is at least {REQUEST_SIZE} bytes, not {len(view)}"
        )
    tag, offset, length, op, flags = REQUEST.unpack_from(view)
    if flags:
        raise ProtocolError(errno.EINVAL, f"flags must be 0, not {flags:#x}", tag)
    if op not in OPS:
        raise ProtocolError(errno.EOPNOTSUPP, f"no op {op} (READ 1, WRITE 2, FLUSH 3)", tag)
    payload = view[REQUEST_SIZE:]
    if op == WRITE:
        if len(payload) != length:
            raise ProtocolError(
                errno.EINVAL, f"WRITE of {length} bytes carries {len(payload)} bytes", tag
            )
    elif payload:
        raise ProtocolError(errno.EINVAL, f"only a WRITE carries data ({len(payload)} bytes)", tag)
    if op == FLUSH:
        if offset or length:
            raise ProtocolError(errno.EINVAL, "a FLUSH has no offset and no length", tag)
    elif offset % SECTOR or length % SECTOR:
        raise ProtocolError(
            errno.EINVAL, f"offset {offset} and length {length} must be multiples of {SECTOR}", tag
        )
    return Request(op, tag, offset, length, payload)


# ---- responses ----------------------------------------------------------------------


def pack_response_into(
    buffer: memoryview | bytearray, tag: int, status: int = 0, length: int = 0
) -> int:
    """Write a response header at the start of `buffer`; returns the response's whole size
    (header plus `length` bytes of data, which the caller puts at `RESPONSE_SIZE`)."""
    RESPONSE.pack_into(buffer, 0, tag, status, length)
    return RESPONSE_SIZE + length


def pack_response(tag: int, status: int = 0, data: bytes = b"") -> bytes:
    return RESPONSE.pack(tag, status, len(data)) + data


def parse_response(response: memoryview | bytes | bytearray) -> Response:
    """The response in `response`; ProtocolError (EPROTO) if malformed."""
    view = response if isinstance(response, memoryview) else memoryview(response)
    if len(view) < RESPONSE_SIZE:
        raise ProtocolError(
            errno.EPROTO, f"a response is at least {RESPONSE_SIZE} bytes, not {len(view)}"
        )
    tag, status, length = RESPONSE.unpack_from(view)
    if len(view) != RESPONSE_SIZE + length:
        raise ProtocolError(
            errno.EPROTO,
            f"a response of {length} data bytes is {len(view) - RESPONSE_SIZE} bytes long",
            tag,
        )
    if status and length:
        raise ProtocolError(errno.EPROTO, f"an error response carries {length} bytes", tag)
    return Response(tag, status, view[RESPONSE_SIZE:])


# ---- the CAPACITY call ------------------------------------------------------------------


def pack_capacity(capacity: Capacity) -> bytes:
    flags = CAPACITY_READONLY if capacity.readonly else 0
    return CAPACITY_REPLY.pack(capacity.size, capacity.block_size, flags)


def parse_capacity(reply: bytes) -> Capacity:
    if len(reply) != CAPACITY_REPLY.size:
        raise ProtocolError(
            errno.EPROTO, f"a CAPACITY reply is {CAPACITY_REPLY.size} bytes, not {len(reply)}"
        )
    size, block_size, flags = CAPACITY_REPLY.unpack(reply)
    return Capacity(size, block_size, bool(flags & CAPACITY_READONLY))


__all__ = [
    "CAPACITY_CALL",
    "CAPACITY_READONLY",
    "CAPACITY_REPLY",
    "FLUSH",
    "FLUSH_CALL",
    "OPS",
    "READ",
    "REQUEST",
    "REQUEST_SIZE",
    "RESPONSE",
    "RESPONSE_SIZE",
    "SECTOR",
    "VERSION",
    "WRITE",
    "Capacity",
    "ProtocolError",
    "Request",
    "Response",
    "flush_request",
    "pack_capacity",
    "pack_request",
    "pack_request_into",
    "pack_response",
    "pack_response_into",
    "parse_capacity",
    "parse_request",
    "parse_response",
    "read_request",
    "write_request",
]
