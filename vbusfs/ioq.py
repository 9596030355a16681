"""The vbus data path: IOQ shared-memory rings with shm-signal notification.

An *ioq* is one ring of descriptors (the vbus IOQ version 4 layout, SPEC 7.2)
plus a data segment the descriptors point into, and one *shm-signal* eventfd
per direction (SPEC 7.3).  The *north* side (a client, in a member process)
allocates both in sealed memfds; the *south* side (a device, in the vbusfs
daemon) attaches to the file descriptors north hands over, validates the
ring once and afterwards trusts nothing in shared memory: a peer that breaks
the protocol makes the south side raise :class:`IoqFault`, never crash, hang
or touch memory outside the two segments.

Each ioq carries data one way, chosen when north creates it:

``"to_south"``
    north sends, south receives (a venet transmit queue).
``"to_north"``
    south sends into buffers north posted, north receives (a venet receive
    queue: north posts every slot as an empty buffer at creation and reposts
    each one as soon as it has read it).

Typical use::

    # north, in the member process
    q = Ioq.create(count=64, slot_size=2048, direction="to_south")
    pass_fds_to_the_daemon(q.fds)               # SCM_RIGHTS or inheritance
    q.send(b"frame")                            # blocks while the ring is full

    # south, in the daemon (under trio)
    q = Ioq.attach(fds, direction="to_south")
    q.watch_peer(connection_socket)             # hang-up ends waits with IoqClosed
    while True:
        await q.wait_receivable_async()
        for frame in q.receive_batch_nowait(64):
            ...

Method naming follows trio's rules: ``*_nowait`` methods never block and raise
:class:`IoqFull` or :class:`IoqEmpty` when they cannot proceed; the plain
``send``/``receive`` forms block (the GIL released) with an optional timeout;
``*_async`` forms wait through ``trio.lowlevel.wait_readable`` on the
eventfd.  ``spin_us`` makes a wait poll the ring for that many microseconds
before it sleeps (adaptive polling: far lower latency, at the price of CPU).
Batched forms move up to N messages for one crossing into C (two for a
receive): the Python call boundary, not the ring, is what limits throughput.
``send_packed_nowait`` and ``receive_into_nowait`` go further and create no
object per message.  Messages are copied once: into the data segment on send,
out of it on receive (a single small message is received through a private
buffer, one extra copy that costs less than a second call into C).
:meth:`Ioq.acquire_nowait` and :meth:`Ioq.commit` give zero-copy memoryviews
onto the data segment instead.  A south side moving messages to or from a file
descriptor (a TAP) uses :meth:`Ioq.receive_to_fd_nowait` and
:meth:`Ioq.send_from_fd_nowait`: one ``write``/``read`` per message, straight
between the descriptor and the data segment, a batch per call into C.
:class:`Switch` is the venet-switch's data path: a MAC learning table and the
forwarding of a batch from one port's ring into the others' posted buffers, in C.
The low-level ring operations (``push``,
``pop``, ``count_of``, ``seek`` ...) act on the ``valid`` and ``inuse``
indices directly: north pushes on either or both, south pops ``inuse``,
north pops ``valid``.

Peer death: pass a pidfd or the connection socket to :meth:`Ioq.watch_peer`,
and every wait ends with :class:`IoqClosed` once the peer is gone and nothing
is left to receive.

This is the only module that imports the compiled ``vbusfs._ioq_cffi``.  It
checks arguments before calling C, turns every C return code into an
exception in one place (:func:`_check`), and refuses to import if the
compiled ABI number differs from its own.  It must never hand out a pointer
into shared memory that can outlive the mapping (views come from a Python
mmap, which refuses to unmap while they exist), and an :class:`Ioq` must
never be used by two threads or tasks at once.
"""

from __future__ import annotations

import array
import contextlib
import errno
import importlib
import math
import mmap
import os
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, NoReturn

__all__ = [
    "Descriptor",
    "FdBatch",
    "Ioq",
    "IoqClosed",
    "IoqEmpty",
    "IoqError",
    "IoqFault",
    "IoqFds",
    "IoqFull",
    "Switch",
    "SwitchCounts",
]

#: The ABI this module was written against; must equal IOQ_ABI_VERSION in native/ioq.h.
ABI_VERSION = 5

_cffi: Any = importlib.import_module("vbusfs._ioq_cffi")
_ffi: Any = _cffi.ffi
_lib: Any = _cffi.lib

