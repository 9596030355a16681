"""The vbus data path: IOQ shared-memory rings with shm-signal notification.

An *ioq* is one ring of descriptors (the vbus IOQ version 4 layout, behaviour §7.2)
plus a data segment the descriptors point into, and one *shm-signal* wake-up fd
per direction (behaviour §7.3: an eventfd wakes south, a datagram socket north).
The *north* side (a client, in a member process) allocates ring and segment in
sealed memfds; the *south* side (a device, in the vbusfs
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

Each side holds its end through one of two faces over the same ring (both
made with ``create`` on north or ``attach`` on south): :class:`Ioq` for
synchronous programs, :class:`AsyncIoq` for trio programs and the daemon.

Typical use::

    # north, in a synchronous member process
    q = Ioq.create(count=64, slot_size=2048, direction="to_south")
    pass_fds_to_the_daemon(q.fds)               # SCM_RIGHTS or inheritance
    q.send(b"frame")                            # blocks while the ring is full

    # south, in the daemon (under trio)
    q = AsyncIoq.attach(fds, direction="to_south")
    q.watch_peer(connection_socket)             # hang-up ends waits with IoqClosed
    while True:
        await q.wait_receivable()
        for frame in q.receive_batch_nowait(64):
            ...

Naming follows trio's rules:

- ``X_nowait`` (``send_nowait``, ``send_batch_nowait``, ``receive_nowait``,
  ``receive_batch_nowait`` ...) never blocks, on either face, and raises
  :class:`IoqFull` or :class:`IoqEmpty` when it cannot proceed.  So do the
  methods that cannot wait at all: ``sendable``, ``receivable``, ``inject``,
  ``commit``, ``watch_peer``, ``close``.
- On :class:`Ioq`, the plain ``X`` (``send``, ``send_batch``, ``receive``,
  ``receive_batch``) and ``wait_sendable``/``wait_receivable`` block the
  calling thread, the GIL released, with an optional ``timeout``; each
  docstring says so.
- On :class:`AsyncIoq`, ``send``, ``receive``, ``receive_batch``,
  ``wait_sendable`` and ``wait_receivable`` are ``async def``: they wait in trio
  (``trio.lowlevel.wait_readable`` on the eventfd) and a cancel scope ends them.
  No name carries an ``_async`` suffix.

``spin_us`` makes a wait poll the ring for that many microseconds
before it sleeps: far lower latency (a cross-CPU wake-up costs ~20 µs each way on
the target machine), at the price of CPU.  ``spin_us="adaptive"`` (every wait,
send and receive of both faces, and :class:`Poller`) polls for a budget that C
keeps per handle (per poller), learned from how the waits end, on either side:

- it starts at 0 and stays within 0..200 µs (``SPIN_MAX_US``);
- a spin that finds work in the second half of its budget doubles it (to at
  least 10 µs): the peer answers close to the limit;
- a spin that runs out (a budget of 0 always does) is judged by the sleep that
  follows: work within 200 µs of the wait's start doubles the budget (a longer
  spin would have caught it); a later wake-up, or a timeout, halves it (to 0
  below 2 µs);
- work found at once, or early in a spin, changes nothing.

So a peer that answers within a few tens of microseconds is polled for (and
then met without a wake-up), and an idle or slow one costs at most the spins
that halve the budget to 0: about 400 µs of CPU per idle spell.
``spin_budget_us`` reads the budget learned so far.
Batched forms move up to N messages for one crossing into C (two for a
receive): the Python call boundary, not the ring, is what limits throughput.
``send_packed_nowait`` and ``receive_into_nowait`` go further and create no
object per message.  Messages are copied once: into the data segment on send,
out of it on receive (a single small message is received through a private
buffer, one extra copy that costs less than a second call into C).
``acquire_nowait`` and ``commit`` give zero-copy memoryviews onto the data
segment instead, in sub-batches: each acquire adds buffers to the side's acquired
set (returning only the new ones), each ``commit(n)`` hands the oldest ``n`` to the
peer and keeps the rest acquired and valid, and ``unacquire`` gives the newest back
untouched; while buffers are acquired, that side's copying calls are refused
(EBUSY).  ``commit(n, lengths, acquire=m)`` also takes the next ``m`` buffers in
the same call into C, so a side that streams pays one crossing per batch.  What
zero-copy costs is that crossing and a view per buffer, against a copy's
crossing and memcpy: it costs less than a copy from 4 KiB messages at 4 per
call and for 64 KiB messages at any batch size, about as much for one 4 KiB
message per call (receive) or up to 1.7x (send), and more for small (64 B)
sends (the crossover table: ``bench/ioq.py``).  ``count`` and ``slot_size``
(north's bytes per descriptor) read the same on both sides, and
``max_message`` is the slot size on both.  A south side
moving messages to or from a file descriptor (a TAP) uses
``receive_to_fd_nowait`` and ``send_from_fd_nowait``: one ``write``/``read`` per
message, straight between the descriptor and the data segment, a batch per
call into C.  ``inject`` writes the peer's shm-signal by
hand.  :class:`Switch` is the venet-switch's data path: a MAC learning table
and the forwarding of a batch from one port's ring into the others' posted
buffers, in C.  The raw ring operations are functions of
:mod:`vbusfs.ioq.lowlevel` (``push``, ``pop``, ``count_of``, ``remain``,
``is_full``, ``is_empty``, ``seek``, ``descriptor``), not methods: they act on
the ``valid`` and ``inuse`` indices directly (north pushes on either or both,
south pops ``inuse``, north pops ``valid``) and take either face.

Peer death: pass a pidfd or the connection socket to :meth:`Ioq.watch_peer`,
and every wait ends with :class:`IoqClosed` once the peer is gone and nothing
is left to receive.

:class:`Poller` waits on several rings at once (a device's request and response
rings, a client's queues): ``bit = poller.add(ring, "receive")`` or ``"send"``,
then ``ready = poller.wait(timeout)`` blocks in C (``await poller.wait_async()``
in trio) and returns the bits of the ready ones.  Its epoll fd holds every
member's wake-up fd and watched peer from ``add`` on, so a wait registers
nothing; a single ring's blocking wait does the same on an epoll fd of its own,
made at its first wait.  Every wait backs off a peer that keeps waking it with
nothing ready (8 such wake-ups in a row, then a pause growing by 0.5 ms to at
most 10 ms), so a hostile peer costs a bounded share of a CPU.

The package is layered like cryptography's bindings:

``_binding``
    the only importer of the compiled ``vbusfs._ioq_cffi`` (typed by
    ``vbusfs/_ioq_cffi.pyi``): the ABI check at import, the constants, and the
    one table that turns every C return code into an exception.
``_ring``
    the non-waiting half both faces share: lifetime, the data path, zero-copy, fds.
``_ioq``
    :class:`Ioq`: the ring plus its blocking face.
``_trio``
    :class:`AsyncIoq`: the ring plus its trio face (trio imported on first wait).
``_zerocopy``
    acquire, commit and unacquire, the zero-copy half of the ring.
``_poller``
    :class:`Poller`: one wait on several rings, blocking in C or in trio.
``_switch``
    :class:`Switch`, which hands whole rings to C and never touches their indices.
``_switch_runner``
    :class:`SwitchRunner`: the switch's forwarding on a C thread of its own, sleeping on
    the ports' transmit rings.
``_tap_runner``
    :class:`TapRunner`: venet-tap's frames between its TAP and its rings on a C thread
    of its own, sleeping on the rings and the TAP.
``_fdpump``
    :class:`FdPump`: frames between a descriptor (a TAP) and the north side of a
    venet's two rings, the whole loop in C (the vbus-enet driver's data path).
``_blk``
    :class:`BlockServer`: a block protocol's READs and WRITEs served in C between a
    backing (a mapped memfd, or a file) and a device's request and response rings.
``_venet``
    :func:`poll_ready` (a spin in C that never sleeps, for loops that sleep elsewhere),
    :func:`receive_into_every` and :func:`receive_to_fd_every` (completions handed
    back every N messages of a batch: venet's txmitigation).
``lowlevel``
    raw index operations (push, pop, seek ...), for tests and tools.

Arguments are checked before C is called.  Nothing here may hand out a pointer
into shared memory that can outlive the mapping, and a handle must never
be used by two threads or tasks at once.
"""

