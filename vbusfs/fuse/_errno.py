"""How a handler's failure reaches the kernel: only `FUSEError` may leave a handler.

A model refusal (`VbusError`) becomes its errno; running out of file descriptors is
refused with that errno; anything else is a bug, logged with its traceback and answered
EIO, and the mount stays up (pyfuse3 ends its main loop on any other exception).
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from vbusfs.model import VbusError

log = logging.getLogger("vbusfs.fuse")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def answers_errno(handler: F) -> F:
    """Only FUSEError may leave a handler: map model errors, log bugs as EIO."""

    @functools.wraps(handler)
    async def wrapper(*args: Any) -> Any:
        try:
            return await handler(*args)
        except pyfuse3.FUSEError:
            raise
        except VbusError as exc:
            log.debug("%s%r: %s", handler.__name__, args[1:], exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
                # No fd left (to read /proc with): refuse this request, the next may pass.
                log.warning("%s refused: %s", handler.__name__, exc.strerror)
                raise pyfuse3.FUSEError(exc.errno) from None
            log.exception("internal error in %s%r", handler.__name__, args[1:])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)
