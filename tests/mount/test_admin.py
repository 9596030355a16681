"""vbusfs save / mount --restore / modprobe / rmmod / tree on live mounts."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from vbusfs.fuse import mount_at
from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount


@pytest.fixture
def mnt(vbus_mount):
    """The session's shared daemon, reset after each test: these tests use only the trees
    (and processes of their own), never the daemon's process, log start or resources."""
    return vbus_mount


VBUSFS = [sys.executable, "-m", "vbusfs"]
PLUGINS = str(pathlib.Path(__file__).parent / "plugins")
BUILD = (
    "mkdir config/vbus/instances/B config/vbus/instances/C "
    "config/vbus/devices/x config/vbus/devices/y config/vbus/devices/z "
    "config/vbus/devices/s config/vbus/devices/u && "
    "echo venet-loopback > config/vbus/devices/x/type && "
    "echo venet-tap > config/vbus/devices/y/type && "
    "echo venet-loopback > config/vbus/devices/z/type && "
    "echo venet-switch > config/vbus/devices/s/type && "
    "echo 02:00:00:00:00:0a > sys/vbus/devices/x/client_mac && "
    "echo 77 > sys/vbus/devices/y/burstthresh && "
    "ln -s ../../devices/x config/vbus/instances/B/ && "
    "ln -s ../../devices/y config/vbus/instances/B/ && "
    "ln -s ../../devices/z config/vbus/instances/B/zed && "
    "ln -s ../../devices/s config/vbus/instances/B/ && "
    "ln -s ../../devices/s config/vbus/instances/C/ && "
    "echo 02:00:00:00:00:0c > sys/vbus/instances/C/devices/0/client_mac && "
    "rm config/vbus/instances/B/y"
)


def vbusfs(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VBUSFS, *args], capture_output=True, text=True, timeout=60, **kwargs)


def picture(mount: LiveMount) -> str:
    listing = mount.sh(
        "find config sys/vbus/instances sys/vbus/devices -printf '%p %l\\n' | sort; "
        "cat sys/vbus/devices/x/client_mac sys/vbus/devices/y/burstthresh "
        "sys/vbus/instances/C/devices/0/client_mac"
    )
    return listing.stdout


def test_save_then_restore_rebuilds_everything(mnt, tmp_path, tmp_path_factory):
    mnt.sh(BUILD, check=True)
    saved = tmp_path / "vbus.json"
    done = vbusfs("save", mnt.path, str(saved))
    assert done.returncode == 0, done.stderr
    data = json.loads(saved.read_text())
    assert data["format"] == "vbusfs-config" and not list(tmp_path.glob(".vbusfs-save-*"))
    with LiveMount(str(tmp_path_factory.mktemp("r")), extra=("--restore", str(saved))) as again:
        assert picture(again) == picture(mnt)
        # the bus goes on counting where it was: y had id 1, s has 3
        again.sh("ln -s ../../devices/y config/vbus/instances/B/", check=True)
        assert sorted(os.listdir(again.join("sys/vbus/instances/B/devices")), key=int) == [
            "0",
            "2",
            "3",
            "4",
        ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format": "vbusfs-config", "version": 1, "classes": [', "not valid JSON"),
        ("[]", "not a JSON object"),
        (
            '{"format": "vbusfs-config", "version": 1, "classes": ["nope"], "devices": [], '
            '"buses": []}',
            "not loaded here: nope",
        ),
    ],
)
def test_a_bad_file_stops_the_mount_unless_asked_to_start_empty(tmp_path, content, message):
    saved = tmp_path / "bad.json"
    saved.write_text(content)
    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    done = vbusfs("mount", "--restore", str(saved), str(mountpoint))
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert mount_at(str(mountpoint)) is None
    done = vbusfs("mount", "--restore", str(saved), "--empty-on-bad-restore", str(mountpoint))
    try:
        assert done.returncode == 0, done.stderr
        assert os.listdir(mountpoint / "config/vbus/devices") == []
    finally:
        assert vbusfs("umount", str(mountpoint)).returncode == 0


def test_modprobe_and_rmmod(mnt, monkeypatch):
    gone = vbusfs("rmmod", mnt.path, "venet-switch")
    assert gone.returncode == 0, gone.stderr
    assert "venet-switch" not in os.listdir(mnt.join("sys/vbus/deviceclass"))
    bad = mnt.sh("mkdir config/vbus/devices/d && echo venet-switch > config/vbus/devices/d/type")
    assert "No such file or directory" in bad.stderr
    back = vbusfs("modprobe", mnt.path, "venet-switch")
    assert back.returncode == 0 and back.stdout == "venet-switch\n", back.stderr
    mnt.sh("echo venet-switch > config/vbus/devices/d/type", check=True)
    busy = vbusfs("rmmod", mnt.path, "venet-switch")
    assert busy.returncode == 1 and "Device or resource busy" in busy.stderr
    missing = vbusfs("modprobe", mnt.path, "no-such-class")
    assert missing.returncode == 1 and "no deviceclass" in missing.stderr
    # a bare name says what is installed, not that it should have been a module:Class
    assert "no installed deviceclass has that name" in missing.stderr, missing.stderr
    assert "venet-switch" in missing.stderr and "(No such file or directory)" in missing.stderr
    # loaded already: success and nothing changes, as modprobe(8)
    again = vbusfs("modprobe", mnt.path, "venet-tap")
    assert again.returncode == 0 and again.stdout == "venet-tap\n", again.stderr
    assert os.path.isdir(mnt.join("sys/vbus/devices/d/interfaces"))


