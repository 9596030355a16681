"""The config and sys trees as functions of the model, and what each path allows."""

from __future__ import annotations

import errno
import os
import random

import pytest

from vbusfs import views
from vbusfs.classes import VenetLoopback, VenetSwitch, VenetTap
from vbusfs.daemon import ProcFs
from vbusfs.model import IdentityView, Inferred, Vbus, VbusError
from vbusfs.views import DirNode, FileNode, SymlinkNode

B = ("config", "vbus", "instances", "B")


@pytest.fixture
def vbus() -> Vbus:
    model = Vbus()
    for cls in (VenetTap, VenetLoopback, VenetSwitch):
        model.load_class(cls(rng=random.Random(7)))
    return model


def walk(vbus: Vbus, path=()) -> dict[str, str]:
    """Every path below `path`: 'dir', 'file <mode>' or 'link <target>'."""
    out = {}
    for name in views.children(vbus, path):
        child = (*path, name)
        found = views.node(vbus, child)
        key = "/".join(child)
        if isinstance(found, DirNode):
            out[key] = "dir"
            out.update(walk(vbus, child))
        elif isinstance(found, SymlinkNode):
            out[key] = f"link {found.target}"
        else:
            assert isinstance(found, FileNode)
            out[key] = f"file {found.mode:o}"
    return out


def errno_of(call, *args) -> int:
    with pytest.raises(VbusError) as info:
        call(*args)
    return info.value.errno


def test_start_tree(vbus):
    assert walk(vbus) == {
        "config": "dir",
        "config/vbus": "dir",
        "config/vbus/devices": "dir",
        "config/vbus/instances": "dir",
        "sys": "dir",
        "sys/vbus": "dir",
        "sys/vbus/deviceclass": "dir",
        "sys/vbus/deviceclass/venet-tap": "dir",
        "sys/vbus/deviceclass/venet-loopback": "dir",
        "sys/vbus/deviceclass/venet-switch": "dir",
        "sys/vbus/devices": "dir",
        "sys/vbus/instances": "dir",
        "sys/vbus/version": "file 444",
    }


def test_walkthrough_tree(vbus):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    type_file = views.node(vbus, ("config", "vbus", "devices", "D", "type"))
    assert type_file.show() == ""
    type_file.store("venet-tap")
    assert type_file.show() == "venet-tap"
    views.symlink(vbus, B, "D", ("config", "vbus", "devices", "D"))
    tree = walk(vbus)
    added = {k: v for k, v in tree.items() if "/D" in k or "/B" in k}
    assert added == {
        "config/vbus/devices/D": "dir",
        "config/vbus/devices/D/type": "file 644",
        "config/vbus/instances/B": "dir",
        "config/vbus/instances/B/perms": "dir",
        "config/vbus/instances/B/perms/owner": "file 644",
        "config/vbus/instances/B/perms/group": "file 644",
        "config/vbus/instances/B/perms/mode": "file 644",
        "config/vbus/instances/B/D": "link ../../../vbus/devices/D",
        "sys/vbus/devices/D": "dir",
        "sys/vbus/devices/D/class": "link ../../deviceclass/venet-tap",
        "sys/vbus/devices/D/interfaces": "dir",
        "sys/vbus/devices/D/interfaces/0": "link ../../../instances/B/devices/0",
        "sys/vbus/devices/D/client_mac": "file 644",
        "sys/vbus/devices/D/enabled": "file 644",
        "sys/vbus/devices/D/host_mac": "file 444",
        "sys/vbus/devices/D/ifname": "file 444",
        "sys/vbus/devices/D/burstthresh": "file 644",
        "sys/vbus/devices/D/mtu": "file 644",
        "sys/vbus/devices/D/txmitigation": "file 644",
        "sys/vbus/instances/B": "dir",
        "sys/vbus/instances/B/devices": "dir",
        "sys/vbus/instances/B/devices/0": "dir",
        "sys/vbus/instances/B/devices/0/device": "link ../../../../devices/D",
        "sys/vbus/instances/B/devices/0/type": "file 444",
        "sys/vbus/instances/B/members": "dir",
    }
    iface_type = views.node(vbus, ("sys", "vbus", "instances", "B", "devices", "0", "type"))
    assert iface_type.show() == "virtual-ethernet"


