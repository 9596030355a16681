"""Filesystem operations on the trees: which path allows what, with which errno.

These functions turn mkdir, rmdir, unlink and symlink at a path into model
operations, and refuse everything else with the errno of behaviour §5.
They are pure: the FUSE adapter resolves what the caller typed into a path
inside the mount before calling them.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable

from vbusfs.model import (
    AlreadyExists,
    InvalidValue,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotPermitted,
    Vbus,
    VbusError,
    check_name,
)

from ._nodes import (
    CONFIG_DEVICES,
    CONFIG_INSTANCES,
    CONFIG_VBUS,
    Caller,
    DirNode,
    FileNode,
    Path,
    SymlinkNode,
    node,
)

MAX_SYMLINK_HOPS = 40


class TooManySymlinks(VbusError):
    errno = _errno.ELOOP


def mkdir(vbus: Vbus, parent: Path, name: str, *, uid: int = 0, gid: int = 0) -> None:
    """`uid` and `gid` are the creator's: a new bus is theirs (behaviour §6)."""
    if parent == CONFIG_DEVICES:
        vbus.create_device(name)
    elif parent == CONFIG_INSTANCES:
        vbus.create_bus(name, owner=uid, group=gid)
    else:
        raise NotPermitted("directories can only be made in config/vbus/devices or instances")


def rmdir(vbus: Vbus, parent: Path, name: str) -> None:
    if parent[:1] == ("proc",):
        raise NotPermitted("nothing in proc can be removed")
    path = (*parent, name)
    found = node(vbus, path)
    if found is None:
        raise NotFound(f"no entry {name}")
    if not isinstance(found, DirNode):
        raise NotADirectory(f"{name} is not a directory")
    if parent == CONFIG_DEVICES:
        vbus.remove_device(name)
    elif parent == CONFIG_INSTANCES:
        vbus.remove_bus(name)
    else:
        raise NotPermitted(f"{'/'.join(path)} cannot be removed")


def unlink(vbus: Vbus, parent: Path, name: str) -> None:
    if parent[:1] == ("proc",):
        raise NotPermitted("nothing in proc can be removed")
    found = node(vbus, (*parent, name))
    if found is None:
        raise NotFound(f"no entry {name}")
    if isinstance(found, DirNode):
        raise IsADirectory(f"{name} is a directory")
    if isinstance(found, SymlinkNode) and _is_bus_dir(parent):
        vbus.unlink(parent[3], name)
        return
    raise NotPermitted(f"{name} cannot be removed")


def symlink(
    vbus: Vbus, parent: Path, name: str, target: Path | Callable[[], Path | None] | None
) -> None:
    """Link a device into a bus. `target` is the resolved target, None if outside the mount,
    or what resolves it (called only once the link's own place and name are good, so a
    target that cannot be resolved never hides their errno)."""
    if not _is_bus_dir(parent) or parent[3] not in vbus.buses:
        raise NotPermitted("links can only be made directly in a bus directory")
    check_name(name, "link")
    if node(vbus, (*parent, name)) is not None:
        raise AlreadyExists(f"{name} exists")
    if callable(target):
        target = target()
    if target is None or target[:2] != CONFIG_VBUS:
        raise NotPermitted("a link must point inside this mount's config/vbus")
    resolved = resolve(vbus, target)
    if isinstance(node(vbus, resolved), FileNode):
        raise NotADirectory(f"{'/'.join(resolved)} is not a directory")
    if resolved[:3] != CONFIG_DEVICES or len(resolved) != 4:
        raise InvalidValue(f"{'/'.join(resolved)} is not a device")
    vbus.link(parent[3], name, resolved[3])


def _is_bus_dir(path: Path) -> bool:
    return len(path) == 4 and path[:3] == CONFIG_INSTANCES


def join(directory: Path, text: str) -> Path | None:
    """`text` taken relative to `directory`, lexically; None if it leaves the mount."""
    parts = list(directory)
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return tuple(parts)


def resolve(vbus: Vbus, path: Path, caller: Caller | None = None) -> Path:
    """Follow symlinks along `path` inside the trees, as a path walk would.

    Raises NotFound for a missing component, NotADirectory for a component
    that is a file, NotPermitted for a symlink leading outside the mount.
    """
    hops = 0
    done: Path = ()
    rest = list(path)
    while rest:
        here = (*done, rest.pop(0))
        found = node(vbus, here, caller)
        if found is None:
            raise NotFound(f"{'/'.join(here)} does not exist")
        if isinstance(found, SymlinkNode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise TooManySymlinks("too many levels of symbolic links")
            joined = join(done, found.target)
            if joined is None:
                raise NotPermitted("a symlink leads outside the mount")
            done, rest = (), [*joined, *rest]
            continue
        if isinstance(found, FileNode) and rest:
            raise NotADirectory(f"{'/'.join(here)} is not a directory")
        done = here
    return done