if _lib.ioq_abi_version() != ABI_VERSION:
    raise ImportError(
        f"vbusfs._ioq_cffi has ABI {_lib.ioq_abi_version()}, vbusfs.ioq expects "
        f"{ABI_VERSION}: rebuild the package (make setup)"
    )

Side = Literal["north", "south"]
Direction = Literal["to_south", "to_north"]
Index = Literal["valid", "inuse", "both"]
Whence = Literal["head", "tail", "next", "prev", "set"]

_DIRECTIONS = {"to_south": _lib.IOQ_TO_SOUTH, "to_north": _lib.IOQ_TO_NORTH}
_INDICES = {"valid": _lib.IOQ_IDX_VALID, "inuse": _lib.IOQ_IDX_INUSE, "both": _lib.IOQ_IDX_BOTH}
_WHENCE = {
    "head": _lib.IOQ_SEEK_HEAD,
    "tail": _lib.IOQ_SEEK_TAIL,
    "next": _lib.IOQ_SEEK_NEXT,
    "prev": _lib.IOQ_SEEK_PREV,
    "set": _lib.IOQ_SEEK_SET,
}
_SEND = _lib.IOQ_WAIT_SEND
_RECV = _lib.IOQ_WAIT_RECV
_MAX_COUNT = _lib.IOQ_MAX_COUNT
_MAX_DATA = _lib.IOQ_MAX_DATA
_E_FULL = _lib.IOQ_E_FULL
_E_EMPTY = _lib.IOQ_E_EMPTY
_EINTR = -errno.EINTR
_E_MSGSIZE = _lib.IOQ_E_MSGSIZE
_FD_BATCH = _lib.IOQ_FD_BATCH
_U32_MAX = 2**32 - 1
# bound once: the per-message paths skip the attribute lookups
_send_one_wait = _lib.ioq_send_one_wait
_recv_one_wait = _lib.ioq_recv_one_wait
_unpack = _ffi.unpack
# A single receive goes through one C call into this private buffer, then to
# bytes (two copies: cheaper than a second call into C for small messages); a
# message that does not fit, and every batch, is copied once from the data segment.
_RX = 16384
# the array typecode of C's uint32_t (unsigned int on every Linux ABI we build for)
_U32 = "I" if array.array("I").itemsize == 4 else "L"


class IoqError(OSError):
    """Base of every ioq error; ``errno`` says what kind."""


class IoqFull(IoqError):
    """Nothing can be sent or pushed now: every descriptor is in use."""


class IoqEmpty(IoqError):
    """Nothing can be received or popped now."""


class IoqClosed(IoqError):
    """The ioq was closed here, or the watched peer hung up."""


class IoqFault(IoqError):
    """The peer broke the protocol (a bad index, descriptor or length).

    The handle is dead afterwards: every further operation raises this again.
    A south side treats it as the client's fault and drops the client.
    """


class IoqFds(NamedTuple):
    """The four file descriptors north hands to south, in the order attach takes them."""

    ring: int
    data: int
    to_south: int  # eventfd that wakes south
    to_north: int  # eventfd that wakes north


class Descriptor(NamedTuple):
    """A private copy of one ring descriptor."""

    cookie: int
    ptr: int
    len: int
    valid: bool
    sown: bool


class FdBatch(NamedTuple):
    """What one call between a ring and a file descriptor did."""

    messages: int  # consumed from the ring (receive_to_fd) or sent on it (send_from_fd)
    dropped: int  # receive_to_fd: consumed, but write() failed or was short
    bad_size: int  # consumed or read, discarded: length outside the allowed range


_ERRORS: dict[int, tuple[type[OSError], int, str]] = {
    _lib.IOQ_E_FULL: (IoqFull, errno.ENOBUFS, "ioq full"),
    _lib.IOQ_E_EMPTY: (IoqEmpty, errno.EAGAIN, "ioq empty"),
    _lib.IOQ_E_FAULT: (IoqFault, errno.EPROTO, "ioq peer broke the protocol"),
    _lib.IOQ_E_CLOSED: (IoqClosed, errno.EPIPE, "ioq peer hung up"),
    _lib.IOQ_E_TIMEDOUT: (TimeoutError, errno.ETIMEDOUT, "ioq wait timed out"),
    _lib.IOQ_E_INVAL: (IoqError, errno.EINVAL, "invalid ioq operation"),
    _lib.IOQ_E_BADRING: (IoqError, errno.EINVAL, "not a valid ioq (magic/version/size/seals)"),
    _lib.IOQ_E_MSGSIZE: (IoqError, errno.EMSGSIZE, "message longer than the buffer"),
    _lib.IOQ_E_SIDE: (IoqError, errno.EPERM, "not allowed on this side of this ioq"),
}