from ._binding import ABI_VERSION as ABI_VERSION
from ._binding import SOUTH_MAX_DATA as SOUTH_MAX_DATA
from ._blk import BlockCounts, BlockLayout, BlockServer
from ._errors import IoqClosed, IoqEmpty, IoqError, IoqFault, IoqFull
from ._fdpump import FdPump, PumpCounts, PumpEnd
from ._ioq import Ioq
from ._poller import Poller
from ._ring import Direction as Direction
from ._ring import FdBatch, IoqFds
from ._ring import Side as Side
from ._switch import Switch, SwitchCounts
from ._switch_runner import RunCounts, SwitchRunner
from ._tap_runner import TapCounts, TapRunner
from ._trio import AsyncIoq
from ._venet import poll_ready, receive_into_every, receive_to_fd_every
from .lowlevel import Descriptor
from .lowlevel import Index as Index
from .lowlevel import Whence as Whence

__all__ = [
    "AsyncIoq",
    "BlockCounts",
    "BlockLayout",
    "BlockServer",
    "Descriptor",
    "FdBatch",
    "FdPump",
    "Ioq",
    "IoqClosed",
    "IoqEmpty",
    "IoqError",
    "IoqFault",
    "IoqFds",
    "IoqFull",
    "Poller",
    "PumpCounts",
    "PumpEnd",
    "RunCounts",
    "Switch",
    "SwitchCounts",
    "SwitchRunner",
    "TapCounts",
    "TapRunner",
    "poll_ready",
    "receive_into_every",
    "receive_to_fd_every",
]
