"""poll, select and epoll on attribute files, as sysfs has them (behaviour §4).

A regular file is always readable and writable (the default mask). POLLPRI|POLLERR is
added while the value differs from what the handle last read (its rendering at open, at
its last read from offset 0, or after its last write), or when the value can no longer
be read (its object was removed: ENODEV). A read from offset 0 re-arms. The comparison
is made at every poll, so a wake-up the value does not bear out costs the kernel one
more FUSE_POLL and the poller never sees it; changes therefore wake liberally.

Waking: a handle that found nothing keeps the kernel's poll handle; the model's
change stream (`Vbus.changes`) names the owner (a device, interface, bus or process)
whose attributes changed, and every handle of that owner that waits is notified once.
Notifying a poll handle takes no inode lock in the kernel (it only wakes the file's
wait queue), so it is safe from a handler. Changes the model never hears of (a process
forking into a bus or exiting) are caught by `recheck`, which the daemon's membership
sweep calls; a deviceclass says itself when a value changes by itself (`notify`).
"""

from __future__ import annotations

import logging
import select
from collections.abc import Iterator

from vbusfs import views
from vbusfs.model import (
    AttributeChanged,
    AttributeStored,
    BusRemoved,
    Change,
    DeviceRemoved,
    Linked,
    MembershipChanged,
    PermStored,
    TypeSet,
    Unlinked,
    VbusError,
)

from ._handles import FileHandle, render

log = logging.getLogger("vbusfs.fuse")

# what a regular file always is, as the kernel's DEFAULT_POLLMASK
READY = select.POLLIN | select.POLLRDNORM | select.POLLOUT | select.POLLWRNORM
# what sysfs adds once the value changed since it was read
CHANGED = select.POLLPRI | select.POLLERR


class Pollers:
    """The open attribute handles by owner and attribute name, and their waits."""

    def __init__(self) -> None:
        self._by_owner: dict[object, dict[str, set[FileHandle]]] = {}
        self._closed = False

    def close(self) -> None:
        """The session is going: a poll handle notified after it is gone would write to a
        freed session, so every wait is dropped and nothing is notified any more."""
        self._closed = True
        for names in self._by_owner.values():
            for handles in names.values():
                for handle in handles:
                    handle.waiter = None

    def opened(self, handle: FileHandle) -> None:
        source = handle.file.source
        if source is not None:
            owner, name = source
            self._by_owner.setdefault(owner, {}).setdefault(name, set()).add(handle)

    def released(self, handle: FileHandle) -> None:
        handle.waiter = None
        source = handle.file.source
        names = self._by_owner.get(source[0]) if source is not None else None
        if source is None or names is None:
            return
        handles = names.get(source[1])
        if handles is not None:
            handles.discard(handle)
            if not handles:
                del names[source[1]]
                if not names:
                    del self._by_owner[source[0]]

    def poll(self, handle: FileHandle, waiter: object | None) -> int:
        """The handle's mask now; keeps `waiter` (the kernel's poll handle) to notify
        when nothing is to report yet."""
        if _changed(handle):
            handle.waiter = None
            return READY | CHANGED
        if waiter is not None and not self._closed:
            handle.waiter = waiter  # the newest replaces any older one (pyfuse3's rule)
        return READY

    def heard(self, change: Change) -> None:
        """A subscriber of the model's change stream: wake whom `change` concerns."""
        if self._closed:
            return
        try:
            for owner, name in _concerns(change):
                self._wake(owner, name)
        except Exception:
            log.exception("internal error waking pollers for %r", change)

    def recheck(self) -> None:
        """Wake the waiting membership files whose value changed unannounced: the model
        never hears of a process forking into a bus or exiting. (A deviceclass says
        itself when a value changes by itself: `DeviceClass.notify`, as sysfs_notify.)"""
        for owner, names in list(self._by_owner.items()):
            if not views.is_process_owner(owner):
                continue
            for handles in list(names.values()):
                for handle in list(handles):
                    if handle.waiter is not None and _changed(handle):
                        _notify(handle)

    def _wake(self, owner: object, name: str | None) -> None:
        names = self._by_owner.get(owner)
        if names is None:
            return
        groups = names.values() if name is None else [names.get(name, set())]
        for handles in list(groups):
            for handle in list(handles):
                _notify(handle)


def _changed(handle: FileHandle) -> bool:
    try:
        return render(handle.file) != handle.content
    except VbusError:
        return True  # gone (ENODEV, ESRCH): sysfs reports a removed file as changed


def _notify(handle: FileHandle) -> None:
    waiter, handle.waiter = handle.waiter, None
    if waiter is None:
        return
    try:
        waiter.notify()
    except OSError as exc:
        # the kernel let go of the file meanwhile (released, or unmounted): nobody waits
        log.debug("poll notify: %s", exc)


def _concerns(change: Change) -> Iterator[tuple[object, str | None]]:
    """(owner, attribute name or None for all of them) whose files `change` may alter."""
    match change:
        case AttributeChanged(owner=owner, name=name):
            yield owner, name
        case AttributeStored(owner=owner) | TypeSet(device=owner) | DeviceRemoved(device=owner):
            # a store may change the attributes its declaration `affects`
            yield owner, None
        case PermStored(bus=bus) | BusRemoved(bus=bus):
            yield bus, None
        case Linked(interface=interface) | Unlinked(interface=interface):
            # what a device shows may depend on its interfaces (a switch's ports)
            yield interface.device, None
            yield interface, None
        case MembershipChanged(pid=pid):
            yield views.process_owner(pid), None
