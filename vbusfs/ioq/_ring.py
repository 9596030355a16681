"""The ring: one side's handle on an ioq, and everything it does without waiting.

Lifetime (create on north, attach on south, close, peer watching), the data
path that never blocks (single, batched and packed sends and receives, the
transfers between a ring and a file descriptor), zero-copy acquire/commit and
readiness.  The waiting faces build on it: blocking in ``_ioq``, trio in
``_trio``; the raw index operations live in ``lowlevel``.

It must never hand out a pointer into shared memory that can outlive the
mapping (views come from a Python mmap, which refuses to unmap while they
exist), and a ring must never be used by two threads or tasks at once.
"""

from __future__ import annotations

import array
import contextlib
import errno
import mmap
import select
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple, Self

from ._binding import (
    DIRECTIONS,
    E_MSGSIZE,
    FD_BATCH,
    MAX_COUNT,
    MAX_DATA,
    NORTH,
    RECV,
    SEND,
    U32,
    U32_MAX,
    check,
    ffi,
    lib,
    raise_code,
)
from ._errors import IoqClosed
from ._zerocopy import ZeroCopy

if TYPE_CHECKING:
    from ._binding import IoqPtr, U32Array

Side = Literal["north", "south"]
Direction = Literal["to_south", "to_north"]

# A single receive goes through one C call into this private buffer, then to
# bytes (two copies: cheaper than a second call into C for small messages); a
# message that does not fit, and every batch, is copied once from the data segment.
RX = 16384


class IoqFds(NamedTuple):
    """The four file descriptors north hands to south, in the order attach takes them."""

    ring: int
    data: int
    to_south: int  # eventfd that wakes south (not in semaphore mode)
    to_north: int  # Unix datagram socket south sends on to wake north (behaviour §7.3)


class FdBatch(NamedTuple):
    """What one call between a ring and a file descriptor did."""

    messages: int  # consumed from the ring (receive_to_fd) or sent on it (send_from_fd)
    dropped: int  # receive_to_fd: consumed, but write() failed or was short
    bad_size: int  # consumed or read, discarded: length outside the allowed range


def _fileno(fd: int) -> int:
    if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
        raise ValueError(f"fd must be an open file descriptor (an int >= 0), not {fd!r}")
    return fd


def _hup_events(peer: int | socket.socket) -> tuple[int, int]:
    if isinstance(peer, socket.socket):
        return peer.fileno(), select.POLLRDHUP | select.POLLHUP
    return peer, select.POLLIN  # a pidfd turns readable when its process exits


def c_handle(ring: Ring) -> IoqPtr:
    """The C handle of an open ring, for the package's other C calls (the switch,
    the low-level operations); IoqClosed once it is closed."""
    h = ring._h
    if h is None:
        raise IoqClosed(errno.EBADF, "ioq is closed")
    return h


