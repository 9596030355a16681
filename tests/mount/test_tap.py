"""venet-tap's `enabled` makes a real TAP interface, in the daemon's own netns."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vbusfs.testing import LiveMount, netns_available

pytestmark = [
    pytest.mark.mount,
    pytest.mark.root,
    pytest.mark.skipif(not netns_available(), reason="needs unshare and root"),
]


@pytest.fixture
def netns_mount(tmp_path_factory):
    mount = LiveMount(str(tmp_path_factory.mktemp("m")), private_netns=True).start()
    try:
        yield mount
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log


def links_in(pid: int | None) -> str:
    prefix = ["nsenter", "-t", str(pid), "-n"] if pid else []
    done = subprocess.run([*prefix, "ip", "-o", "link", "show"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_enabled_creates_and_removes_the_tap_interface(netns_mount):
    m = netns_mount
    m.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type", check=True)
    m.sh("echo 1 > sys/vbus/devices/D/enabled", check=True)
    ifname = m.sh("cat sys/vbus/devices/D/ifname").stdout.strip()
    assert ifname.startswith("vbus")
    host_mac = m.sh("cat sys/vbus/devices/D/host_mac").stdout.strip()
    inside = links_in(m.pid)
    line = next(line for line in inside.splitlines() if f": {ifname}:" in line)
    assert f"link/ether {host_mac}" in line
    assert f": {ifname}:" not in links_in(None)  # never in the machine's own namespace
    m.sh("echo 1 > sys/vbus/devices/D/enabled", check=True)  # same value: no change
    assert m.sh("cat sys/vbus/devices/D/ifname").stdout.strip() == ifname
    m.sh("echo 0 > sys/vbus/devices/D/enabled", check=True)
    assert m.sh("cat sys/vbus/devices/D/ifname").stdout == "<disabled>\n"
    assert f": {ifname}:" not in links_in(m.pid)


def test_removing_an_enabled_device_removes_its_tap(netns_mount):
    m = netns_mount
    m.sh(
        "mkdir config/vbus/devices/A config/vbus/devices/B && "
        "echo venet-tap > config/vbus/devices/A/type && "
        "echo venet-tap > config/vbus/devices/B/type && "
        "echo 1 > sys/vbus/devices/A/enabled && echo 1 > sys/vbus/devices/B/enabled",
        check=True,
    )
    names = {m.sh(f"cat sys/vbus/devices/{d}/ifname").stdout.strip() for d in "AB"}
    assert len(names) == 2
    m.sh("rmdir config/vbus/devices/A", check=True)
    left = links_in(m.pid)
    assert sum(f": {n}:" in left for n in names) == 1


def test_sigterm_with_an_enabled_tap_exits_cleanly(tmp_path_factory):
    mount = LiveMount(str(tmp_path_factory.mktemp("m")), private_netns=True).start()
    mount.sh(
        "mkdir config/vbus/devices/A && echo venet-tap > config/vbus/devices/A/type && "
        "echo 1 > sys/vbus/devices/A/enabled",
        check=True,
    )
    assert mount.process is not None
    mount.process.terminate()
    assert mount.process.wait(10) == 0
    log = mount.stop()
    assert "Traceback" not in log and "unmounted" in log


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_enabling_without_cap_net_admin_is_refused_and_the_log_says_why(tmp_path_factory):
    # The daemon keeps CAP_SYS_ADMIN (it must mount) but loses CAP_NET_ADMIN for good.
    no_net_admin = ("setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--")
    mount = LiveMount(
        str(tmp_path_factory.mktemp("m")), private_netns=True, prefix=no_net_admin, debug=False
    ).start()
    try:
        mount.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type")
        done = mount.sh("echo 1 > sys/vbus/devices/D/enabled")
        assert done.returncode != 0
        assert "Operation not permitted" in done.stderr  # EPERM, what TUNSETIFF answered
        assert mount.sh("cat sys/vbus/devices/D/enabled").stdout == "0\n"  # nothing changed
        assert mount.sh("cat sys/vbus/devices/D/ifname").stdout == "<disabled>\n"
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log
    reasons = [line for line in log.splitlines() if "CAP_NET_ADMIN" in line]
    assert len(reasons) == 1, log  # one line, at warning level (the daemon ran without --debug)
    assert "WARNING device D: cannot enable: creating a TAP interface" in reasons[0]
    assert "needs CAP_NET_ADMIN in the daemon's network namespace" in reasons[0]
    assert "run the daemon as root or with that capability" in reasons[0]
