"""One random program, two implementations: the in-process model and a live mount.

The machine applies the same operations (valid and invalid) to both, checks
that they answer with the same errno, and after every step that the whole
trees agree, that the mount's config and sys trees agree with each other,
and so that a failed operation changed nothing on either side.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vbusfs import views
from vbusfs.classes import VenetLoopback, VenetSwitch, VenetTap
from vbusfs.model import Vbus, VbusError
from vbusfs.testing import LiveMount, netns_available

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
NAMES = st.sampled_from(["a", "b", "c", "0", "perms", "x" * 256])
CLASSES = st.sampled_from(["venet-tap", "venet-loopback", "venet-switch", "foo", ""])
VALUES = {
    "client_mac": ["02:00:00:00:00:01", "0A:0b:0C:0d:0E:0f", "zz:00:00:00:00:00", ""],
    "enabled": ["0", "1", "2"],
    "burstthresh": ["5", "-1", "x"],
    "mtu": ["9000", "67", "65536"],
    "txmitigation": ["0", "64", "-1"],
    "host_mac": ["02:00:00:00:00:09"],
    "ifname": ["x"],
    "ports": ["a.0"],
}
PARENTS = [
    views.CONFIG_DEVICES,
    views.CONFIG_INSTANCES,
    views.CONFIG_VBUS,
    ("sys", "vbus", "devices"),
]


class OracleTap:
    """The model side's host interface: the oracle must not touch the host."""

    count = 0

    def __init__(self, mac: bytes) -> None:
        OracleTap.count += 1
        self.name = f"oracle{OracleTap.count}"

    def close(self) -> None:
        pass


def model_errno(call, *args) -> int | None:
    try:
        call(*args)
    except VbusError as exc:
        return exc.errno
    return None


def mount_errno(call, *args) -> int | None:
    try:
        call(*args)
    except OSError as exc:
        return exc.errno
    return None


