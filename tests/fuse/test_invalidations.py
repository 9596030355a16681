"""What the kernel may cache, and which of its entries each change drops (behaviour §3).

The handlers are called directly with no mount: `invalidate_entry` records what the
kernel would be told. tests/mount/test_cache.py proves the same on a live mount.
"""

from __future__ import annotations

import errno
import threading
import time

import pyfuse3
import pytest
import trio
from fuse_calls import CTX, fuse_errno, lookup_path, run

from vbusfs.classes import default_model
from vbusfs.fuse import VbusOperations
from vbusfs.fuse._cache import LONG_TIMEOUT, Invalidations, caching_enabled
from vbusfs.fuse._inodes import ROOT_INODE


@pytest.fixture
def told() -> list[tuple[int, bytes]]:
    return []


@pytest.fixture
def ops(told: list[tuple[int, bytes]]) -> VbusOperations:
    ops = VbusOperations(default_model())
    ops.invalidate_entry = lambda parent, name: told.append((parent, name))
    return ops


def entry_of(ops: VbusOperations, path: str) -> pyfuse3.EntryAttributes:
    parent, _, name = path.rpartition("/")
    return run(ops.lookup, lookup_path(ops, parent) if parent else ROOT_INODE, name.encode(), CTX)


def linked_device(ops: VbusOperations) -> tuple[int, int]:
    """Device D (venet-loopback) linked into bus B as L; (config devices, bus) inodes."""
    devices = lookup_path(ops, "config/vbus/devices")
    bus = run(ops.mkdir, lookup_path(ops, "config/vbus/instances"), b"B", 0o755, CTX).st_ino
    run(ops.mkdir, devices, b"D", 0o755, CTX)
    ops.vbus.set_device_type("D", "venet-loopback")
    run(ops.symlink, bus, b"L", b"../../devices/D", CTX)
    return devices, bus


def test_objects_are_cached_long_what_depends_on_the_caller_or_processes_not(ops):
    linked_device(ops)
    for path in (
        "config/vbus/devices",  # the skeleton
        "config/vbus/devices/D",
        "config/vbus/devices/D/type",
        "config/vbus/instances/B/L",
        "sys/vbus/devices/D",
        "sys/vbus/devices/D/client_mac",
        "sys/vbus/devices/D/class",
        "sys/vbus/instances/B/devices/0/type",
    ):
        entry = entry_of(ops, path)
        assert (entry.entry_timeout, entry.attr_timeout) == (LONG_TIMEOUT, LONG_TIMEOUT), path
        assert run(ops.getattr, entry.st_ino, CTX).attr_timeout == LONG_TIMEOUT, path
    assert ops._timeout(("proc", "self")) == ops._timeout(("proc", "1", "vbus")) == 0
    for path in (
        "sys/vbus/instances/B/members",
        "config/vbus/instances/B/perms",
        "config/vbus/instances/B/perms/owner",
    ):
        entry = entry_of(ops, path)
        assert (entry.entry_timeout, entry.attr_timeout) == (0, 0), path


def test_the_switch_turns_caching_off(told, monkeypatch):
    assert caching_enabled({}) and caching_enabled({"VBUSFS_ENTRY_CACHE": "1"})
    assert not caching_enabled({"VBUSFS_ENTRY_CACHE": "0"})
    monkeypatch.setenv("VBUSFS_ENTRY_CACHE", "0")
    ops = VbusOperations(default_model())
    devices = lookup_path(ops, "config/vbus/devices")
    assert run(ops.getattr, devices, CTX).attr_timeout == LONG_TIMEOUT  # the skeleton stays
    entry = run(ops.mkdir, devices, b"D", 0o755, CTX)
    assert (entry.entry_timeout, entry.attr_timeout) == (0, 0)