class Ring(ZeroCopy):
    """One side's handle on an ioq, without a waiting face: the base of
    :class:`vbusfs.ioq.Ioq` (blocking) and :class:`vbusfs.ioq.AsyncIoq` (trio).

    Make one with :meth:`create` (north) or :meth:`attach` (south).  ``count`` (its
    descriptors) and ``slot_size`` (the data segment's bytes per descriptor, as north
    laid it out) are the same on both sides.
    """

    def __init__(self, handle: IoqPtr, direction: Direction) -> None:
        # private: use create() or attach().  A handle dropped without close()
        # is still unmapped and its fds closed, by cffi when it is collected.
        self._h: IoqPtr | None = ffi.gc(handle, lib.ioq_close)
        self.direction: Direction = direction
        self.side: Side = "north" if lib.ioq_side(handle) == NORTH else "south"
        self.count: int = lib.ioq_count_slots(handle)
        self._data_len: int = lib.ioq_data_len(handle)
        fds = ffi.new("int[4]")
        lib.ioq_fds(handle, fds)
        self.fds = IoqFds(*fds)
        self.sender: bool = (self.side == "north") == (direction == "to_south")
        self._op = SEND if self.sender else RECV
        #: data bytes per descriptor: north's slot size (data_len // count), on both sides
        self.slot_size: int = self._data_len // self.count
        #: largest message one send may carry: a slot (south: into a buffer north
        #: posted, which an honest north makes one slot long)
        self.max_message: int = self.slot_size
        self._mm = mmap.mmap(self.fds.data, self._data_len)
        self._whole = memoryview(self._mm)
        self._rx = ffi.new("char[]", RX)
        self._offs = ffi.new("uint64_t[]", self.count)
        self._lens = ffi.new("uint32_t[]", self.count)
        self._offs_mv = memoryview(ffi.buffer(self._offs)).cast("Q")
        self._lens_mv = memoryview(ffi.buffer(self._lens)).cast(U32)
        self._fd_counts = ffi.new("struct ioq_fd_counts *")
        self._views: list[memoryview] = []
        self._hup_fd = -1
        self._hup_events = 0
        # the fd the trio face sleeps on (owned by the C handle), found at its first wait
        self._wait_fd = -1

    # ---- lifetime ---------------------------------------------------------

    @classmethod
    def create(
        cls, count: int = 64, slot_size: int = 2048, *, direction: Direction = "to_south"
    ) -> Self:
        """North: allocate a ring of ``count`` descriptors, each with a ``slot_size`` buffer."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'to_south' or 'to_north', not {direction!r}")
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be 1..{MAX_COUNT}, not {count}")
        if slot_size < 1 or count * slot_size > MAX_DATA:
            raise ValueError(f"slot_size must be >= 1 with count * slot_size <= {MAX_DATA}")
        out = ffi.new("struct ioq **")
        check(lib.ioq_north_create(count, count * slot_size, DIRECTIONS[direction], out))
        return cls(out[0], direction)

    @classmethod
    def attach(cls, fds: IoqFds | Sequence[int], *, direction: Direction) -> Self:
        """South: map and validate the ring north created (EINVAL if it is not one).

        The handle keeps duplicates; the caller still owns and closes ``fds``.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'to_south' or 'to_north', not {direction!r}")
        ring, data, to_south, to_north = (int(fd) for fd in fds)
        if min(ring, data, to_south, to_north) < 0:
            raise ValueError("file descriptors must be >= 0")
        out = ffi.new("struct ioq **")
        check(lib.ioq_south_attach(ring, data, to_south, to_north, DIRECTIONS[direction], out))
        return cls(out[0], direction)

    def watch_peer(self, peer: int | socket.socket | None) -> None:
        """Let waits end with :class:`IoqClosed` when ``peer`` hangs up.

        ``peer`` is a pidfd (``os.pidfd_open``) or a connected socket; None stops watching.
        The caller keeps it open while it is watched.
        """
        self._wait_fd = -1
        if peer is None:
            self._hup_fd, self._hup_events = -1, 0
        else:
            self._hup_fd, self._hup_events = _hup_events(peer)
        lib.ioq_watch(self._handle(), self._hup_fd, self._hup_events)

    @property
    def closed(self) -> bool:
        return self._h is None

    def close(self) -> None:
        """Unmap and close everything this handle owns.  Idempotent."""
        if self._h is None:
            return
        self._release_views()
        ffi.release(self._h)  # runs ioq_close now, and never again
        self._h = None
        self._whole.release()
        # if views still exist, the mapping goes away with the last one
        with contextlib.suppress(BufferError):
            self._mm.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self) -> IoqPtr:
        return c_handle(self)

    @property
    def spin_budget_us(self) -> float:
        """The adaptive spin budget this handle's waits learned so far (µs; 0 unless
        they were given ``spin_us="adaptive"``)."""
        return lib.ioq_spin_budget(self._handle()) / 1000

    @property
    def faulted(self) -> bool:
        return self._h is not None and bool(lib.ioq_faulted(self._h))

    @property
    def data(self) -> memoryview:
        """The whole data segment, zero-copy (north's slot i starts at i * max_message)."""
        self._handle()
        return memoryview(self._mm)

    # ---- data path, never blocking -------------------------------------------

    def _send1(self, message: bytes | bytearray | memoryview) -> int:
        # the C return code, unchecked: the blocking form waits on IOQ_E_FULL
        # without paying for an exception
        h = self._handle()
        n = len(message)
        if n > self.max_message:
            raise ValueError(f"message of {n} bytes exceeds {self.max_message}")
        buf = message if type(message) is bytes else ffi.from_buffer(message)
        return lib.ioq_send_one(h, buf, n, 1)

    def send_nowait(self, message: bytes | bytearray | memoryview) -> None:
        """Send one message (one copy, into the data segment); IoqFull if no room."""
        check(self._send1(message))

    def _send_packed(self, packed: bytes, lengths: U32Array | list[int], n: int) -> int:
        return lib.ioq_send_batch(self._handle(), packed, lengths, min(n, self.count), 1)

    def send_batch_nowait(self, messages: Sequence[bytes]) -> int:
        """Send as many of ``messages`` as fit, in order, for one call into C.

        Returns how many were sent; IoqFull if none could be.
        """
        return check(self._send_many(messages))

    def _send_many(self, messages: Sequence[bytes]) -> int:
        lengths = array.array(U32, map(len, messages))
        if not lengths:
            raise ValueError("no messages")
        if max(lengths) > self.max_message:
            raise ValueError(f"every message must be at most {self.max_message} bytes")
        lens = ffi.from_buffer("uint32_t[]", lengths)
        return self._send_packed(b"".join(messages), lens, len(lengths))

    def send_packed_nowait(self, packed: bytes, lengths: Sequence[int] | array.array[int]) -> int:
        """Like :meth:`send_batch_nowait` for messages already laid back to back in ``packed``.

        ``lengths`` as an ``array.array("I")`` is passed to C without conversion.
        """
        n = len(lengths)
        if n == 0:
            raise ValueError("no messages")
        if sum(lengths) != len(packed):
            # C trusts this sum: it decides how far into packed it reads
            raise ValueError("lengths do not add up to len(packed)")
        if max(lengths) > self.max_message or min(lengths) < 0:
            raise ValueError(f"every length must be 0..{self.max_message}")
        if isinstance(lengths, array.array) and lengths.itemsize == 4 and lengths.typecode in "IL":
            lens: U32Array | list[int] = ffi.from_buffer("uint32_t[]", lengths)
        else:
            lens = list(lengths)
        return check(self._send_packed(packed, lens, n))

    def _recv1(self) -> bytes | int:
        h = self._handle()
        rc = lib.ioq_recv_one(h, self._rx, RX, 1)
        if rc >= 0:
            return ffi.unpack(self._rx, rc)
        if rc != E_MSGSIZE:
            return rc
        got = self._recv_large(1)
        return got if isinstance(got, int) else got[0]

    def receive_nowait(self) -> bytes:
        """Receive one message; IoqEmpty if there is none."""
        got = self._recv1()
        if isinstance(got, int):
            raise_code(got)
        return got

    def _recv_many(self, max_messages: int, max_length: int | None = None) -> list[bytes] | int:
        # each message is copied once, straight out of the data segment: two calls
        # into C per batch, and cheaper per message than cutting up a copy
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        return self._recv_large(max_messages, max_length)

    def _recv_large(self, max_messages: int, max_length: int | None = None) -> list[bytes] | int:
        h = self._handle()
        self._not_acquiring()
        k = lib.ioq_acquire(h, RECV, min(max_messages, self.count), self._offs, self._lens)
        if k < 0:
            return k
        mm = self._mm
        # descriptors may overlap: without a cap, k of them spanning the whole
        # segment would cost k copies of it
        cap = U32_MAX if max_length is None else max_length
        out = [
            mm[o : o + n] if n <= cap else b""
            for o, n in zip(ffi.unpack(self._offs, k), ffi.unpack(self._lens, k), strict=True)
        ]
        check(lib.ioq_commit(h, RECV, k, ffi.NULL, 1))
        return out

    def receive_batch_nowait(
        self, max_messages: int = 64, *, max_length: int | None = None
    ) -> list[bytes]:
        """Receive up to ``max_messages`` messages in one call into C; IoqEmpty if none.

        A message longer than ``max_length`` is consumed uncopied and comes back as
        ``b""``: what a south side facing a hostile peer asks for, so that a batch
        never costs more than ``max_messages * max_length`` bytes.
        """
        got = self._recv_many(max_messages, max_length)
        if isinstance(got, int):
            raise_code(got)
        return got

    def discard_nowait(self, max_messages: int = 64) -> int:
        """Consume up to ``max_messages`` received messages without copying them;
        return how many.  IoqEmpty if there was none."""
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        h = self._handle()
        self._not_acquiring()
        k = check(lib.ioq_acquire(h, RECV, min(max_messages, self.count), self._offs, self._lens))
        check(lib.ioq_commit(h, RECV, k, ffi.NULL, 1))
        return k

    def receive_into_nowait(
        self, buffer: bytearray | memoryview, max_messages: int = 64
    ) -> list[int]:
        """Copy up to ``max_messages`` messages back to back into ``buffer``; return their lengths.

        The fastest batched form: one call into C, one copy, no object per message.
        IoqEmpty if there is none; an IoqError (EMSGSIZE) if the first does not fit.
        """
        h = self._handle()
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        k = min(max_messages, self.count)
        buf = ffi.from_buffer(buffer, require_writable=True)
        got = check(lib.ioq_recv_batch(h, buf, len(buf), self._lens, k, 1))
        return ffi.unpack(self._lens, got)

    def receive_to_fd_nowait(
        self,
        fd: int,
        max_messages: int = 64,
        *,
        min_length: int = 0,
        max_length: int | None = None,
    ) -> FdBatch:
        """South, to-south ring: write up to ``max_messages`` messages to ``fd``, one write each.

        Each goes straight from the data segment to ``fd`` (no copy through Python).
        Every message taken is consumed: one whose write fails (a full TAP queue, any
        error) is counted as dropped, one outside ``min_length..max_length`` as bad_size.
        IoqEmpty if there was none.
        """
        h = self._handle()
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        upper = U32_MAX if max_length is None else max_length
        if not 0 <= min_length <= upper <= U32_MAX:
            raise ValueError(f"lengths must satisfy 0 <= min_length <= max_length <= {U32_MAX}")
        fd = _fileno(fd)
        counts = self._fd_counts
        got = check(
            lib.ioq_recv_to_fd(h, fd, min(max_messages, self.count), min_length, upper, counts)
        )
        return FdBatch(got, counts.dropped, counts.bad_size)

    def send_from_fd_nowait(
        self, fd: int, max_messages: int = 64, *, max_length: int | None = None
    ) -> FdBatch:
        """South, to-north ring: read up to ``max_messages`` frames from ``fd`` into posted buffers.

        One read() per frame straight into the data segment, then one signal to north.
        ``fd`` must be non-blocking and keep message boundaries (a TAP, a SOCK_SEQPACKET
        socket).  A frame longer than ``max_length`` or than its buffer is read and
        discarded (bad_size).  Stops when ``fd`` has no more frames (``messages`` may be 0)
        or no posted buffer is left (frames stay in ``fd``); IoqFull, reading nothing,
        when no buffer is posted at all; IoqClosed at end of file.  At most 64 per call.
        """
        h = self._handle()
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        upper = U32_MAX if max_length is None else max_length
        if not 0 <= upper <= U32_MAX:
            raise ValueError(f"max_length must be 0..{U32_MAX}")
        fd = _fileno(fd)
        counts = self._fd_counts
        got = check(
            lib.ioq_send_from_fd(h, fd, min(max_messages, self.count, FD_BATCH), upper, counts)
        )
        return FdBatch(got, counts.dropped, counts.bad_size)

    def receivable(self) -> bool:
        """True when a receive would find something (never blocks)."""
        return bool(check(lib.ioq_ready(self._handle(), RECV)))

    def sendable(self) -> bool:
        """True when a send would find a free buffer (never blocks)."""
        return bool(check(lib.ioq_ready(self._handle(), SEND)))

    def inject(self) -> bool:
        """Inject the peer's shm-signal by hand (never blocks); True if its wake-up fd
        was written."""
        return bool(lib.ioq_signal(self._handle()))
