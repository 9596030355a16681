"""Where a mount appears, read from /proc/<pid>/mountinfo.

Link targets are walked in the caller's view (`_links`); where that walk cannot be
made (a caller outside our pid namespace), an absolute target is matched here against
where the caller's mountinfo shows the mount: the caller may sit in another mount
namespace where the trees are bind-mounted elsewhere (`vbusfs run` puts config/vbus at
/config/vbus). Reading procfs never re-enters this mount, so it is safe inside a
request handler.
"""

from __future__ import annotations

import os
import time

from vbusfs._mountinfo import MountEntry, mount_at, read_mountinfo
from vbusfs.views import Path

__all__ = ["MountEntry", "MountLocations", "mount_at", "read_mountinfo"]


def _parts(path: str) -> list[str]:
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return parts


class MountLocations:
    """Maps absolute paths, as a given process sees them, into the mount.

    Where the mount appears is read from the caller's mountinfo and kept per
    mount namespace for a moment, so a burst of links costs one read; a path
    that matches nothing is checked again against a fresh read.
    """

    CACHE_SECONDS = 1.0

    def __init__(self, device: str | None = None, mount_point: str | None = None) -> None:
        self.device = device
        self.mount_point = mount_point
        self._cache: dict[str, tuple[float, list[tuple[str, str]]]] = {}

    def resolve(self, text: str, pid: int) -> Path | None:
        """The path inside the mount that `text` names for process `pid`, else None."""
        wanted = _parts(text)
        for fresh in (False, True):
            locations, was_fresh = self._locations(pid, fresh)
            best: tuple[int, list[str]] | None = None
            for mount_point, root in locations:
                prefix = _parts(mount_point)
                if wanted[: len(prefix)] == prefix and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), _parts(root))
            if best is not None:
                length, root_parts = best
                return tuple(root_parts + wanted[length:])
            if was_fresh:
                break
        return None

    def _locations(self, pid: int, fresh: bool) -> tuple[list[tuple[str, str]], bool]:
        if self.device is not None and pid > 0:
            try:
                namespace = os.readlink(f"/proc/{pid}/ns/mnt")
                cached = self._cache.get(namespace)
                now = time.monotonic()
                if cached is not None and not fresh and now - cached[0] < self.CACHE_SECONDS:
                    return cached[1], False
                found = [
                    (e.mount_point, e.root) for e in read_mountinfo(pid) if e.device == self.device
                ]
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[namespace] = (now, found)
                return found, True
            except OSError:
                pass  # the caller is gone; fall back to our own view
        if self.mount_point is not None:
            return [(self.mount_point, "/")], True
        return [], True