def _check(rc: int) -> int:
    """The one place a C return code becomes an exception."""
    if rc >= 0:
        return rc
    _raise(rc)


def _raise(rc: int) -> NoReturn:
    known = _ERRORS.get(rc)
    if known is not None:
        cls, code, text = known
        raise cls(code, text)
    raise OSError(-rc, os.strerror(-rc))


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + max(timeout, 0.0)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _ms(deadline: float | None) -> int:
    """Milliseconds left until deadline, rounded up; -1 for none."""
    if deadline is None:
        return -1
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


def _fileno(fd: int) -> int:
    if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
        raise ValueError(f"fd must be an open file descriptor (an int >= 0), not {fd!r}")
    return fd


def _hup_events(peer: int | socket.socket) -> tuple[int, int]:
    if isinstance(peer, socket.socket):
        return peer.fileno(), select.POLLRDHUP | select.POLLHUP
    return peer, select.POLLIN  # a pidfd turns readable when its process exits


class Ioq:
    """One side's handle on an ioq: a ring, its data segment and a shm-signal pair.

    Make one with :meth:`create` (north) or :meth:`attach` (south).
    """

    def __init__(self, handle: Any, direction: Direction) -> None:
        # private: use create() or attach().  A handle dropped without close()
        # is still unmapped and its fds closed, by cffi when it is collected.
        self._h = _ffi.gc(handle, _lib.ioq_close)
        self.direction: Direction = direction
        self.side: Side = "north" if _lib.ioq_side(handle) == _lib.IOQ_NORTH else "south"
        self.count: int = _lib.ioq_count_slots(handle)
        self._data_len: int = _lib.ioq_data_len(handle)
        fds = _ffi.new("int[4]")
        _lib.ioq_fds(handle, fds)
        self.fds = IoqFds(*fds)
        self.sender: bool = (self.side == "north") == (direction == "to_south")
        #: largest message one descriptor can carry from this side's point of view
        self.max_message: int = (
            self._data_len // self.count if self.side == "north" else self._data_len
        )
        self._mm = mmap.mmap(self.fds.data, self._data_len)
        self._rx = _ffi.new("char[]", _RX)
        self._offs = _ffi.new("uint64_t[]", self.count)
        self._lens = _ffi.new("uint32_t[]", self.count)
        self._fd_counts = _ffi.new("struct ioq_fd_counts *")
        self._views: list[memoryview] = []
        self._hup_fd = -1
        self._hup_events = 0
        self._epoll: select.epoll | None = None

    # ---- lifetime ---------------------------------------------------------

    @classmethod
    def create(
        cls, count: int = 64, slot_size: int = 2048, *, direction: Direction = "to_south"
    ) -> Ioq:
        """North: allocate a ring of ``count`` descriptors, each with a ``slot_size`` buffer."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'to_south' or 'to_north', not {direction!r}")
        if not 1 <= count <= _MAX_COUNT:
            raise ValueError(f"count must be 1..{_MAX_COUNT}, not {count}")
        if slot_size < 1 or count * slot_size > _MAX_DATA:
            raise ValueError(f"slot_size must be >= 1 with count * slot_size <= {_MAX_DATA}")
        out = _ffi.new("struct ioq **")
        _check(_lib.ioq_north_create(count, count * slot_size, _DIRECTIONS[direction], out))
        return cls(out[0], direction)

    @classmethod
    def attach(cls, fds: IoqFds | Sequence[int], *, direction: Direction) -> Ioq:
        """South: map and validate the ring north created (EINVAL if it is not one).

        The handle keeps duplicates; the caller still owns and closes ``fds``.
        """
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'to_south' or 'to_north', not {direction!r}")
        ring, data, to_south, to_north = (int(fd) for fd in fds)
        if min(ring, data, to_south, to_north) < 0:
            raise ValueError("file descriptors must be >= 0")
        out = _ffi.new("struct ioq **")
        _check(_lib.ioq_south_attach(ring, data, to_south, to_north, _DIRECTIONS[direction], out))
        return cls(out[0], direction)

    def watch_peer(self, peer: int | socket.socket | None) -> None:
        """Let waits end with :class:`IoqClosed` when ``peer`` hangs up.

        ``peer`` is a pidfd (``os.pidfd_open``) or a connected socket; None stops watching.
        The caller keeps it open while it is watched.
        """
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        if peer is None:
            self._hup_fd, self._hup_events = -1, 0
        else:
            self._hup_fd, self._hup_events = _hup_events(peer)
        _lib.ioq_watch(self._handle(), self._hup_fd, self._hup_events)

    @property
    def closed(self) -> bool:
        return self._h is None

    def close(self) -> None:
        """Unmap and close everything this handle owns.  Idempotent."""
        if self._h is None:
            return
        self._release_views()
        _ffi.release(self._h)  # runs ioq_close now, and never again
        self._h = None
        if self._epoll is not None:
            self._epoll.close()
        # if views still exist, the mapping goes away with the last one
        with contextlib.suppress(BufferError):
            self._mm.close()

    def __enter__(self) -> Ioq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self) -> Any:
        if self._h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        return self._h

    @property
    def faulted(self) -> bool:
        return self._h is not None and bool(_lib.ioq_faulted(self._h))

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
        buf = message if type(message) is bytes else _ffi.from_buffer(message)
        return _lib.ioq_send_one(h, buf, n, 1)

    def send_nowait(self, message: bytes | bytearray | memoryview) -> None:
        """Send one message (one copy, into the data segment); IoqFull if no room."""
        _check(self._send1(message))

    def _send_packed(self, packed: bytes, lengths: Any, n: int) -> int:
        return _lib.ioq_send_batch(self._handle(), packed, lengths, min(n, self.count), 1)

    def send_batch_nowait(self, messages: Sequence[bytes]) -> int:
        """Send as many of ``messages`` as fit, in order, for one call into C.

        Returns how many were sent; IoqFull if none could be.
        """
        return _check(self._send_many(messages))

    def _send_many(self, messages: Sequence[bytes]) -> int:
        lengths = array.array(_U32, map(len, messages))
        if not lengths:
            raise ValueError("no messages")
        if max(lengths) > self.max_message:
            raise ValueError(f"every message must be at most {self.max_message} bytes")
        lens = _ffi.from_buffer("uint32_t[]", lengths)
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
            lens: Any = _ffi.from_buffer("uint32_t[]", lengths)
        else:
            lens = list(lengths)
        return _check(self._send_packed(packed, lens, n))

    def _recv1(self) -> bytes | int:
        h = self._handle()
        rc = _lib.ioq_recv_one(h, self._rx, _RX, 1)
        if rc >= 0:
            return _ffi.unpack(self._rx, rc)
        if rc != _lib.IOQ_E_MSGSIZE:
            return rc
        got = self._recv_large(1)
        return got if isinstance(got, int) else got[0]

    def receive_nowait(self) -> bytes:
        """Receive one message; IoqEmpty if there is none."""
        got = self._recv1()
        if isinstance(got, int):
            _raise(got)
        return got

    def _recv_many(self, max_messages: int) -> list[bytes] | int:
        # each message is copied once, straight out of the data segment: two calls
        # into C per batch, and cheaper per message than cutting up a copy
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        return self._recv_large(max_messages)

    def _recv_large(self, max_messages: int) -> list[bytes] | int:
        h = self._handle()
        k = _lib.ioq_acquire(h, _RECV, min(max_messages, self.count), self._offs, self._lens)
        if k < 0:
            return k
        mm = self._mm
        out = [
            mm[o : o + n]
            for o, n in zip(_ffi.unpack(self._offs, k), _ffi.unpack(self._lens, k), strict=True)
        ]
        _check(_lib.ioq_commit(h, _RECV, k, _ffi.NULL, 1))
        return out

    def receive_batch_nowait(self, max_messages: int = 64) -> list[bytes]:
        """Receive up to ``max_messages`` messages in one call into C; IoqEmpty if none."""
        got = self._recv_many(max_messages)
        if isinstance(got, int):
            _raise(got)
        return got

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
        buf = _ffi.from_buffer(buffer, require_writable=True)
        got = _check(_lib.ioq_recv_batch(h, buf, len(buf), self._lens, k, 1))
        return _ffi.unpack(self._lens, got)

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
        upper = _U32_MAX if max_length is None else max_length
        if not 0 <= min_length <= upper <= _U32_MAX:
            raise ValueError(f"lengths must satisfy 0 <= min_length <= max_length <= {_U32_MAX}")
        fd = _fileno(fd)
        counts = self._fd_counts
        got = _check(
            _lib.ioq_recv_to_fd(h, fd, min(max_messages, self.count), min_length, upper, counts)
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
        upper = _U32_MAX if max_length is None else max_length
        if not 0 <= upper <= _U32_MAX:
            raise ValueError(f"max_length must be 0..{_U32_MAX}")
        fd = _fileno(fd)
        counts = self._fd_counts
        got = _check(
            _lib.ioq_send_from_fd(h, fd, min(max_messages, self.count, _FD_BATCH), upper, counts)
        )
        return FdBatch(got, counts.dropped, counts.bad_size)

    def acquire_nowait(self, max_buffers: int = 64) -> list[memoryview]:
        """Zero-copy: views onto the data segment, released by :meth:`commit`.

        A sender gets empty buffers (their full capacity) to write messages into; a
        receiver gets the messages themselves.  IoqFull or IoqEmpty if there are none.
        """
        h = self._handle()
        if max_buffers < 1:
            raise ValueError("max_buffers must be >= 1")
        self._release_views()
        op = _SEND if self.sender else _RECV
        k = _check(_lib.ioq_acquire(h, op, min(max_buffers, self.count), self._offs, self._lens))
        whole = memoryview(self._mm)
        self._views = [
            whole[o : o + n]
            for o, n in zip(_ffi.unpack(self._offs, k), _ffi.unpack(self._lens, k), strict=True)
        ]
        whole.release()
        return list(self._views)

    def commit(self, count: int, lengths: Sequence[int] | None = None) -> None:
        """Hand the first ``count`` acquired buffers to the peer and release all views.

        A sender gives the length it wrote into each (``lengths``, one per buffer).
        """
        h = self._handle()
        acquired = len(self._views)
        if not 0 <= count <= acquired:
            raise ValueError(f"count must be 0..{acquired} (buffers acquired)")
        if self.sender:
            if lengths is None or len(lengths) != count:
                raise ValueError("a sender commits one length per buffer")
            for n, view in zip(lengths, self._views, strict=False):
                if not 0 <= n <= len(view):
                    raise ValueError(f"length {n} outside 0..{len(view)}")
            self._release_views()
            _check(_lib.ioq_commit(h, _SEND, count, list(lengths), 1))
            return
        if lengths is not None:
            raise ValueError("a receiver commits no lengths")
        self._release_views()
        _check(_lib.ioq_commit(h, _RECV, count, _ffi.NULL, 1))

    def _release_views(self) -> None:
        for view in self._views:
            view.release()
        self._views = []

    def receivable(self) -> bool:
        """True when a receive would find something (never blocks)."""
        return bool(_check(_lib.ioq_ready(self._handle(), _RECV)))

    def sendable(self) -> bool:
        """True when a send would find a free buffer (never blocks)."""
        return bool(_check(_lib.ioq_ready(self._handle(), _SEND)))

    def signal(self) -> bool:
        """Inject the peer's shm-signal by hand; True if its eventfd was written."""
        return bool(_lib.shm_signal_inject(self._handle()))

    # ---- blocking (synchronous programs) --------------------------------------

    def _wait(self, op: int, timeout: float | None, spin_us: int) -> None:
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        deadline = _deadline(timeout)
        while True:
            rc = _lib.ioq_wait(self._handle(), op, _ms(deadline), spin_us)
            if rc != -errno.EINTR:
                _check(rc)
                return
            # a signal arrived: its Python handler has run by now; retry (PEP 475)

    def wait_sendable(self, timeout: float | None = None, *, spin_us: int = 0) -> None:
        """Block until a send can proceed; TimeoutError, IoqClosed or IoqFault otherwise."""
        self._wait(_SEND, timeout, spin_us)

    def wait_receivable(self, timeout: float | None = None, *, spin_us: int = 0) -> None:
        """Block until a receive can proceed; TimeoutError, IoqClosed or IoqFault otherwise."""
        self._wait(_RECV, timeout, spin_us)

    def send(
        self,
        message: bytes | bytearray | memoryview,
        timeout: float | None = None,
        *,
        spin_us: int = 0,
    ) -> None:
        """Send one message, waiting for room (``timeout`` bounds the whole call)."""
        # the hot path of a synchronous client: one crossing, few lookups
        h = self._h
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        n = len(message)
        if n > self.max_message or spin_us < 0:
            raise ValueError(f"message of {n} bytes exceeds {self.max_message} or spin_us < 0")
        buf = message if type(message) is bytes else _ffi.from_buffer(message)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            rc = _send_one_wait(h, buf, n, -1 if deadline is None else _ms(deadline), spin_us)
            if rc >= 0:
                return
            if rc != _E_FULL and rc != _EINTR:
                _raise(rc)

    def send_batch(
        self, messages: Sequence[bytes], timeout: float | None = None, *, spin_us: int = 0
    ) -> None:
        """Send every message, in order, waiting for room (``timeout`` bounds the whole call)."""
        deadline = _deadline(timeout)
        done = 0
        while done < len(messages):
            rc = self._send_many(messages[done : done + self.count])
            if rc >= 0:
                done += rc
            elif rc == _E_FULL:
                self._wait(_SEND, _remaining(deadline), spin_us)
            else:
                _raise(rc)

    def receive(self, timeout: float | None = None, *, spin_us: int = 0) -> bytes:
        """Receive one message, waiting for it (``timeout`` bounds the whole call)."""
        h = self._h
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        rx = self._rx
        while True:
            rc = _recv_one_wait(h, rx, _RX, -1 if deadline is None else _ms(deadline), spin_us)
            if rc >= 0:
                return _unpack(rx, rc)
            if rc == _E_MSGSIZE:
                got = self._recv_large(1)
                if isinstance(got, int):
                    _raise(got)
                return got[0]
            if rc != _E_EMPTY and rc != _EINTR:
                _raise(rc)

    def receive_batch(
        self, max_messages: int = 64, timeout: float | None = None, *, spin_us: int = 0
    ) -> list[bytes]:
        """Receive between 1 and ``max_messages`` messages, waiting for the first."""
        got = self._recv_many(max_messages)
        if got == _E_EMPTY:
            deadline = _deadline(timeout)
            while got == _E_EMPTY:
                self._wait(_RECV, _remaining(deadline), spin_us)
                got = self._recv_many(max_messages)
        if isinstance(got, int):
            _raise(got)
        return got

    # ---- trio ------------------------------------------------------------

    def _wake_fd(self) -> int:
        efd = _lib.shm_signal_eventfd(self._handle())
        if self._hup_fd < 0:
            return int(efd)
        if self._epoll is None:
            # one fd trio can wait on for both the eventfd and the peer's hang-up
            ep = select.epoll()
            ep.register(efd, select.EPOLLIN)
            ep.register(self._hup_fd, self._hup_events)
            self._epoll = ep
        return self._epoll.fileno()

    def _peer_gone(self) -> bool:
        if self._hup_fd < 0:
            return False
        p = select.poll()
        p.register(self._hup_fd, self._hup_events)
        return bool(p.poll(0))

    async def _wait_async(self, op: int, spin_us: int) -> None:
        import trio

        if spin_us < 0:
            raise ValueError("spin_us must be >= 0")
        h = self._handle()
        if _check(_lib.ioq_ready(h, op)):
            await trio.lowlevel.checkpoint()
            return
        if spin_us:
            # spinning holds the event loop for at most spin_us
            rc = _lib.ioq_wait(h, op, 0, spin_us)
            if rc != _lib.IOQ_E_TIMEDOUT:
                _check(rc)
                await trio.lowlevel.checkpoint()
                return
        while True:
            # the same steps as ioq_wait in C: reset, arm, re-check, sleep, disarm
            h = self._handle()
            _lib.shm_signal_drain(h)
            _lib.shm_signal_enable(h)
            if _check(_lib.ioq_ready(h, op)):
                _lib.shm_signal_disable(h)
                await trio.lowlevel.checkpoint()
                return
            try:
                await trio.lowlevel.wait_readable(self._wake_fd())
            finally:
                if self._h is not None:
                    _lib.shm_signal_disable(self._h)
            if _check(_lib.ioq_ready(self._handle(), op)):
                return
            if self._peer_gone():
                _check(_lib.IOQ_E_CLOSED)

    async def wait_sendable_async(self, *, spin_us: int = 0) -> None:
        """Wait (trio) until a send can proceed; cancel with a trio cancel scope."""
        await self._wait_async(_SEND, spin_us)

    async def wait_receivable_async(self, *, spin_us: int = 0) -> None:
        """Wait (trio) until a receive can proceed; cancel with a trio cancel scope."""
        await self._wait_async(_RECV, spin_us)

    async def send_async(
        self, message: bytes | bytearray | memoryview, *, spin_us: int = 0
    ) -> None:
        while True:
            try:
                return self.send_nowait(message)
            except IoqFull:
                await self.wait_sendable_async(spin_us=spin_us)

    async def receive_async(self, *, spin_us: int = 0) -> bytes:
        while True:
            try:
                return self.receive_nowait()
            except IoqEmpty:
                await self.wait_receivable_async(spin_us=spin_us)

    async def receive_batch_async(self, max_messages: int = 64, *, spin_us: int = 0) -> list[bytes]:
        while True:
            try:
                return self.receive_batch_nowait(max_messages)
            except IoqEmpty:
                await self.wait_receivable_async(spin_us=spin_us)

    # ---- ring operations ---------------------------------------------------

    def _index(self, index: Index, allow_both: bool = False) -> int:
        if index not in _INDICES or (index == "both" and not allow_both):
            raise ValueError(f"index must be 'valid', 'inuse'{' or both' if allow_both else ''}")
        return _INDICES[index]

    def push(self, index: Index, cookie: int, ptr: int, length: int) -> None:
        """North: push one descriptor at the tail of ``index`` ("valid", "inuse" or "both").

        A valid push fills a free descriptor; an inuse push gives it to south
        (ownership bit set).  IoqFull when the slot is not free for that.
        """
        h = self._handle()
        which = self._index(index, allow_both=True)
        if not (0 <= cookie < 2**64 and ptr >= 0 and length >= 0):
            raise ValueError("cookie, ptr and length must be non-negative (cookie < 2**64)")
        if ptr + length > self._data_len:
            raise ValueError(f"ptr + length must lie inside the {self._data_len}-byte data segment")
        _check(_lib.ioq_push(h, which, cookie, ptr, length))

    def pop(self, index: Index) -> Descriptor:
        """Pop at the head of ``index``: "inuse" on south, "valid" on north.

        (Popping both at once would make one side write the other's index.)
        """
        h = self._handle()
        out = _ffi.new("struct ioq_desc *")
        _check(_lib.ioq_pop(h, self._index(index), out))
        return Descriptor(out.cookie, out.ptr, out.len, bool(out.valid), bool(out.sown))

    def count_of(self, index: Index) -> int:
        """Descriptors between head and tail of ``index``."""
        return _check(_lib.ioq_count(self._handle(), self._index(index)))

    def remain(self, index: Index) -> int:
        return _check(_lib.ioq_remain(self._handle(), self._index(index)))

    def is_full(self, index: Index) -> bool:
        return bool(_check(_lib.ioq_full(self._handle(), self._index(index))))

    def is_empty(self, index: Index) -> bool:
        return bool(_check(_lib.ioq_empty(self._handle(), self._index(index))))

    def seek(self, index: Index, whence: Whence, offset: int = 0) -> int:
        """Move this side's cursor on ``index``; return its position.

        "head"/"tail" + offset, "next", "prev", or "set" to ``offset``.
        """
        h = self._handle()
        if whence not in _WHENCE:
            raise ValueError(f"whence must be one of {sorted(_WHENCE)}")
        if whence == "set" and not 0 <= offset < self.count:
            raise ValueError(f"position must be 0..{self.count - 1}")
        if not -(2**31) <= offset < 2**31:
            raise ValueError("offset out of range")
        return _check(_lib.ioq_seek(h, self._index(index), _WHENCE[whence], offset))

    def descriptor(self, pos: int) -> Descriptor:
        """A snapshot of descriptor ``pos`` as it is in shared memory (unvalidated)."""
        h = self._handle()
        if not 0 <= pos < self.count:
            raise ValueError(f"pos must be 0..{self.count - 1}")
        out = _ffi.new("struct ioq_desc *")
        _check(_lib.ioq_desc_at(h, pos, out))
        return Descriptor(out.cookie, out.ptr, out.len, bool(out.valid), bool(out.sown))


