"""Zero-copy: memoryviews onto a ring's data segment, acquired and committed in sub-batches.

A side acquires buffers (a sender: empty ones to write messages into; a
receiver: the messages themselves), works in them in place, and commits them
to the peer oldest first, as many at a time as it likes: the ones not yet
committed stay acquired, valid and in order, and a later acquire adds to them.
What a message costs here is two crossings into C per batch (acquire, commit),
a slice of one cached memoryview per buffer and its release at commit; the
offsets and lengths travel through arrays allocated once per ring.

It must never let a view outlive its buffer's ownership: a committed (or
unacquired) buffer's view is released before the call returns, and the mapping
itself outlives every view (a Python mmap refuses to unmap while views exist).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from ._binding import E_FAULT, E_MSGSIZE, ffi, lib, raise_code
from ._errors import IoqClosed, IoqError

if TYPE_CHECKING:
    import array

    from ._binding import IoqPtr, U32Array, U64Array

# bound once: the per-batch paths skip the attribute lookups
_acquire = lib.ioq_acquire
_commit_acquire = lib.ioq_commit_acquire
_unpack = ffi.unpack
_NULL = ffi.NULL


class ZeroCopy:
    """The zero-copy half of :class:`~vbusfs.ioq._ring.Ring` (its attributes are set there)."""

    _h: IoqPtr | None
    count: int
    sender: bool
    _op: int  # SEND or RECV: the one operation this side of this ring has
    _whole: memoryview  # the data segment, sliced for every view
    _offs: U64Array
    _lens: U32Array
    _offs_mv: memoryview  # the same two arrays, read without cffi's per-item cost
    _lens_mv: memoryview
    _views: list[memoryview]  # the acquired set, oldest first

    @property
    def acquired(self) -> int:
        """How many buffers are acquired (:meth:`acquire_nowait`) and not yet committed."""
        return len(self._views)

    def acquire_nowait(self, max_buffers: int = 64) -> list[memoryview]:
        """Zero-copy: up to ``max_buffers`` more views onto the data segment.

        A sender gets empty buffers (their full capacity) to write messages into; a
        receiver gets the messages themselves.  They join the acquired set after the
        ones acquired before, and only the new ones are returned.  IoqFull or IoqEmpty
        if there are none (or the set already holds every descriptor).
        """
        # the per-batch path: what C checks anyway (and clamps) is left to C
        h = self._h
        if h is None or max_buffers < 1:
            self._refuse(h, max_buffers)
        try:
            k = _acquire(h, self._op, max_buffers, self._offs, self._lens)
        except OverflowError:
            k = _acquire(h, self._op, self.count, self._offs, self._lens)
        if k < 1:
            raise_code(k)
        if k == 1:
            o = self._offs_mv[0]
            views = [self._whole[o : o + self._lens_mv[0]]]
        else:
            views = self._slice(k)
        self._views += views
        return views

    def _slice(self, k: int) -> list[memoryview]:
        # the k buffers C just acquired, from the one cached view of the segment
        whole = self._whole
        return [
            whole[o : o + n]
            for o, n in zip(self._offs_mv[:k].tolist(), self._lens_mv[:k].tolist(), strict=True)
        ]

    def commit(
        self,
        count: int,
        lengths: Sequence[int] | array.array[int] | None = None,
        *,
        acquire: int = 0,
    ) -> list[memoryview]:
        """Hand the oldest ``count`` acquired buffers to the peer and release their views.

        A sender gives the length it wrote into each (``lengths``, one per buffer; a
        list, a tuple or an ``array.array("I")``).  The buffers after them stay acquired
        and valid.  Nothing changes when it raises (but for IoqFault: the ring is dead).

        ``acquire=n`` then acquires up to ``n`` more, in the same call into C (one call
        per message for a side that streams), and returns their views, as
        :meth:`acquire_nowait` would, or ``[]`` when there are none (the commit stands).
        Without it, it returns ``[]``.
        """
        h = self._h
        views = self._views
        if h is None or not 0 <= count <= len(views) or acquire < 0:
            self._refuse(h, count, len(views))
        if lengths is None:
            if self.sender:
                raise ValueError("a sender commits one length per buffer")
            lens: object = _NULL
        elif len(lengths) != count or not self.sender:
            raise ValueError("a sender commits one length per buffer; a receiver none")
        else:
            lens = lengths
        try:
            try:
                rc = _commit_acquire(h, self._op, count, lens, 1, acquire, self._offs, self._lens)  # type: ignore[arg-type]
            except TypeError:  # not a list or a tuple: an array("I"), say
                rc = _commit_acquire(
                    h, self._op, count, _u32(lengths or ()), 1, acquire, self._offs, self._lens
                )
        except OverflowError:
            raise ValueError("lengths must be 0..2**32-1, acquire >= 0") from None
        if rc < 0:
            if rc == E_MSGSIZE:
                raise ValueError("a length exceeds the capacity of its buffer")
            if rc == E_FAULT:
                self._release_views()  # the handle is dead
            raise_code(rc)
        if count == len(views):
            for view in views:
                view.release()
            views.clear()
        else:
            for view in views[:count]:
                view.release()
            del views[:count]
        if rc == 0:
            return []
        if rc == 1:
            o = self._offs_mv[0]
            new = [self._whole[o : o + self._lens_mv[0]]]
        else:
            new = self._slice(rc)
        views += new
        return new

    def _refuse(self, h: IoqPtr | None, n: int, most: int | None = None) -> NoReturn:
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        if most is None:
            raise ValueError("max_buffers must be >= 1")
        raise ValueError(f"count must be 0..{most} (buffers acquired)")

    def unacquire(self, count: int | None = None) -> None:
        """Give back the newest ``count`` acquired buffers (all by default) without handing
        them to the peer, and release their views; the next acquire finds them again."""
        h = self._h
        if h is None:
            raise IoqClosed(errno.EBADF, "ioq is closed")
        views = self._views
        n = len(views) if count is None else count
        if not 0 <= n <= len(views):
            raise ValueError(f"count must be 0..{len(views)} (buffers acquired)")
        lib.ioq_unacquire(h, n)
        for view in views[len(views) - n :]:
            view.release()
        del views[len(views) - n :]

    def _release_views(self) -> None:
        for view in self._views:
            view.release()
        self._views.clear()

    def _not_acquiring(self) -> None:
        # the copying paths that go through acquire and commit themselves
        if self._views:
            raise IoqError(errno.EBUSY, "zero-copy buffers are acquired: commit them first")


def _u32(lengths: Sequence[int] | array.array[int]) -> U32Array | list[int]:
    import array as _array

    if isinstance(lengths, _array.array) and lengths.itemsize == 4 and lengths.typecode in "IL":
        return ffi.from_buffer("uint32_t[]", lengths)
    try:
        return list(lengths)
    except TypeError:
        raise ValueError("lengths must be a sequence of ints") from None
