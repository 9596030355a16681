"""Names that are not UTF-8: a bus is named by any bytes, and every file shows them back."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.mount


@pytest.fixture
def mnt(vbus_mount):
    """The session's shared daemon, reset after each test: these tests use only the trees
    (and processes of their own), never the daemon's process, log start or resources."""
    return vbus_mount


BUS = b"bus-\xff\xfe"  # not UTF-8


def test_a_switch_on_a_bus_with_an_undecodable_name_shows_its_ports(mnt):
    root = os.fsencode(mnt.path)
    os.mkdir(root + b"/config/vbus/instances/" + BUS)
    mnt.sh("mkdir config/vbus/instances/ok config/vbus/devices/s", check=True)
    mnt.sh("echo venet-switch > config/vbus/devices/s/type", check=True)
    os.symlink(b"../../devices/s", root + b"/config/vbus/instances/" + BUS + b"/s")
    mnt.sh("ln -s ../../devices/s config/vbus/instances/ok/", check=True)
    with open(mnt.join("sys/vbus/devices/s/ports"), "rb") as f:
        shown = f.read()
    # The name's own bytes, as every other file of the tree names it.
    assert shown == BUS + b".0 ok.0\n"
    assert BUS in os.listdir(root + b"/config/vbus/instances")
    cat = subprocess.run(["cat", mnt.join("sys/vbus/devices/s/ports")], capture_output=True)
    assert cat.returncode == 0 and cat.stdout == shown


def test_a_bus_with_an_undecodable_name_can_be_joined(mnt):
    root = os.fsencode(mnt.path)
    os.mkdir(root + b"/config/vbus/instances/" + BUS)
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        try:
            membership = root + b"/proc/" + str(sleeper.pid).encode() + b"/vbus"
            with open(membership, "wb") as f:
                f.write(BUS + b"\n")
            with open(membership, "rb") as f:
                assert f.read() == BUS + b"\n"
            members = os.listdir(root + b"/sys/vbus/instances/" + BUS + b"/members")
            assert members == [str(sleeper.pid).encode()]
        finally:
            sleeper.kill()


def test_no_bus_may_be_called_what_the_membership_file_reads_for_none(mnt):
    done = mnt.sh("mkdir 'config/vbus/instances/<none>'")
    assert "Invalid argument" in done.stderr