def test_every_sys_link_resolves_inside_the_trees(vbus):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    views.node(vbus, ("config", "vbus", "devices", "D", "type")).store("venet-switch")
    views.symlink(vbus, B, "D", ("config", "vbus", "devices", "D"))
    links = {k: v for k, v in walk(vbus).items() if v.startswith("link")}
    assert "sys/vbus/devices/D/interfaces/B.0" in links
    for path in links:
        resolved = views.resolve(vbus, tuple(path.split("/")))
        assert isinstance(views.node(vbus, resolved), DirNode)


def test_interface_ids_need_canonical_numbers(vbus):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    views.node(vbus, ("config", "vbus", "devices", "D", "type")).store("venet-tap")
    views.symlink(vbus, B, "D", ("config", "vbus", "devices", "D"))
    # non-ASCII digits too: int("\u0660") is 0, but procfs and sysfs spell numbers in ASCII
    for alias in ("00", "+0", "-0", " 0", "0x0", "\u0660", "\uff10", "\u2070"):
        assert views.node(vbus, ("sys", "vbus", "instances", "B", "devices", alias)) is None


def test_proc_pids_need_ascii_digits():
    vbus = Vbus(membership=Inferred(ProcFs()))
    me = views.Caller(0, IdentityView(1))
    assert views.node(vbus, ("proc", "1"), me) is not None
    for alias in ("\u0661", "\u00b9", "\uff11"):
        assert views.node(vbus, ("proc", alias), me) is None


def test_proc_membership_file_reads_the_bus_or_none():
    vbus = Vbus(membership=Inferred(ProcFs()))
    vbus.create_bus("B")
    pid = os.getpid()
    me = views.Caller(os.getuid(), IdentityView(pid))
    membership = views.node(vbus, ("proc", str(pid), "vbus"), me)
    assert isinstance(membership, FileNode) and membership.writable
    assert membership.show() == views.NO_BUS == "<none>"
    membership.store("B")
    assert membership.show() == "B" and vbus.membership_of(pid) == "B"
    membership.store("0")
    assert membership.show() == "<none>" and vbus.membership_of(pid) is None


@pytest.mark.parametrize(
    ("directory", "text", "expected"),
    [
        (B, "../../devices/D", ("config", "vbus", "devices", "D")),
        (B, "../../devices/D/", ("config", "vbus", "devices", "D")),
        (B, "./../..//devices/./D", ("config", "vbus", "devices", "D")),
        (B, "../../../../sys", ("sys",)),
        (B, "../../../../../etc", None),
    ],
)
def test_join_is_lexical_and_knows_the_mount_root(directory, text, expected):
    assert views.join(directory, text) == expected


def test_resolve_follows_links_and_reports_errors(vbus):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    views.node(vbus, ("config", "vbus", "devices", "D", "type")).store("venet-tap")
    views.symlink(vbus, B, "D", ("config", "vbus", "devices", "D"))
    assert views.resolve(vbus, (*B, "D")) == ("config", "vbus", "devices", "D")
    assert errno_of(views.resolve, vbus, ("config", "vbus", "devices", "X")) == errno.ENOENT
    path = ("config", "vbus", "devices", "D", "type", "x")
    assert errno_of(views.resolve, vbus, path) == errno.ENOTDIR


def test_filesystem_operation_errnos(vbus):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    views.mkdir(vbus, views.CONFIG_DEVICES, "U")
    views.node(vbus, ("config", "vbus", "devices", "D", "type")).store("venet-tap")
    devices = ("config", "vbus", "devices")
    cases = [
        (views.mkdir, ("config", "vbus"), "x", errno.EPERM),
        (views.mkdir, ("sys", "vbus", "devices"), "x", errno.EPERM),
        (views.mkdir, B, "x", errno.EPERM),
        (views.mkdir, (*devices, "D"), "x", errno.EPERM),
        (views.rmdir, ("config",), "vbus", errno.EPERM),
        (views.rmdir, ("config", "vbus"), "devices", errno.EPERM),
        (views.rmdir, B, "perms", errno.EPERM),
        (views.rmdir, ("sys", "vbus", "devices"), "D", errno.EPERM),
        (views.rmdir, ("sys", "vbus", "deviceclass"), "venet-tap", errno.EPERM),
        (views.unlink, (*devices, "D"), "type", errno.EPERM),
        (views.unlink, ("sys", "vbus"), "version", errno.EPERM),
        (views.unlink, ("sys", "vbus"), "devices", errno.EISDIR),
        (views.unlink, ("config", "vbus"), "devices", errno.EISDIR),
    ]
    for call, parent, name, code in cases:
        before = vbus.snapshot()
        assert errno_of(call, vbus, parent, name) == code, (call.__name__, parent, name)
        assert vbus.snapshot() == before