class Differential(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        rng = random.Random(0)
        self.model = Vbus()
        self.model.load_class(VenetTap(rng=rng, open_tap=OracleTap))
        self.model.load_class(VenetLoopback(rng=rng))
        self.model.load_class(VenetSwitch(rng=rng))
        self.tmp = tempfile.mkdtemp(prefix="vbusfs-diff-")
        self.mount = LiveMount(self.tmp, private_netns=netns_available()).start()
        self.written: set[str] = set()

    def teardown(self) -> None:
        log = self.mount.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        assert "Traceback" not in log, log

    # -- the kernel's part of each operation, for the model side -------------

    def _walk_parent(self, parent: views.Path) -> None:
        found = views.node(self.model, parent)
        if found is None:
            raise VbusError("no parent", errno=errno.ENOENT)
        if not isinstance(found, views.DirNode):
            raise VbusError("parent is a file", errno=errno.ENOTDIR)

    def _model_mkdir(self, parent: views.Path, name: str) -> None:
        self._walk_parent(parent)
        if views.node(self.model, (*parent, name)) is not None:
            raise VbusError("exists", errno=errno.EEXIST)
        views.mkdir(self.model, parent, name)

    def _model_remove(self, op, parent: views.Path, name: str) -> None:
        self._walk_parent(parent)
        op(self.model, parent, name)

    def _model_symlink(self, parent: views.Path, name: str, target: views.Path | None) -> None:
        self._walk_parent(parent)
        if views.node(self.model, (*parent, name)) is not None:
            raise VbusError("exists", errno=errno.EEXIST)
        views.symlink(self.model, parent, name, target)

    def _model_write(self, path: views.Path, value: str) -> None:
        found = views.node(self.model, path)
        if found is None:
            raise VbusError("missing", errno=errno.ENOENT)
        if isinstance(found, views.DirNode):
            raise VbusError("dir", errno=errno.EISDIR)
        assert isinstance(found, views.FileNode)
        if found.store is None:
            raise VbusError("read-only", errno=errno.EACCES)
        if value:
            found.store(value)

    def _mount_write(self, path: views.Path, value: str) -> None:
        fd = os.open(self.mount.join(*path), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, (value + "\n").encode() if value else b"")
        finally:
            os.close(fd)

    def both(self, on_model, on_mount) -> None:
        expected = model_errno(*on_model)
        got = mount_errno(*on_mount)
        assert got == expected, (on_model, expected, got)

    # -- rules -------------------------------------------------------------

    @rule(parent=st.sampled_from(PARENTS), name=NAMES)
    def mkdir(self, parent, name):
        self.both(
            (self._model_mkdir, parent, name),
            (os.mkdir, self.mount.join(*parent, name)),
        )

    @rule(parent=st.sampled_from(PARENTS), name=NAMES)
    def rmdir(self, parent, name):
        self.both(
            (self._model_remove, views.rmdir, parent, name),
            (os.rmdir, self.mount.join(*parent, name)),
        )

    @rule(device=NAMES, cls=CLASSES)
    def set_type(self, device, cls):
        path = (*views.CONFIG_DEVICES, device, "type")
        self.both((self._model_write, path, cls), (self._mount_write, path, cls))

    @rule(device=NAMES, data=st.data())
    def write_attribute(self, device, data):
        name = data.draw(st.sampled_from(sorted(VALUES)))
        value = data.draw(st.sampled_from(VALUES[name]))
        if name == "enabled" and not netns_available():
            value = "0"  # the mount side may only make TAPs in a private netns
        path = ("sys", "vbus", "devices", device, name)
        self.both((self._model_write, path, value), (self._mount_write, path, value))
        if name == "client_mac" and MAC.fullmatch(value.lower()):
            self.written.add(value.lower())

    @rule(bus=NAMES, link=NAMES, device=NAMES, form=st.sampled_from(["rel", "abs", "slash"]))
    def link(self, bus, link, device, form):
        parent = (*views.CONFIG_INSTANCES, bus)
        if form == "rel":
            text = f"../../devices/{device}"
        else:
            text = self.mount.join("config/vbus/devices", device) + ("/" if form == "slash" else "")
        target = (*views.CONFIG_DEVICES, device)
        self.both(
            (self._model_symlink, parent, link, target),
            (os.symlink, text, self.mount.join(*parent, link)),
        )

    @rule(bus=NAMES, link=NAMES)
    def unlink(self, bus, link):
        parent = (*views.CONFIG_INSTANCES, bus)
        self.both(
            (self._model_remove, views.unlink, parent, link),
            (os.unlink, self.mount.join(*parent, link)),
        )

    # -- invariants ----------------------------------------------------------

    def _mask(self, path: str, value: str) -> str:
        text = value.rstrip("\n")
        if MAC.fullmatch(text) and text not in self.written:
            return "<random mac>"
        if path.endswith("/ifname") and text != "<disabled>":
            return "<tap>"
        return value

    def _model_tree(self, path: views.Path = ()) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in views.children(self.model, path):
            child = (*path, name)
            found = views.node(self.model, child)
            key = "/".join(child)
            if isinstance(found, views.DirNode):
                out[key] = "dir"
                out.update(self._model_tree(child))
            elif isinstance(found, views.SymlinkNode):
                out[key] = f"link {found.target}"
            else:
                assert isinstance(found, views.FileNode)
                out[key] = f"file {found.mode:o} {self._mask(key, found.show() + chr(10))}"
        return out

    def _mount_tree(self, rel: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        base = self.mount.join(rel) if rel else self.mount.path
        for name in os.listdir(base):
            if not rel and name == "proc":
                continue  # membership has its own tests; the oracle has no processes
            key = f"{rel}/{name}" if rel else name
            full = os.path.join(base, name)
            st_ = os.lstat(full)
            if os.path.islink(full):
                out[key] = f"link {os.readlink(full)}"
            elif os.path.isdir(full):
                out[key] = "dir"
                out.update(self._mount_tree(key))
            else:
                with open(full) as f:
                    out[key] = f"file {st_.st_mode & 0o777:o} {self._mask(key, f.read())}"
        return out

    @invariant()
    def trees_agree(self):
        assert self._mount_tree() == self._model_tree()

    @invariant()
    def config_and_sys_agree(self):
        join = self.mount.join
        config_devices = set(os.listdir(join("config/vbus/devices")))
        assert config_devices == set(os.listdir(join("sys/vbus/devices")))
        buses = set(os.listdir(join("config/vbus/instances")))
        assert buses == set(os.listdir(join("sys/vbus/instances")))
        for bus in buses:
            links = [n for n in os.listdir(join("config/vbus/instances", bus)) if n != "perms"]
            linked = sorted(
                os.path.basename(os.readlink(join("config/vbus/instances", bus, n))) for n in links
            )
            ids = os.listdir(join("sys/vbus/instances", bus, "devices"))
            on_bus = sorted(
                os.path.basename(
                    os.readlink(join("sys/vbus/instances", bus, "devices", i, "device"))
                )
                for i in ids
            )
            assert linked == on_bus


TestDifferential = Differential.TestCase
# every step walks both whole trees: half the profile's programs keeps the suite short
TestDifferential.settings = settings(max_examples=max(5, settings.default.max_examples // 2))
