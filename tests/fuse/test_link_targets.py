"""LinkTargets.target: what the model does with each outcome of the walk outside the mount
(behaviour §5), with no mount: landings, places elsewhere, failed walks, callers we
cannot walk for."""

from __future__ import annotations

import errno
import random

import pytest

from vbusfs.classes import VenetSwitch
from vbusfs.fuse import InodeTable, MountLocations
from vbusfs.fuse._links import OUTSIDE, UNAVAILABLE, Landing, LinkTargets, Walked
from vbusfs.model import Vbus, VbusError

BUS = ("config", "vbus", "instances", "B")
DEVICE = ("config", "vbus", "devices", "S")


@pytest.fixture
def world():
    vbus = Vbus()
    vbus.load_class(VenetSwitch(rng=random.Random(1)))
    vbus.create_bus("B")
    vbus.create_device("S")
    vbus.set_device_type("S", "venet-switch")
    vbus.link("B", "L", "S")
    inodes = InodeTable()
    return vbus, inodes, LinkTargets(MountLocations(mount_point="/m"))


def landed(inodes: InodeTable, at: tuple[str, ...], *rest: str) -> Walked:
    return Walked(landing=Landing(inodes.inode(at), rest))


def test_a_landing_is_walked_on_in_the_trees(world):
    vbus, inodes, links = world
    target = links.target
    # from the root, through a bus's link (a tree symlink), and `..` inside the trees
    assert target(vbus, inodes, BUS, "/m/x", landed(inodes, (), *DEVICE), 1) == DEVICE
    via_link = landed(inodes, ("config", "vbus"), "instances", "B", "L")
    assert target(vbus, inodes, BUS, "/m/x", via_link, 1) == DEVICE
    up = landed(inodes, BUS, "..", "..", "devices", "S")
    assert target(vbus, inodes, BUS, "../../devices/S", up, 1) == DEVICE
    # climbing out of the mount: outside for an absolute target, the bus rule for a
    # relative one
    out = landed(inodes, (), "..", "m")
    assert target(vbus, inodes, BUS, "/m/..", out, 1) is None
    assert target(vbus, inodes, BUS, "../../devices/S", out, 1) == DEVICE
    # nothing there: ENOENT for an absolute target, the bus rule for a relative one
    missing = landed(inodes, (), "config", "vbus", "devices", "none")
    with pytest.raises(VbusError) as info:
        target(vbus, inodes, BUS, "/m/config/vbus/devices/none", missing, 1)
    assert info.value.errno == errno.ENOENT
    assert target(vbus, inodes, BUS, "../../devices/S", missing, 1) == DEVICE


def test_a_landing_on_a_removed_directory_names_nothing(world):
    vbus, inodes, links = world
    gone = landed(inodes, ("config", "vbus", "devices", "old"), "..", "S")
    inodes.detach(("config", "vbus", "devices", "old"))
    with pytest.raises(VbusError) as info:
        links.target(vbus, inodes, BUS, "/m/x", gone, 1)
    assert info.value.errno == errno.ENOENT


def test_walks_that_end_elsewhere_fail_or_fall_back(world):
    vbus, inodes, links = world
    target = links.target
    assert target(vbus, inodes, BUS, "/etc", OUTSIDE, 1) is None  # EPERM
    with pytest.raises(VbusError) as info:
        target(vbus, inodes, BUS, "/loop/x", Walked(error=errno.ELOOP), 1)
    assert info.value.errno == errno.ELOOP
    # relative targets that did not land: from the bus directory, as before
    for walked in (OUTSIDE, Walked(error=errno.ENOENT), UNAVAILABLE):
        assert target(vbus, inodes, BUS, "../../devices/S", walked, 1) == DEVICE
    # a caller we cannot walk for (pid 0): where the mount is said to be
    assert target(vbus, inodes, BUS, "/m/config/vbus/devices/S", UNAVAILABLE, 0) == DEVICE
    assert target(vbus, inodes, BUS, "/elsewhere/devices/S", UNAVAILABLE, 0) is None


def test_no_walk_is_tried_without_a_mount_or_a_caller(world):
    _, _, links = world
    assert links.walk_outside("/m/config", 0) == UNAVAILABLE  # no device known yet
    links.locations.device = "0:1"
    assert links.walk_outside("/m/config", 0) == UNAVAILABLE  # no caller in our namespace