@pytest.mark.parametrize(
    ("parent", "target", "code"),
    [
        (("config", "vbus", "instances"), ("config", "vbus", "devices", "D"), errno.EPERM),
        (("config", "vbus", "devices", "D"), ("config", "vbus", "devices", "D"), errno.EPERM),
        ((*B, "perms"), ("config", "vbus", "devices", "D"), errno.EPERM),
        (("sys", "vbus", "instances", "B"), ("config", "vbus", "devices", "D"), errno.EPERM),
        (B, None, errno.EPERM),
        (B, ("sys", "vbus", "devices", "D"), errno.EPERM),
        (B, ("config", "vbus", "devices", "nope"), errno.ENOENT),
        (B, ("config", "vbus", "devices", "D", "type"), errno.ENOTDIR),
        (B, ("config", "vbus", "instances", "B"), errno.EINVAL),
        (B, ("config", "vbus", "devices"), errno.EINVAL),
        (B, ("config", "vbus"), errno.EINVAL),
        (B, (*B, "perms"), errno.EINVAL),
        (B, ("config", "vbus", "devices", "U"), errno.EINVAL),
    ],
)
def test_symlink_errnos(vbus, parent, target, code):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    views.mkdir(vbus, views.CONFIG_DEVICES, "U")
    views.node(vbus, ("config", "vbus", "devices", "D", "type")).store("venet-tap")
    before = vbus.snapshot()
    assert errno_of(views.symlink, vbus, parent, "L", target) == code
    assert vbus.snapshot() == before


def test_symlink_name_collisions_are_eexist(vbus):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    views.node(vbus, ("config", "vbus", "devices", "D", "type")).store("venet-switch")
    target = ("config", "vbus", "devices", "D")
    assert errno_of(views.symlink, vbus, B, "perms", target) == errno.EEXIST
    views.symlink(vbus, B, "any-name", target)
    assert errno_of(views.symlink, vbus, B, "any-name", target) == errno.EEXIST


def test_render_tree_counts_like_tree(vbus):
    text = views.render_tree(vbus, views.SYS_VBUS, "sys/vbus")
    assert text.endswith("\n7 directories, 1 file\n")
    assert text.splitlines()[1:5] == [
        "├── deviceclass",
        "│\u00a0\u00a0 ├── venet-loopback",
        "│\u00a0\u00a0 ├── venet-switch",
        "│\u00a0\u00a0 └── venet-tap",
    ]


def test_dependents_are_every_path_that_goes_with_the_removed_object(vbus):
    views.mkdir(vbus, views.CONFIG_INSTANCES, "B")
    views.mkdir(vbus, views.CONFIG_DEVICES, "D")
    vbus.set_device_type("D", "venet-loopback")
    views.symlink(vbus, B, "L", ("config", "vbus", "devices", "D"))

    def gone_after(remove, parent, name) -> set[str]:
        before = walk(vbus)
        dependents = views.dependents(vbus, (*parent, name))
        remove(vbus, parent, name)
        vanished = before.keys() - walk(vbus).keys()
        # each vanished path is a dependent or under one: nothing is missed
        assert vanished
        tops = {"/".join(p) for p in dependents}
        assert all(any(v == t or v.startswith(t + "/") for t in tops) for v in vanished)
        return tops

    assert gone_after(views.unlink, B, "L") == {
        "config/vbus/instances/B/L",
        "sys/vbus/instances/B/devices/0",
        "sys/vbus/devices/D/interfaces/0",
    }
    assert gone_after(views.rmdir, views.CONFIG_DEVICES, "D") == {
        "config/vbus/devices/D",
        "sys/vbus/devices/D",
    }
    assert gone_after(views.rmdir, views.CONFIG_INSTANCES, "B") == {
        "config/vbus/instances/B",
        "sys/vbus/instances/B",
    }
