"""The pyfuse3 handlers called directly, with a fake request context and no mount."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

import pyfuse3
import pytest
from fuse_calls import CTX, fuse_errno, lookup_path, run

from vbusfs.classes import default_model
from vbusfs.fuse import VbusOperations
from vbusfs.fuse._inodes import ROOT_INODE
from vbusfs.model import Attribute, DeviceClass


@pytest.fixture
def ops() -> VbusOperations:
    return VbusOperations(default_model())


def is_dead(ops: VbusOperations, ino: int) -> bool:
    """Detached: nothing is found through it (ENOENT), though stat still answers with the
    type and mode it had (sysfs and configfs stat a removed directory someone holds)."""
    mode = ops.inodes.ghost_mode(ino)
    if mode is None or run(ops.getattr, ino, CTX).st_mode != mode:
        return False
    return fuse_errno(ops.lookup, ino, b"type", CTX) == errno.ENOENT


def test_lookup_counts_and_forget_release_inodes(ops):
    devices = lookup_path(ops, "config/vbus/devices")
    entry = run(ops.mkdir, devices, b"D", 0o755, CTX)
    assert stat.S_ISDIR(entry.st_mode)
    again = run(ops.lookup, devices, b"D", CTX)
    assert again.st_ino == entry.st_ino
    assert ops.inodes.lookups(entry.st_ino) == 2
    run(ops.forget, [(entry.st_ino, 2)])
    assert ops.inodes.path(entry.st_ino) is None
    assert run(ops.lookup, devices, b"D", CTX).st_ino != entry.st_ino  # never reused


def test_removed_object_keeps_its_inode_until_forget_but_answers_enoent(ops):
    devices = lookup_path(ops, "config/vbus/devices")
    old = run(ops.mkdir, devices, b"D", 0o755, CTX).st_ino
    run(ops.rmdir, devices, b"D", CTX)
    assert is_dead(ops, old)
    assert run(ops.getattr, old, CTX).st_mode == stat.S_IFDIR | 0o755
    new = run(ops.mkdir, devices, b"D", 0o755, CTX).st_ino
    assert new != old
    run(ops.forget, [(old, 1)])
    assert run(ops.getattr, new, CTX).st_ino == new


def test_removing_a_device_or_link_drops_the_kernel_entries_of_its_sys_paths(ops):
    """The kernel learns of config/.../D from the rmdir, never of sys/vbus/devices/D: told
    nothing, it would keep that entry (and its number here) for good."""
    told: list[tuple[int, bytes]] = []
    ops.invalidate_entry = lambda parent, name: told.append((parent, name))
    devices = lookup_path(ops, "config/vbus/devices")
    bus = run(ops.mkdir, lookup_path(ops, "config/vbus/instances"), b"B", 0o755, CTX).st_ino
    sys_devices = lookup_path(ops, "sys/vbus/devices")
    bus_devices = lookup_path(ops, "sys/vbus/instances/B/devices")
    baseline = len(ops.inodes)
    device = run(ops.mkdir, devices, b"D", 0o755, CTX).st_ino
    ops.vbus.set_device_type("D", "venet-loopback")
    link = run(ops.symlink, bus, b"L", b"../../devices/D", CTX).st_ino
    sys_d = lookup_path(ops, "sys/vbus/devices/D")
    mac = lookup_path(ops, "sys/vbus/devices/D/client_mac")
    interfaces = lookup_path(ops, "sys/vbus/devices/D/interfaces")
    interface = lookup_path(ops, "sys/vbus/devices/D/interfaces/0")
    on_bus = lookup_path(ops, "sys/vbus/instances/B/devices/0")

    run(ops.unlink, bus, b"L", CTX)
    assert told == [(bus_devices, b"0"), (interfaces, b"0")]
    assert is_dead(ops, on_bus)
    run(ops.rmdir, devices, b"D", CTX)
    assert told[2:] == [(sys_devices, b"D")]
    detached = (device, link, sys_d, mac, interfaces, interface, on_bus)
    for ino in detached:  # the whole subtree, for good: a new D is a new object
        assert is_dead(ops, ino)
    # the kernel, told, forgets what it held: nothing of D is left
    run(ops.forget, [(ino, ops.inodes.lookups(ino)) for ino in detached])
    assert len(ops.inodes) == baseline


class Collector:
    """Stands in for the kernel's readdir buffer: takes `room` entries per request."""

    def __init__(self, monkeypatch, room: int) -> None:
        self.room = room
        self.entries: list[tuple[str, int]] = []
        self.taken = 0
        monkeypatch.setattr(pyfuse3, "readdir_reply", self.reply)

    def reply(self, token, name: bytes, attr, next_id: int) -> bool:
        if self.taken >= self.room:
            return False
        self.taken += 1
        self.entries.append((name.decode(), next_id))
        return True

    def request(self, ops, fh: int, start: int) -> int:
        self.taken = 0
        before = len(self.entries)
        run(ops.readdir, fh, start, None)
        return self.entries[-1][1] if len(self.entries) > before else -1


