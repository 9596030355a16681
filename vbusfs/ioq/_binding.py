"""The binding: the only module that imports the compiled ``vbusfs._ioq_cffi``.

It checks at import that the compiled ABI number is the one this package was
written against, names the C constants the rest of the package uses, and turns
every C return code into an exception in one place (:func:`check`,
:func:`raise_code`).  ``vbusfs/_ioq_cffi.pyi`` types ``ffi`` and ``lib``, so mypy
checks every C call made through them.  It must never grow logic of its own: the ring, the switch
and the low-level operations call C through ``lib`` and ``ffi`` from here.
"""

from __future__ import annotations

import array
import errno
import os
from typing import TYPE_CHECKING, Literal, NoReturn

# re-exported: the rest of the package calls C through these two names
from vbusfs._ioq_cffi import ffi as ffi
from vbusfs._ioq_cffi import lib as lib

from ._errors import IoqClosed, IoqEmpty, IoqError, IoqFault, IoqFull

if TYPE_CHECKING:
    # the C types, for annotations elsewhere in the package (they exist only in the stub)
    from vbusfs._ioq_cffi import IoqPtr as IoqPtr
    from vbusfs._ioq_cffi import PollerPtr as PollerPtr
    from vbusfs._ioq_cffi import U32Array as U32Array
    from vbusfs._ioq_cffi import U64Array as U64Array

#: The ABI this package was written against; must equal IOQ_ABI_VERSION in native/ioq.h.
ABI_VERSION = 18


def check_abi(compiled: int) -> None:
    """ImportError unless ``compiled`` (the module's ABI number) is :data:`ABI_VERSION`."""
    if compiled != ABI_VERSION:
        raise ImportError(
            f"vbusfs._ioq_cffi has ABI {compiled}, vbusfs.ioq expects "
            f"{ABI_VERSION}: rebuild the package (make setup)"
        )


check_abi(lib.ioq_abi_version())

DIRECTIONS = {"to_south": lib.IOQ_TO_SOUTH, "to_north": lib.IOQ_TO_NORTH}
INDICES = {"valid": lib.IOQ_IDX_VALID, "inuse": lib.IOQ_IDX_INUSE, "both": lib.IOQ_IDX_BOTH}
WHENCE = {
    "head": lib.IOQ_SEEK_HEAD,
    "tail": lib.IOQ_SEEK_TAIL,
    "next": lib.IOQ_SEEK_NEXT,
    "prev": lib.IOQ_SEEK_PREV,
    "set": lib.IOQ_SEEK_SET,
}
NORTH: int = lib.IOQ_NORTH
SEND: int = lib.IOQ_WAIT_SEND
RECV: int = lib.IOQ_WAIT_RECV
MAX_COUNT: int = lib.IOQ_MAX_COUNT
MAX_DATA: int = lib.IOQ_MAX_DATA
#: the largest data segment south attaches (behaviour §7.2)
SOUTH_MAX_DATA: int = lib.IOQ_SOUTH_MAX_DATA
FD_BATCH: int = lib.IOQ_FD_BATCH
POLLER_MAX: int = lib.IOQ_POLLER_MAX
#: spin_us="adaptive" in C, and the bound of the budget it learns (microseconds)
SPIN_ADAPTIVE: int = lib.IOQ_SPIN_ADAPTIVE
SPIN_MAX_US: int = lib.IOQ_SPIN_MAX_US

#: how long a wait polls before it sleeps: microseconds, or a budget learned per handle
Spin = int | Literal["adaptive"]


def spin_arg(spin_us: Spin) -> int:
    """The C spin argument for ``spin_us`` (an int >= 0 or "adaptive"); ValueError else."""
    if spin_us == "adaptive":
        return SPIN_ADAPTIVE
    if isinstance(spin_us, bool) or not isinstance(spin_us, int) or spin_us < 0:
        raise ValueError(f"spin_us must be an int >= 0 or 'adaptive', not {spin_us!r}")
    return spin_us


E_FULL: int = lib.IOQ_E_FULL
E_EMPTY: int = lib.IOQ_E_EMPTY
E_CLOSED: int = lib.IOQ_E_CLOSED
E_FAULT: int = lib.IOQ_E_FAULT
E_TIMEDOUT: int = lib.IOQ_E_TIMEDOUT
E_MSGSIZE: int = lib.IOQ_E_MSGSIZE
EINTR = -errno.EINTR
U32_MAX = 2**32 - 1
#: the array typecode of C's uint32_t (unsigned int on every Linux ABI we build for)
U32: Literal["I", "L"] = "I" if array.array("I").itemsize == 4 else "L"

ERRORS: dict[int, tuple[type[OSError], int, str]] = {
    lib.IOQ_E_FULL: (IoqFull, errno.ENOBUFS, "ioq full"),
    lib.IOQ_E_EMPTY: (IoqEmpty, errno.EAGAIN, "ioq empty"),
    lib.IOQ_E_FAULT: (IoqFault, errno.EPROTO, "ioq peer broke the protocol"),
    lib.IOQ_E_CLOSED: (IoqClosed, errno.EPIPE, "ioq peer hung up"),
    lib.IOQ_E_TIMEDOUT: (TimeoutError, errno.ETIMEDOUT, "ioq wait timed out"),
    lib.IOQ_E_INVAL: (IoqError, errno.EINVAL, "invalid ioq operation"),
    lib.IOQ_E_BADRING: (IoqError, errno.EINVAL, "not a valid ioq (magic/version/size/seals)"),
    lib.IOQ_E_MSGSIZE: (IoqError, errno.EMSGSIZE, "message longer than the buffer"),
    lib.IOQ_E_SIDE: (IoqError, errno.EPERM, "not allowed on this side of this ioq"),
    lib.IOQ_E_BUSY: (IoqError, errno.EBUSY, "zero-copy buffers are acquired: commit them first"),
}


def check(rc: int) -> int:
    """The one place a C return code becomes an exception: ``rc`` itself when >= 0."""
    if rc >= 0:
        return rc
    raise_code(rc)


def raise_code(rc: int) -> NoReturn:
    """Raise the exception for the negative C return code ``rc`` (-errno or IOQ_E_*)."""
    known = ERRORS.get(rc)
    if known is not None:
        cls, code, text = known
        raise cls(code, text)
    raise OSError(-rc, os.strerror(-rc))
