"""A disk as its clients see it: a backing, read-only or not, and the request handler.

`Disk.handle(request, response)` serves one request of the wire format
(`vbusfs_vdisk.protocol`) into a response buffer and returns the response's
length. It is the whole data path of the device, used as is by the ring
connection and by anything else that carries the same protocol (the
benchmark's socket peers): every malformed or refused request becomes an
error response, and only a response buffer too small for a header (which the
device's queue limits rule out) raises.
"""

from __future__ import annotations

import errno

from vbusfs.ioq import BlockLayout, BlockServer  # not vbusfs.device: clients import Disk too

from ._backing import Backing, MemoryBacking
from .protocol import (
    FLUSH,
    READ,
    REQUEST,
    REQUEST_SIZE,
    RESPONSE,
    RESPONSE_SIZE,
    SECTOR,
    WRITE,
    Capacity,
    ProtocolError,
    parse_request,
)

#: where each header field sits, for the framework's C block server
BLOCK_LAYOUT = BlockLayout(
    request_size=REQUEST_SIZE,
    response_size=RESPONSE_SIZE,
    op_read=READ,
    op_write=WRITE,
    tag_at=0,
    offset_at=8,
    length_at=16,
    op_at=20,
    flags_at=22,
    resp_tag_at=0,
    resp_status_at=8,
    resp_length_at=12,
    sector=SECTOR,
)

_unpack_request = REQUEST.unpack_from
_pack_response = RESPONSE.pack_into


class Disk:
    """A backing and the rules a client's requests meet; counts what it serves."""

    def __init__(self, backing: Backing, *, readonly: bool = False) -> None:
        self.backing = backing
        self.size = backing.size
        self.readonly = readonly
        self.reads = self.writes = self.flushes = self.errors = 0
        self.read_bytes = self.written_bytes = 0
        self._read_into = backing.read_into  # bound once: the per-request path skips lookups
        self._servers: list[BlockServer] = []

    def block_server(self) -> BlockServer:
        """A C server of this disk's valid READs and WRITEs (the same rules as `handle`:
        whatever it leaves, `handle` answers); its counts join `stats`."""
        backing = self.backing
        server = BlockServer(
            backing.fd,
            self.size,
            BLOCK_LAYOUT,
            readonly=self.readonly,
            # memory is mapped; a file is read and written in place (it may shrink)
            map=isinstance(backing, MemoryBacking),
        )
        self._servers.append(server)
        return server

    def capacity(self) -> Capacity:
        return Capacity(self.size, SECTOR, self.readonly)

    def flush(self) -> None:
        """Make every write so far durable (the FLUSH call and op)."""
        self.backing.flush()
        self.flushes += 1

    def stats(self) -> dict[str, int]:
        fast = [server.counts() for server in self._servers]
        return {
            "reads": self.reads + sum(c.reads for c in fast),
            "writes": self.writes + sum(c.writes for c in fast),
            "flushes": self.flushes,
            "errors": self.errors,
            "read_bytes": self.read_bytes + sum(c.read_bytes for c in fast),
            "written_bytes": self.written_bytes + sum(c.written_bytes for c in fast),
        }

    def refuse(self, response: memoryview, tag: int, code: int) -> int:
        """Write an error response for request `tag`; its length."""
        self.errors += 1
        _pack_response(response, 0, tag, code, 0)
        return RESPONSE_SIZE

    def handle(self, request: memoryview, response: memoryview) -> int:
        """Serve one request into `response`; returns the response's length."""
        if len(request) >= REQUEST_SIZE:
            tag, offset, length, op, flags = _unpack_request(request)
            # the common cases first, checked in full here; everything else goes
            # through parse_request, which names the fault
            if not flags and not (offset | length) % SECTOR:
                if op == READ and len(request) == REQUEST_SIZE:
                    # _read, inlined: the commonest request, one call fewer
                    end = RESPONSE_SIZE + length
                    if offset + length > self.size or end > len(response):
                        return self.refuse(response, tag, errno.EINVAL)
                    try:
                        self._read_into(response[RESPONSE_SIZE:end], offset)
                    except OSError as exc:
                        return self.refuse(response, tag, exc.errno or errno.EIO)
                    self.reads += 1
                    self.read_bytes += length
                    _pack_response(response, 0, tag, 0, length)
                    return end
                if op == WRITE and len(request) == REQUEST_SIZE + length:
                    return self._write(request[REQUEST_SIZE:], response, tag, offset)
        try:
            parsed = parse_request(request)
        except ProtocolError as exc:
            return self.refuse(response, exc.tag, exc.errno)
        if parsed.op == FLUSH:
            try:
                self.flush()
            except OSError as exc:
                return self.refuse(response, parsed.tag, exc.errno or errno.EIO)
            _pack_response(response, 0, parsed.tag, 0, 0)
            return RESPONSE_SIZE
        # (the fast path above takes every valid READ and WRITE; kept for clarity)
        if parsed.op == READ:
            return self._read(response, parsed.tag, parsed.offset, parsed.length)
        return self._write(parsed.payload, response, parsed.tag, parsed.offset)

    def _read(self, response: memoryview, tag: int, offset: int, length: int) -> int:
        if offset + length > self.size or RESPONSE_SIZE + length > len(response):
            return self.refuse(response, tag, errno.EINVAL)
        try:
            self.backing.read_into(response[RESPONSE_SIZE : RESPONSE_SIZE + length], offset)
        except OSError as exc:
            return self.refuse(response, tag, exc.errno or errno.EIO)
        self.reads += 1
        self.read_bytes += length
        _pack_response(response, 0, tag, 0, length)
        return RESPONSE_SIZE + length

    def _write(self, data: memoryview, response: memoryview, tag: int, offset: int) -> int:
        if self.readonly:
            return self.refuse(response, tag, errno.EROFS)
        if offset + len(data) > self.size:
            return self.refuse(response, tag, errno.ENOSPC)
        try:
            self.backing.write_from(data, offset)
        except OSError as exc:
            return self.refuse(response, tag, exc.errno or errno.EIO)
        self.writes += 1
        self.written_bytes += len(data)
        _pack_response(response, 0, tag, 0, 0)
        return RESPONSE_SIZE