def test_making_and_storing_drop_nothing(ops, told):
    devices, _bus = linked_device(ops)
    entry_of(ops, "sys/vbus/devices/D/client_mac")
    handle = run(ops.open, entry_of(ops, "sys/vbus/devices/D/client_mac").st_ino, 1, CTX)
    run(ops.write, handle.fh, 0, b"02:00:00:00:00:07\n")
    run(ops.mkdir, devices, b"E", 0o755, CTX)
    assert told == []


def test_rmdir_of_a_device_drops_its_sys_directory_only_where_the_kernel_holds_it(ops, told):
    devices = lookup_path(ops, "config/vbus/devices")
    sys_devices = lookup_path(ops, "sys/vbus/devices")
    run(ops.mkdir, devices, b"D", 0o755, CTX)
    run(ops.mkdir, devices, b"E", 0o755, CTX)
    entry_of(ops, "sys/vbus/devices/D/interfaces")
    run(ops.rmdir, devices, b"D", CTX)
    run(ops.rmdir, devices, b"E", CTX)  # the kernel never looked up sys/vbus/devices/E
    # config/vbus/devices/D itself: the kernel drops what it was asked to remove
    assert told == [(sys_devices, b"D")]


def test_unlink_drops_the_interface_in_both_places_rmdir_of_a_bus_its_sys_directory(ops, told):
    _devices, bus = linked_device(ops)
    bus_devices = lookup_path(ops, "sys/vbus/instances/B/devices")
    interfaces = lookup_path(ops, "sys/vbus/devices/D/interfaces")
    name = ops.vbus.buses["B"].links["L"].name
    entry_of(ops, "sys/vbus/instances/B/devices/0/type")
    entry_of(ops, f"sys/vbus/devices/D/interfaces/{name}")
    run(ops.unlink, bus, b"L", CTX)
    assert sorted(told) == sorted([(bus_devices, b"0"), (interfaces, name.encode())])
    told.clear()
    sys_instances = lookup_path(ops, "sys/vbus/instances")
    run(ops.rmdir, lookup_path(ops, "config/vbus/instances"), b"B", CTX)
    assert told == [(sys_instances, b"B")]


def test_a_reloaded_attribute_whose_mode_changed_is_dropped(ops, told):
    """drop_removed (after an administrator's op) checks every held path: one still
    there but with another mode is dropped, so the kernel looks it up anew."""
    _devices, _bus = linked_device(ops)
    mac = entry_of(ops, "sys/vbus/devices/D/client_mac")
    sys_d = lookup_path(ops, "sys/vbus/devices/D")
    run(ops.drop_removed)
    assert told == []
    ops.inodes.keep_mode(mac.st_ino, mac.st_mode ^ 0o200)  # as if declared 0644 before
    run(ops.drop_removed)
    assert told == [(sys_d, b"client_mac")]
    assert entry_of(ops, "sys/vbus/devices/D/client_mac").st_ino != mac.st_ino


def test_after_a_class_op_only_the_classes_it_named_are_checked(ops, told):
    """modprobe, reload and rmmod change deviceclasses alone (never one with devices):
    drop_removed told their names drops what went of them and looks at nothing else;
    told nothing (a reset) it checks every held path."""
    linked_device(ops)
    classes = lookup_path(ops, "sys/vbus/deviceclass")
    switch = lookup_path(ops, "sys/vbus/deviceclass/venet-switch")
    lookup_path(ops, "sys/vbus/deviceclass/venet-tap")
    sys_devices = lookup_path(ops, "sys/vbus/devices")
    entry_of(ops, "sys/vbus/devices/D/client_mac")
    ops.vbus.unload_class("venet-switch")  # behind its back, as an rmmod
    ops.vbus.unlink("B", "L")  # and what no class op can do
    ops.vbus.remove_device("D")
    run(ops.drop_removed, ["venet-tap"])  # still loaded: nothing to drop
    assert told == []
    run(ops.drop_removed, ["venet-switch", "no-such-class"])
    assert told == [(classes, b"venet-switch")]
    assert ops.inodes.path(switch) is None  # detached: its number answers ENOENT now
    assert ops.inodes.find(("sys", "vbus", "devices", "D")) is not None  # not looked at
    run(ops.drop_removed)
    assert (sys_devices, b"D") in told[1:]
    assert ops.inodes.find(("sys", "vbus", "devices", "D")) is None


