"""Ring helpers for the venet devices: polling that never sleeps, and transmit paths
that hand completions back every N messages (venet's txmitigation).

A device loop on a shared event loop spins with :func:`poll_ready` first and sleeps in
its own event loop only if that found nothing, so it can tell a wait met by polling from
one that slept. :func:`receive_into_every` and :func:`receive_to_fd_every` are
``receive_into_nowait`` and ``receive_to_fd_nowait`` with the completions of a batch
handed back (and north signalled) every ``every`` messages instead of once.
"""

from __future__ import annotations

import time
from typing import Literal

from ._binding import E_TIMEDOUT, RECV, SEND, check, ffi, lib
from ._ring import FdBatch, Ring, _fileno, c_handle


def poll_ready(ring: Ring, op: Literal["receive", "send"], spin_us: int) -> bool:
    """Spin up to ``spin_us`` µs (in C, the GIL held) until a receive (or a send) on
    ``ring`` could proceed; True if it can.  Never sleeps; IoqClosed or IoqFault as the
    ring's waits raise them."""
    if isinstance(spin_us, bool) or not isinstance(spin_us, int) or spin_us < 0:
        raise ValueError(f"spin_us must be an int >= 0, not {spin_us!r}")
    h, code = c_handle(ring), RECV if op == "receive" else SEND
    deadline = time.perf_counter() + spin_us / 1e6
    while True:
        left = int((deadline - time.perf_counter()) * 1e6)
        if left <= 0:
            return bool(check(lib.ioq_ready(h, code)))
        rc = lib.ioq_wait(h, code, 0, left)
        if rc == E_TIMEDOUT:
            return False
        check(rc)
        # a wait also ends on a wake-up left over from earlier (its count is drained
        # now): only a ring that is ready ends the poll
        if check(lib.ioq_ready(h, code)):
            return True


def _check_every(max_messages: int, every: int) -> None:
    if max_messages < 1 or every < 1:
        raise ValueError("max_messages and every must be >= 1")


def receive_into_every(
    ring: Ring, buffer: bytearray | memoryview, max_messages: int, every: int
) -> tuple[list[int], int]:
    """South, to-south ring: copy up to ``max_messages`` messages back to back into
    ``buffer``; their completions go back to north every ``every`` messages.  Returns
    the lengths and how many times north was signalled.  IoqEmpty if there was none,
    IoqError (EMSGSIZE) if the first does not fit."""
    _check_every(max_messages, every)
    k = min(max_messages, ring.count)
    lens = ffi.new("uint32_t[]", k)
    signals = ffi.new("uint32_t[]", 1)
    buf = ffi.from_buffer(buffer, require_writable=True)
    got = check(lib.venet_recv_batch(c_handle(ring), buf, len(buf), lens, k, every, signals))
    return ffi.unpack(lens, got), int(signals[0])


def receive_to_fd_every(
    ring: Ring,
    fd: int,
    max_messages: int,
    every: int,
    *,
    min_length: int = 0,
    max_length: int = 2**32 - 1,
) -> tuple[FdBatch, int]:
    """South, to-south ring: ``receive_to_fd_nowait``, with the completions going back to
    north every ``every`` messages written.  Returns the batch and how many times north
    was signalled.  IoqEmpty if there was none."""
    _check_every(max_messages, every)
    if not 0 <= min_length <= max_length <= 2**32 - 1:
        raise ValueError("lengths must satisfy 0 <= min_length <= max_length < 2**32")
    counts = ffi.new("struct ioq_fd_counts *")
    signals = ffi.new("uint32_t[]", 1)
    got = check(
        lib.venet_recv_to_fd(
            c_handle(ring),
            _fileno(fd),
            min(max_messages, ring.count),
            min_length,
            max_length,
            every,
            counts,
            signals,
        )
    )
    return FdBatch(got, counts.dropped, counts.bad_size), int(signals[0])