class SwitchCounts(NamedTuple):
    """What one :meth:`Switch.forward` call did."""

    frames: int  # consumed from the source ring
    bad_size: int  # consumed and dropped: shorter than 14 or longer than 1514 bytes
    flooded: int  # broadcast, multicast or unknown destination: sent to every other port
    filtered: int  # the destination was learned on the sender's own port: dropped
    unlearned: int  # new source addresses the full table could not learn
    delivered: tuple[int, ...]  # per port: copies published on its ring
    dropped: tuple[int, ...]  # per port: copies lost (no posted buffer, too small, faulted)
    faulted: tuple[int, ...]  # ports whose ring broke the protocol: drop their clients


class Switch:
    """The venet-switch data path: a MAC learning table and forwarding in C.

    Ports are small indices (0 .. :attr:`MAX_PORTS` - 1) the caller keeps stable for as
    long as a client is connected, and forgets (:meth:`forget_port`) when it goes.  Frames
    are copied once, in C, from the sender's data segment into the buffers the other
    ports' clients posted; nothing is created in Python per frame.  The table learns at
    most :attr:`LEARN_MAX` addresses; frames to addresses it does not know are flooded.
    """

    MAX_PORTS: int = _lib.VSWITCH_MAX_PORTS
    LEARN_MAX: int = _lib.VSWITCH_LEARN_MAX
    BATCH: int = _lib.VSWITCH_BATCH

    def __init__(self) -> None:
        out = _ffi.new("struct vswitch **")
        _check(_lib.vswitch_new(out))
        self._sw = _ffi.gc(out[0], _lib.vswitch_free)
        self._rings = _ffi.new("struct ioq *[]", self.MAX_PORTS)
        self._counts = _ffi.new("struct vswitch_counts *")
        self._per_port = _ffi.new("struct vswitch_port_counts[]", self.MAX_PORTS)
        self._mac = _ffi.new("uint8_t[6]")

    def __len__(self) -> int:
        """How many addresses the table holds."""
        return int(_lib.vswitch_learned(self._sw))

    def lookup(self, mac: bytes) -> int | None:
        """The port ``mac`` was last seen on as a source, or None."""
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self._mac[0:6] = bytes(mac)
        port = _lib.vswitch_lookup(self._sw, self._mac)
        return None if port < 0 else int(port)

    def forget_port(self, index: int) -> int:
        """Forget every address learned on port ``index``; returns how many."""
        if not 0 <= index < self.MAX_PORTS:
            raise ValueError(f"port must be 0..{self.MAX_PORTS - 1}")
        return int(_lib.vswitch_forget_port(self._sw, index))

    def forward(
        self, src_port: int, src: Ioq, ports: Sequence[Ioq | None], max_messages: int = 64
    ) -> SwitchCounts:
        """Take up to ``max_messages`` frames from ``src`` (port ``src_port``'s to-south
        ring) and copy each to the to-north rings in ``ports`` (indexed by port, None for
        a port without a client): a learned unicast destination gets it alone, the rest is
        flooded; never back to ``src_port``.  A ring with no posted buffer left drops its
        copy.  Each destination is signalled once.

        IoqEmpty if ``src`` had nothing; IoqFault if ``src`` broke the protocol (the
        sender's fault, nothing copied).  A destination ring that broke the protocol is
        skipped and listed in ``faulted``: that is its own client's fault, not the sender's.
        """
        if not 1 <= len(ports) <= self.MAX_PORTS:
            raise ValueError(f"1..{self.MAX_PORTS} ports")
        if not 0 <= src_port < len(ports):
            raise ValueError(f"src_port must be 0..{len(ports) - 1}")
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        if src.side != "south" or src.direction != "to_south":
            raise ValueError("the source must be the south side of a to_south ring")
        if src._views:
            raise ValueError("the source ring has acquired buffers outstanding")
        rings = self._rings
        seen: set[int] = set()
        for i, ring in enumerate(ports):
            if ring is None:
                rings[i] = _ffi.NULL
                continue
            if ring.side != "south" or ring.direction != "to_north":
                raise ValueError(f"port {i}: not the south side of a to_north ring")
            if id(ring) in seen:
                raise ValueError(f"port {i}: the same ring is on two ports")
            if ring._views:
                raise ValueError(f"port {i}: the ring has acquired buffers outstanding")
            seen.add(id(ring))
            rings[i] = ring._handle()
        n = len(ports)
        counts, per_port = self._counts, self._per_port
        _check(
            _lib.vswitch_forward(
                self._sw,
                src_port,
                src._handle(),
                rings,
                n,
                min(max_messages, self.BATCH),
                counts,
                per_port,
            )
        )
        entries = _ffi.unpack(per_port, n)
        return SwitchCounts(
            counts.frames,
            counts.bad_size,
            counts.flooded,
            counts.filtered,
            counts.unlearned,
            tuple(e.delivered for e in entries),
            tuple(e.dropped for e in entries),
            tuple(i for i, e in enumerate(entries) if e.faulted) if counts.faulted else (),
        )
