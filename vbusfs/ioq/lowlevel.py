"""LOW LEVEL: raw operations on a ring's ``valid`` and ``inuse`` indices.

These act on the IOQ version 4 indices directly, one descriptor per call, the
way the original vbus driver did: north pushes on ``valid``, ``inuse`` or both,
south pops ``inuse``, north pops ``valid``; cursors move with :func:`seek`.  They
exist for protocol tests and tools that need to put a ring into a particular
state.  They take either face (:class:`vbusfs.ioq.Ioq` or :class:`vbusfs.ioq.AsyncIoq`)
and are not its methods: a program that moves messages wants the faces' send and
receive methods instead.  These bypass the data segment's slot layout, and mixing
them with the data path is only safe if you keep the protocol yourself.

Every function checks its arguments before calling C and raises through the
binding's one error table; none of them blocks.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from ._binding import INDICES, WHENCE, check, ffi, lib
from ._ring import Ring, c_handle

__all__ = [
    "Descriptor",
    "Index",
    "Whence",
    "count_of",
    "descriptor",
    "is_empty",
    "is_full",
    "pop",
    "push",
    "remain",
    "seek",
]

Index = Literal["valid", "inuse", "both"]
Whence = Literal["head", "tail", "next", "prev", "set"]


class Descriptor(NamedTuple):
    """A private copy of one ring descriptor."""

    cookie: int
    ptr: int
    len: int
    valid: bool
    sown: bool


def _index(index: Index, allow_both: bool = False) -> int:
    if index not in INDICES or (index == "both" and not allow_both):
        raise ValueError(f"index must be 'valid', 'inuse'{' or both' if allow_both else ''}")
    return INDICES[index]


def push(ring: Ring, index: Index, cookie: int, ptr: int, length: int) -> None:
    """North: push one descriptor at the tail of ``index`` ("valid", "inuse" or "both").

    A valid push fills a free descriptor; an inuse push gives it to south
    (ownership bit set).  IoqFull when the slot is not free for that.
    """
    h = c_handle(ring)
    which = _index(index, allow_both=True)
    if not (0 <= cookie < 2**64 and ptr >= 0 and length >= 0):
        raise ValueError("cookie, ptr and length must be non-negative (cookie < 2**64)")
    data_len = lib.ioq_data_len(h)
    if ptr + length > data_len:
        raise ValueError(f"ptr + length must lie inside the {data_len}-byte data segment")
    check(lib.ioq_push(h, which, cookie, ptr, length))


def pop(ring: Ring, index: Index) -> Descriptor:
    """Pop at the head of ``index``: "inuse" on south, "valid" on north.

    (Popping both at once would make one side write the other's index.)
    """
    h = c_handle(ring)
    out = ffi.new("struct ioq_desc *")
    check(lib.ioq_pop(h, _index(index), out))
    return Descriptor(out.cookie, out.ptr, out.len, bool(out.valid), bool(out.sown))


def count_of(ring: Ring, index: Index) -> int:
    """Descriptors between head and tail of ``index``."""
    return check(lib.ioq_count(c_handle(ring), _index(index)))


def remain(ring: Ring, index: Index) -> int:
    """Free descriptors on ``index``: count minus :func:`count_of`."""
    return check(lib.ioq_remain(c_handle(ring), _index(index)))


def is_full(ring: Ring, index: Index) -> bool:
    return bool(check(lib.ioq_full(c_handle(ring), _index(index))))


def is_empty(ring: Ring, index: Index) -> bool:
    return bool(check(lib.ioq_empty(c_handle(ring), _index(index))))


def seek(ring: Ring, index: Index, whence: Whence, offset: int = 0) -> int:
    """Move this side's cursor on ``index``; return its position.

    "head"/"tail" + offset, "next", "prev", or "set" to ``offset``.
    """
    h = c_handle(ring)
    if whence not in WHENCE:
        raise ValueError(f"whence must be one of {sorted(WHENCE)}")
    if whence == "set" and not 0 <= offset < ring.count:
        raise ValueError(f"position must be 0..{ring.count - 1}")
    if not -(2**31) <= offset < 2**31:
        raise ValueError("offset out of range")
    return check(lib.ioq_seek(h, _index(index), WHENCE[whence], offset))


def descriptor(ring: Ring, pos: int) -> Descriptor:
    """A snapshot of descriptor ``pos`` as it is in shared memory (unvalidated)."""
    h = c_handle(ring)
    if not 0 <= pos < ring.count:
        raise ValueError(f"pos must be 0..{ring.count - 1}")
    out = ffi.new("struct ioq_desc *")
    check(lib.ioq_desc_at(h, pos, out))
    return Descriptor(out.cookie, out.ptr, out.len, bool(out.valid), bool(out.sown))
