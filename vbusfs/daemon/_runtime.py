"""Where a daemon keeps its state: the runtime directory, its state file, its socket.

Paths are derived from the canonical mount point, so every command that names the
same directory finds the same daemon.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.parse
from dataclasses import dataclass


def canonical_mountpoint(path: str) -> str:
    """The absolute path of a mount point without touching the mount itself.

    realpath() would stat a dead FUSE mount and fail; the parent is safe.
    """
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def runtime_dir() -> str:
    explicit = os.environ.get("VBUSFS_RUNTIME_DIR")
    if explicit:
        return explicit
    if os.getuid() == 0:
        return "/run/vbusfs"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "vbusfs")
    return f"/tmp/vbusfs-{os.getuid()}"


def connector_path(mountpoint: str) -> str:
    """The connector socket of the daemon serving `mountpoint` (short: sun_path is 108 bytes)."""
    digest = hashlib.sha256(canonical_mountpoint(mountpoint).encode()).hexdigest()[:20]
    return os.path.join(runtime_dir(), "connectors", f"{digest}.sock")


def prepare_connector_dir(path: str) -> None:
    # Members of any user must reach the socket: the folders are world-searchable.
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    for directory in (os.path.dirname(folder), folder):
        if os.stat(directory).st_uid == os.getuid():
            os.chmod(directory, 0o755)


def state_path(mountpoint: str) -> str:
    """Where the daemon serving `mountpoint` records its pid and log file."""
    name = urllib.parse.quote(canonical_mountpoint(mountpoint), safe="")
    return os.path.join(runtime_dir(), "mounts", name + ".json")


@dataclass(frozen=True)
class MountState:
    pid: int
    mountpoint: str
    log: str | None

    @classmethod
    def load(cls, mountpoint: str) -> MountState | None:
        try:
            with open(state_path(mountpoint), encoding="utf-8") as f:
                data = json.load(f)
            return cls(int(data["pid"]), str(data["mountpoint"]), data.get("log"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self) -> None:
        path = state_path(self.mountpoint)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"pid": self.pid, "mountpoint": self.mountpoint, "log": self.log}, f)
        os.replace(tmp, path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_path(self.mountpoint))
