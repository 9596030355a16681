"""Views: the config and sys trees computed from the model, and what each path allows.

Pure: no I/O, no caches. The FUSE adapter serves these trees; the demo
renders them directly when no mount is possible.
"""

from vbusfs.model import NO_BUS

from ._nodes import (
    CONFIG_DEVICES,
    CONFIG_INSTANCES,
    CONFIG_VBUS,
    FIXED_PATHS,
    SYS_VBUS,
    Caller,
    DirNode,
    FileNode,
    Node,
    Path,
    SymlinkNode,
    children,
    config_link_target,
    dependents,
    is_process_owner,
    node,
    process_owner,
)
from ._ops import TooManySymlinks, join, mkdir, resolve, rmdir, symlink, unlink
from ._render import render_tree

__all__ = [
    "CONFIG_DEVICES",
    "CONFIG_INSTANCES",
    "CONFIG_VBUS",
    "FIXED_PATHS",
    "NO_BUS",
    "SYS_VBUS",
    "Caller",
    "DirNode",
    "FileNode",
    "Node",
    "Path",
    "SymlinkNode",
    "TooManySymlinks",
    "children",
    "config_link_target",
    "dependents",
    "is_process_owner",
    "join",
    "mkdir",
    "node",
    "process_owner",
    "render_tree",
    "resolve",
    "rmdir",
    "symlink",
    "unlink",
]
