"""The FUSE adapter: the only importer of pyfuse3.

It serves the trees of `vbusfs.views` over a `vbusfs.model.Vbus`, owns inode
numbers, lookup counts, readdir offsets and caching, and runs the daemon's
life cycle.
"""

from ._daemon import (
    FSTYPE,
    MountError,
    MountState,
    canonical_mountpoint,
    clear_stale,
    daemon_command,
    explain_mount_failure,
    fuse_problem,
    lazy_unmount,
    mountpoint_problem,
    ready_fd_reporter,
    runtime_dir,
    serve,
    spawn,
    start_daemon,
    state_path,
    unmount,
    wait_ready,
)
from ._inodes import InodeTable
from ._mountinfo import MountEntry, MountLocations, mount_at, read_mountinfo
from ._operations import VbusOperations

__all__ = [
    "FSTYPE",
    "InodeTable",
    "MountEntry",
    "MountError",
    "MountLocations",
    "MountState",
    "VbusOperations",
    "canonical_mountpoint",
    "clear_stale",
    "daemon_command",
    "explain_mount_failure",
    "fuse_problem",
    "lazy_unmount",
    "mount_at",
    "mountpoint_problem",
    "read_mountinfo",
    "ready_fd_reporter",
    "runtime_dir",
    "serve",
    "spawn",
    "start_daemon",
    "state_path",
    "unmount",
    "wait_ready",
]