def test_readdir_offsets_survive_changes_to_the_directory(ops, monkeypatch):
    devices = lookup_path(ops, "config/vbus/devices")
    for i in range(6):
        run(ops.mkdir, devices, f"d{i}".encode(), 0o755, CTX)
    fh = run(ops.opendir, devices, CTX)
    collector = Collector(monkeypatch, room=4)
    offset = collector.request(ops, fh, 0)
    assert [n for n, _ in collector.entries] == [".", "..", "d0", "d1"]
    run(ops.rmdir, devices, b"d2", CTX)  # not yet listed: must not appear
    run(ops.rmdir, devices, b"d0", CTX)  # already listed: must not shift anything
    run(ops.mkdir, devices, b"new", 0o755, CTX)
    while offset != -1:
        offset = collector.request(ops, fh, offset)
    names = [n for n, _ in collector.entries]
    assert names == [".", "..", "d0", "d1", "d3", "d4", "d5"]
    # a rewind takes a fresh listing
    collector.entries.clear()
    offset = 0
    while offset != -1:
        offset = collector.request(ops, fh, offset)
    assert [n for n, _ in collector.entries][2:] == ["d1", "d3", "d4", "d5", "new"]
    run(ops.releasedir, fh)


def test_readdir_entries_count_as_lookups(ops, monkeypatch):
    devices = lookup_path(ops, "config/vbus/devices")
    run(ops.mkdir, devices, b"D", 0o755, CTX)
    d = run(ops.lookup, devices, b"D", CTX).st_ino
    before = ops.inodes.lookups(d)
    fh = run(ops.opendir, devices, CTX)
    Collector(monkeypatch, room=100).request(ops, fh, 0)
    assert ops.inodes.lookups(d) == before + 1


def test_write_handler_semantics(ops):
    devices = lookup_path(ops, "config/vbus/devices")
    run(ops.mkdir, devices, b"D", 0o755, CTX)
    type_ino = lookup_path(ops, "config/vbus/devices/D/type")
    info = run(ops.open, type_ino, os.O_WRONLY | os.O_TRUNC, CTX)
    assert info.direct_io and not info.keep_cache
    assert run(ops.read, info.fh, 0, 100) == b"\n"
    assert run(ops.write, info.fh, 0, b"") == 0
    assert fuse_errno(ops.write, info.fh, 0, b"x" * 4097) == errno.EINVAL
    assert fuse_errno(ops.write, info.fh, 0, b"nope\n") == errno.ENOENT
    assert run(ops.write, info.fh, 123, b"venet-loopback\n") == 15
    assert run(ops.read, info.fh, 0, 100) == b"venet-loopback\n"
    assert run(ops.read, info.fh, 6, 4) == b"loop"
    run(ops.release, info.fh)
    assert fuse_errno(ops.read, info.fh, 0, 1) == errno.EBADF


def test_read_only_attribute_refuses_write_opens_even_for_root(ops):
    version = lookup_path(ops, "sys/vbus/version")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        assert fuse_errno(ops.open, version, flags, CTX) == errno.EACCES
    info = run(ops.open, version, os.O_RDONLY, CTX)
    assert run(ops.read, info.fh, 0, 10) == b"1\n"


class Exploding(DeviceClass):
    name = "exploding"
    interface_type = "boom"
    attributes = (Attribute("boom", lambda state: str(1 / 0)),)


