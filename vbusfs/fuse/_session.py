"""The one pyfuse3 session of a process: mount options, mount, the request loop, close.

pyfuse3 keeps one session per process in module state; these functions are the
only way the rest of vbusfs touches it, so pyfuse3 stays imported here and in
`_operations` alone. What to mount, when, and what to do about failures is the
daemon's business, never this module's.
"""

from __future__ import annotations

import logging
import os

import pyfuse3

from vbusfs._mountinfo import FSTYPE

from ._operations import VbusOperations

# FSTYPE: the kernel's type for our mounts: "fuse." plus the subtype in `mount_options()`.
__all__ = ["FSTYPE", "close", "handle_requests", "mount", "mount_options", "terminate"]


# the operations of the session mounted in this process, if any
_mounted: VbusOperations | None = None


def mount_options() -> set[str]:
    options = set(pyfuse3.default_options) | {"fsname=vbusfs", "subtype=vbusfs"}
    if os.getuid() == 0:
        # Members and other users must reach the trees; permission bits still apply.
        options.add("allow_other")
    return options


def mount(operations: VbusOperations, mountpoint: str) -> None:
    """Mount `operations` at `mountpoint`; requests are answered once `handle_requests` runs.

    Raises RuntimeError when libfuse refuses; libfuse writes its reason to fd 2.
    """
    global _mounted
    pyfuse3.init(operations, mountpoint, mount_options())
    # blocking: called from the adapter's invalidation thread only, never from a handler
    # (the kernel may wait for the very request being answered); see `_cache`
    operations.invalidate_entry = pyfuse3.invalidate_entry
    operations.invalidations.threaded = True
    _mounted = operations


async def handle_requests() -> None:
    """Answer requests until the filesystem is unmounted or `terminate()` is called."""
    await pyfuse3.main()


def terminate() -> None:
    """End `handle_requests()` (from within the same trio run)."""
    pyfuse3.terminate()


def _after_close(record: logging.LogRecord) -> bool:
    # Invalidations still queued when the session goes fail (EINVAL): the kernel's entries
    # went with the mount, so there is nothing left to invalidate. One debug line, no trace.
    if str(record.msg).startswith("Failed to submit invalidate_entry"):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        record.msg += " (the session had closed)"
    return True


def close() -> None:
    """Unmount and release the session; it belongs in a `finally` after `mount()`."""
    global _mounted
    logging.getLogger("pyfuse3").addFilter(_after_close)
    if _mounted is not None:
        _mounted.pollers.close()  # before the session goes: nothing may notify it after
        _mounted.invalidations.close()
        _mounted = None
    pyfuse3.close(unmount=True)
