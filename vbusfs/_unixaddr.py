"""AF_UNIX addresses for socket paths of any length.

A socket address holds at most 107 bytes of path (`sun_path` is 108 with its NUL),
but a runtime directory can be deeper than that (`VBUSFS_RUNTIME_DIR`, a long
`XDG_RUNTIME_DIR`, a test's temporary directory). `unix_address` gives the path
itself when it fits, else the same file reached through a descriptor of its
directory (`/proc/self/fd/N/NAME`), which binds and connects alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

#: the longest path `bind`/`connect` take directly (sun_path without its NUL)
MAX_PATH = 107


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """`path` as an address `bind` or `connect` takes, valid inside the block."""
    if len(os.fsencode(path)) <= MAX_PATH:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)
