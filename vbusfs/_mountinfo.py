"""/proc/<pid>/mountinfo, parsed: shared by the FUSE adapter and the client library.

A top-level module of its own (no vbusfs imports) so that both may use it
without an arrow between them, and so that the command line may find a mount without
importing the FUSE adapter (pyfuse3) or the daemon. It reads procfs and nothing else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

#: the filesystem type of a vbusfs mount, as mountinfo lists it
FSTYPE = "fuse.vbusfs"

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True, slots=True)
class MountEntry:
    device: str  # "major:minor"
    root: str  # the directory of the filesystem that is mounted here
    mount_point: str
    fstype: str


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Every mount a mountinfo text lists, in its order (lines it cannot read skipped)."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        if dash < 5 or dash + 1 >= len(fields):
            continue
        entries.append(
            MountEntry(fields[2], _unescape(fields[3]), _unescape(fields[4]), fields[dash + 1])
        )
    return entries


def read_mountinfo(pid: int | str = "self") -> list[MountEntry]:
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def mount_at(mount_point: str, pid: int | str = "self") -> MountEntry | None:
    """The topmost mount whose mount point is exactly `mount_point`."""
    found = None
    for entry in read_mountinfo(pid):
        if entry.mount_point == mount_point:
            found = entry
    return found


def canonical_mountpoint(path: str) -> str:
    """The absolute path of a mount point without touching the mount itself.

    realpath() would stat a dead FUSE mount and fail; the parent is safe.
    """
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
