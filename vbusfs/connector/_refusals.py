"""How the connector says no when the kernel does: out of descriptors or memory, or a
client's segment it cannot map. Each becomes an errno and a reason, never a crash.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Sequence

import trio

from vbusfs.model import DeviceConnection, VbusError

from ._protocol import DaemonConnection

# the errnos of running out of something the kernel gives: a refusal, never a crash
EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# a client's ring or data segment that cannot be mapped: what the refusal says
MAP_ERRNOS = {errno.ENOMEM: errno.EFBIG, errno.EOVERFLOW: errno.EFBIG, errno.ENODEV: errno.EINVAL}


def out_of(exc: OSError) -> str:
    """The reason a refusal for `exc` (one of EXHAUSTED) gives."""
    what = "memory" if exc.errno in (errno.ENOMEM, errno.ENOBUFS) else "file descriptors"
    return f"the daemon is out of {what} ({os.strerror(exc.errno or 0)})"


def spare_fd() -> int | None:
    """A descriptor to hold in reserve (None if there is none to have)."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def attach_queue(connection: DeviceConnection, index: int, fds: Sequence[int]) -> None:
    """Map the client's ring and data segment: one it cannot map is refused, not a bug."""
    try:
        connection.attach_queue(index, list(fds))
    except OSError as exc:  # read-only, sealed against writes, too big to map, not a memfd
        code = MAP_ERRNOS.get(exc.errno or 0, exc.errno or errno.EINVAL)
        why = exc.strerror or str(exc) or type(exc).__name__
        raise VbusError(
            f"queue {index}: cannot map the client's segments: {why}", errno=code
        ) from None
    except (ValueError, OverflowError) as exc:
        raise VbusError(f"queue {index}: {exc}", errno=errno.EINVAL) from None


async def refuse_exhausted(
    complain: Callable[..., None],
    listener: trio.socket.SocketType,
    spare: int | None,
    exc: OSError,
) -> int | None:
    """accept() found no descriptor left: refuse the waiting peer, keep serving. Returns
    the descriptor now held in reserve (None: there was none to have)."""
    why = out_of(exc)
    complain(0, logging.WARNING, "refusing a connection: %s", why)
    if spare is not None:
        os.close(spare)
        with contextlib.suppress(OSError), trio.move_on_after(0.1):
            refused, _ = await listener.accept()  # at once: the peer just seen waits
            with refused:
                await refused.send(DaemonConnection().refuse(exc.errno or errno.EMFILE, why))
        spare = spare_fd()
    if spare is None:
        await trio.sleep(0.05)  # nothing to accept with: let the others finish
    return spare