def test_an_unexpected_exception_is_answered_eio(ops, caplog):
    ops.vbus.load_class(Exploding())
    devices = lookup_path(ops, "config/vbus/devices")
    run(ops.mkdir, devices, b"X", 0o755, CTX)
    ops.vbus.set_device_type("X", "exploding")
    boom = lookup_path(ops, "sys/vbus/devices/X/boom")
    assert fuse_errno(ops.open, boom, os.O_RDONLY, CTX) == errno.EIO
    assert "ZeroDivisionError" in caplog.text
    assert run(ops.getattr, boom, CTX).st_size == 4096  # still serving


def test_dot_entries_and_nlink(ops):
    vbus_ino = lookup_path(ops, "config/vbus")
    assert run(ops.lookup, vbus_ino, b"..", CTX).st_ino == lookup_path(ops, "config")
    assert run(ops.getattr, ROOT_INODE, CTX).st_nlink == 1


@dataclass
class Fields:
    """The fields of a setattr request (pyfuse3's own type cannot be built in Python)."""

    update_size: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False


def test_setattr_accepts_truncate_and_times_refuses_mode(ops):
    devices = lookup_path(ops, "config/vbus/devices")
    run(ops.mkdir, devices, b"D", 0o755, CTX)
    type_ino = lookup_path(ops, "config/vbus/devices/D/type")
    attr = pyfuse3.EntryAttributes()
    for fields in (Fields(update_size=True), Fields(update_atime=True, update_mtime=True)):
        assert run(ops.setattr, type_ino, attr, fields, None, CTX).st_size == 4096
    for fields in (Fields(update_mode=True), Fields(update_uid=True)):
        assert fuse_errno(ops.setattr, type_ino, attr, fields, None, CTX) == errno.EPERM
    version = lookup_path(ops, "sys/vbus/version")
    assert fuse_errno(ops.setattr, version, attr, Fields(update_size=True), None, CTX) == (
        errno.EACCES
    )


def test_what_is_removed_behind_the_adapters_back_is_dropped_when_it_is_told(ops):
    """A reset or rmmod over the connector changes the model, not through a handler: the
    daemon then calls drop_removed, and the kernel hears of every entry gone with it."""
    told: list[tuple[int, bytes]] = []
    ops.invalidate_entry = lambda parent, name: told.append((parent, name))
    config_devices = lookup_path(ops, "config/vbus/devices")
    instances = lookup_path(ops, "config/vbus/instances")
    classes = lookup_path(ops, "sys/vbus/deviceclass")
    sys_devices = lookup_path(ops, "sys/vbus/devices")
    sys_instances = lookup_path(ops, "sys/vbus/instances")
    baseline = len(ops.inodes)
    run(ops.mkdir, config_devices, b"D", 0o755, CTX)
    run(ops.mkdir, config_devices, b"kept", 0o755, CTX)
    bus = run(ops.mkdir, instances, b"B", 0o755, CTX).st_ino
    ops.vbus.set_device_type("D", "venet-loopback")
    run(ops.symlink, bus, b"L", b"../../devices/D", CTX)
    held = [
        lookup_path(ops, path)
        for path in (
            "sys/vbus/devices/D/client_mac",
            "sys/vbus/instances/B/devices/0/type",
            "sys/vbus/deviceclass/venet-switch",
        )
    ]
    ops.vbus.unlink("B", "L")  # behind its back: no handler ran
    ops.vbus.remove_device("D")
    ops.vbus.remove_bus("B")
    ops.vbus.unload_class("venet-switch")
    run(ops.drop_removed)
    assert sorted(told) == sorted(
        [
            (config_devices, b"D"),
            (instances, b"B"),
            (classes, b"venet-switch"),
            (sys_devices, b"D"),
            (sys_instances, b"B"),
        ]
    )
    for ino in held:
        assert is_dead(ops, ino)
    # what is still there keeps its entry and its number
    assert lookup_path(ops, "config/vbus/devices/kept") == ops.inodes.find(
        ("config", "vbus", "devices", "kept")
    )
    run(ops.drop_removed)  # nothing more to tell
    assert len(told) == 5
    run(ops.rmdir, config_devices, b"kept", CTX)
    # the kernel, told, forgets what it held (every number after the skeleton's): no leak
    newer = range(sys_instances + 1, sys_instances + 100)
    run(ops.forget, [(ino, ops.inodes.lookups(ino)) for ino in newer if ops.inodes.lookups(ino)])
    assert len(ops.inodes) == baseline