def test_modprobe_a_class_by_module_path(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PLUGINS)
    with LiveMount(str(tmp_path_factory.mktemp("m"))) as mount:
        done = vbusfs("modprobe", mount.path, "buggy:Buggy")
        assert done.returncode == 0, done.stderr
        assert "buggy" in os.listdir(mount.join("sys/vbus/deviceclass"))


def test_tree_prints_the_topology(mnt):
    mnt.sh(BUILD, check=True)
    done = vbusfs("tree", mnt.path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "bus B" in lines and "bus C" in lines
    assert "  interface 0: virtual-ethernet -> device x" in lines
    assert "  interface 2: virtual-ethernet -> device z" in lines
    assert "device u (untyped)" in lines
    assert "device s (venet-switch) on B/devices/3, C/devices/0" in lines
    assert lines[-1] == "deviceclasses: venet-loopback venet-switch venet-tap"


@pytest.mark.parametrize("kind", ["svg", "dot", "png"])
def test_graph_draws_every_bus_and_device(mnt, tmp_path, kind):
    import shutil
    import xml.etree.ElementTree as ET

    if kind != "dot" and shutil.which("dot") is None:
        pytest.skip("Graphviz is not installed")
    mnt.sh(BUILD + ' && mkdir "config/vbus/devices/odd \\"name\\""', check=True)
    out = tmp_path / f"vbus.{kind}"
    done = vbusfs("graph", mnt.path, "-o", str(out))
    assert done.returncode == 0, done.stderr
    if kind == "png":
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return
    text = out.read_text()
    if kind == "svg":
        root = ET.fromstring(text)
        assert root.tag.endswith("svg")
        text = " ".join(t for t in root.itertext())
    for name in (
        "bus B",
        "bus C",
        "x",
        "y",
        "z",
        "s",
        "u",
        'odd "name"' if kind == "svg" else "odd",
    ):
        assert name in text
    assert "venet-switch" in text and "3: virtual-ethernet" in text


def test_graph_refuses_an_unknown_format(mnt, tmp_path):
    done = vbusfs("graph", mnt.path, "-o", str(tmp_path / "x.gif"))
    assert done.returncode == 1 and ".svg, .png or .dot" in done.stderr


def test_umount_of_a_busy_mount_names_who_holds_it(tmp_path_factory):
    with LiveMount(str(tmp_path_factory.mktemp("busy"))) as mount:
        holder = subprocess.Popen(["sleep", "60"], cwd=mount.join("sys/vbus"))
        try:
            busy = vbusfs("umount", mount.path)
            assert busy.returncode == 1, busy.stderr
            assert f"{mount.path} is busy" in busy.stderr, busy.stderr
            assert f"pid {holder.pid} (sleep)" in busy.stderr, busy.stderr
            assert "Traceback" not in busy.stderr
            assert os.listdir(mount.join("sys/vbus"))  # still served
        finally:
            holder.kill()
            holder.wait()
        done = vbusfs("umount", mount.path)
        assert done.returncode == 0, done.stderr
        assert mount_at(mount.path) is None


def test_an_installed_class_that_does_not_load_is_skipped_and_said(tmp_path, monkeypatch):
    """One broken package in the environment: every mount, modprobe and reset used to
    fail for all classes (modprobe as an internal error); now it alone is left out."""
    site = tmp_path / "site"
    dist = site / "brokenpkg-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vbusfs.deviceclasses]\nbroken = brokenpkg:Broken\n")
    (site / "brokenpkg.py").write_text("import vbusfs_no_such_dependency\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    (tmp_path / "m").mkdir()
    with LiveMount(str(tmp_path / "m")) as mount:
        assert "venet-tap" in os.listdir(mount.join("sys/vbus/deviceclass"))
        again = vbusfs("modprobe", mount.path, "venet-switch")
        assert again.returncode == 0 and again.stdout == "venet-switch\n", again.stderr
        broken = vbusfs("modprobe", mount.path, "broken")
        assert broken.returncode == 1, broken.stderr
        assert "broken = brokenpkg:Broken" in broken.stderr, broken.stderr
        assert "vbusfs_no_such_dependency" in broken.stderr, broken.stderr
        assert "(No such file or directory)" in broken.stderr, broken.stderr
        reset = vbusfs("reset", mount.path)
        assert reset.returncode == 0, reset.stderr
        assert "deviceclass broken skipped: its entry point" in mount.log