def test_xattrs_outside_the_user_namespace_are_not_supported(ops):
    ops.root_xattrs = {b"user.vbusfs.connector": b"/run/x.sock"}
    device = run(ops.mkdir, lookup_path(ops, "config/vbus/devices"), b"D", 0o755, CTX).st_ino
    assert run(ops.getxattr, ROOT_INODE, b"user.vbusfs.connector", CTX) == b"/run/x.sock"
    for ino in (ROOT_INODE, device):
        for name in (b"security.selinux", b"system.posix_acl_access", b"trusted.x"):
            assert fuse_errno(ops.getxattr, ino, name, CTX) == errno.EOPNOTSUPP
        assert fuse_errno(ops.getxattr, ino, b"user.other", CTX) == pyfuse3.ENOATTR


def test_a_request_waits_for_its_drops_but_not_for_those_in_directories_it_holds():
    """Mounted, drops go through a thread; settle returns once the kernel took the
    drops outside the request's own directories, and never waits on those inside."""
    taken: list[tuple[int, bytes]] = []
    release_locked = threading.Event()

    def tell(parent: int, name: bytes) -> None:
        if parent == 7:  # a directory the request holds: the kernel waits for its reply
            release_locked.wait(5)
        else:
            time.sleep(0.05)
        taken.append((parent, name))

    invalidations = Invalidations(tell)
    invalidations.threaded = True

    async def request() -> list[tuple[int, bytes]]:
        invalidations.add(3, b"a")
        invalidations.add(7, b"held")
        invalidations.add(4, b"b")
        await invalidations.settle({7})
        return list(taken)

    try:
        assert trio.run(request) == [(3, b"a"), (4, b"b")]
        release_locked.set()  # the request replied: the kernel lets go of the directory
        deadline = time.monotonic() + 5
        while len(taken) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert taken[2] == (7, b"held")
        invalidations.add(5, b"admin")
        trio.run(invalidations.settle)  # an administrator's op: awaits the kernel taking it
        assert taken[3] == (5, b"admin")
    finally:
        release_locked.set()
        invalidations.close()
    invalidations.add(3, b"after")
    invalidations.send()  # closed: nothing is sent any more
    time.sleep(0.05)
    assert len(taken) == 4


def listing(ops: VbusOperations, ino: int, monkeypatch, between=None) -> dict[str, int]:
    """One opendir + readdir of directory `ino`: name -> inode number of each entry;
    `between` runs after the opendir, before the readdir."""
    got: dict[str, int] = {}

    def reply(token, name: bytes, attr, next_id: int) -> bool:
        got[name.decode()] = attr.st_ino
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = run(ops.opendir, ino, CTX)
    if between is not None:
        between()
    run(ops.readdir, fh, 0, None)
    run(ops.releasedir, fh)
    return {name: n for name, n in got.items() if name not in (".", "..")}


def test_listings_give_each_object_its_own_number_and_never_a_removed_one(ops, monkeypatch):
    """A listing reuses what it gave the kernel for an object, but never across a change:
    a namesake made since is a new object, a device removed after the opendir (even
    behind the handlers' back) is not listed."""
    devices = lookup_path(ops, "config/vbus/devices")
    for name in (b"D", b"E"):
        run(ops.mkdir, devices, name, 0o755, CTX)
    first = listing(ops, devices, monkeypatch)
    assert listing(ops, devices, monkeypatch) == first
    run(ops.rmdir, devices, b"D", CTX)
    run(ops.mkdir, devices, b"D", 0o755, CTX)
    again = listing(ops, devices, monkeypatch)
    assert again["E"] == first["E"] and again["D"] != first["D"]
    gone = listing(ops, devices, monkeypatch, between=lambda: ops.vbus.remove_device("E"))
    assert list(gone) == ["D"]
