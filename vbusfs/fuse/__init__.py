"""The FUSE adapter: the only importer of pyfuse3; it imports only the model and views.

It serves the trees of `vbusfs.views` over a `vbusfs.model.Vbus`: it owns inode
numbers, lookup counts, readdir offsets and caching, resolves link targets as the kernel
would for their caller (`_links`: the caller's cwd, root and mountinfo), and wraps the one
pyfuse3 session.
Composing a daemon (deviceclasses, connector, membership backend, signals) and
starting or stopping one is `vbusfs.daemon`'s job.
"""

from ._inodes import InodeTable
from ._mountinfo import MountEntry, MountLocations, mount_at, read_mountinfo
from ._operations import VbusOperations
from ._session import FSTYPE, close, handle_requests, mount, mount_options, terminate

__all__ = [
    "FSTYPE",
    "InodeTable",
    "MountEntry",
    "MountLocations",
    "VbusOperations",
    "close",
    "handle_requests",
    "mount",
    "mount_at",
    "mount_options",
    "read_mountinfo",
    "terminate",
]
