"""BlockServer: a request/response block protocol's common requests served in C.

A block device's requests mostly move bytes between its backing and a ring slot:
READ `length` bytes at `offset` into the response, or WRITE the request's data at
`offset`. :meth:`BlockServer.serve` does exactly that for a whole stream of
requests without returning to Python: a batch per step, one signal per
sub-batch, waiting in C with the GIL released (spinning first when asked). A
request it does not take (another op, flags, a misaligned or out-of-range
request, a response slot too small, a write to a read-only backing, an I/O
error) stays first on the request ring and `serve` returns: the device's own
Python code answers it (its errno, its counters) and calls `serve` again.

The wire layout is described, not fixed: :class:`BlockLayout` says where the
tag, offset, length, op and flags of a request header sit, and where the tag,
status and length of a response header sit (little-endian, 64-bit tag and
offset, 32-bit length and status, 16-bit op and flags).
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass

from ._binding import E_TIMEDOUT, EINTR, Spin, check, ffi, lib, spin_arg
from ._ioq import Ioq
from ._ring import c_handle


@dataclass(frozen=True)
class BlockLayout:
    """Where each field of a block protocol's headers sits (byte offsets).

    A request is `request_size` header bytes (a WRITE's data after them); a response
    is `response_size` header bytes (a READ's data after them). Offsets and lengths
    are multiples of `sector` (a power of two); a request with non-zero flags is
    left to Python.
    """

    request_size: int
    response_size: int
    op_read: int
    op_write: int
    tag_at: int
    offset_at: int
    length_at: int
    op_at: int
    flags_at: int
    resp_tag_at: int
    resp_status_at: int
    resp_length_at: int
    sector: int = 512


@dataclass(frozen=True)
class BlockCounts:
    """What a server has served since it was made (requests left to Python excluded)."""

    reads: int
    writes: int
    read_bytes: int
    written_bytes: int
    batches: int  # steps that served at least one request
    signals: int  # sub-batches handed back (one signal on each ring)
    slept: int  # waits that found nothing ready at first


class BlockServer:
    """READs and WRITEs of `size` bytes of `fd` served in C (see the module).

    `map=True` maps the file (MAP_SHARED: a memfd, or a file that holds `size` bytes
    when the server is made and is never shortened while mapped); `map=False` reads
    and writes it with pread/pwrite, where a read past the file's end gives zeros. The fd
    is duplicated: the caller keeps its own. ValueError for a layout C refuses (or a
    mapped file too short); OSError when the fd cannot be duplicated or mapped.
    """

    def __init__(
        self, fd: int, size: int, layout: BlockLayout, *, readonly: bool = False, map: bool = True
    ) -> None:
        c_layout = ffi.new("struct blk_layout *")
        for name, value in vars(layout).items():
            if not isinstance(value, int) or not 0 <= value < 2**32:
                raise ValueError(f"layout field {name} must be an int in 0..2**32-1")
            setattr(c_layout, name, value)
        if layout.op_read > 0xFFFF or layout.op_write > 0xFFFF:
            raise ValueError("op_read and op_write must fit in 16 bits")
        if not 0 < size < 2**62:
            raise ValueError(f"size must be 1..2**62-1, not {size}")
        out = ffi.new("struct blk **")
        rc = lib.blk_new(fd, size, int(readonly), int(map), c_layout, out)
        if rc == lib.IOQ_E_INVAL:
            raise ValueError(
                f"the block layout or size is not one the server can use (a mapped file "
                f"must hold at least size bytes): size {size}, {layout}"
            )
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc))
        self._b = ffi.gc(out[0], lib.blk_free)
        self._closed = False
        self.size = size
        self.layout = layout
        self.readonly = readonly
        self._counts = ffi.new("struct blk_counts *")

    def serve(
        self,
        requests: Ioq,
        responses: Ioq,
        *,
        batch: int = 64,
        every: int = 16,
        timeout: float | None = None,
        spin_us: Spin = 0,
    ) -> None:
        """Serve `requests` (south side, to_south) into `responses` (south side,
        to_north) until a request the server does not take is first on `requests`
        (it returns; the request is still there, none is acquired).

        Idle, it waits with the GIL released: IoqClosed when the rings' watched peer
        hangs up, TimeoutError after `timeout` seconds with nothing to do, IoqFault
        when a ring broke."""
        if batch < 1 or every < 0:
            raise ValueError("batch must be >= 1 and every >= 0")
        if self._closed:
            raise ValueError("the block server is closed")
        spin = spin_arg(spin_us)
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        b, counts = self._b, self._counts
        while True:
            rc = lib.blk_serve(
                b, c_handle(requests), c_handle(responses), batch, every, ms, spin, counts
            )
            if rc == EINTR:
                continue  # a signal's handler has run: serve on (PEP 475)
            if rc == E_TIMEDOUT:
                raise TimeoutError(errno.ETIMEDOUT, "no request came in time")
            check(rc)
            return

    def counts(self) -> BlockCounts:
        c = self._counts
        return BlockCounts(
            int(c.reads),
            int(c.writes),
            int(c.read_bytes),
            int(c.written_bytes),
            int(c.batches),
            int(c.signals),
            int(c.slept),
        )

    def close(self) -> None:
        """Unmap and close the server's fd now (else when it is collected); idempotent."""
        if not self._closed:
            self._closed = True
            ffi.release(self._b)
