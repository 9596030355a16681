"""The pytest plugin, as a new user meets it: a throwaway project that only installs vbusfs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from vbusfs.fuse import mount_at
from vbusfs.model import Vbus, VbusError
from vbusfs.testing import FakeTapFactory, LiveMount, fuse_problem

STRICT_INI = """
[pytest]
addopts = --strict-markers -ra -p no:cacheprovider
filterwarnings = error
"""

NEW_USER_TESTS = """
import errno
import os

import pytest
from hypothesis import given, settings

from vbusfs.classes import VenetLoopback
from vbusfs.model import VbusError
from vbusfs.testing import (
    DeviceClassConformance,
    attribute_values,
    invalid_names,
    mac_addresses,
    topologies,
)


def test_the_model_fixture(vbus_model):
    assert {"venet-tap", "venet-loopback", "venet-switch"} <= set(vbus_model.classes)
    vbus_model.create_device("dev0")
    vbus_model.set_device_type("dev0", "venet-tap")
    vbus_model.store_attribute(vbus_model.devices["dev0"], "enabled", "1")  # no host TAP


def test_the_mount_fixture(vbus_mount):
    os.mkdir(vbus_mount.join("config/vbus/devices/dev0"))
    with open(vbus_mount.join("config/vbus/devices/dev0/type"), "w") as f:
        f.write("venet-loopback\\n")
    assert os.path.islink(vbus_mount.join("sys/vbus/devices/dev0/class"))


def test_hypothesis_settings_are_the_users(vbus_model):
    assert settings().max_examples == 100  # the plugin changed no global setting


@given(mac=mac_addresses())
@settings(max_examples=20)
def test_strategies(mac):
    from vbusfs.testing import host_free_model

    vbus = host_free_model()
    vbus.create_device("d")
    vbus.set_device_type("d", "venet-loopback")
    vbus.store_attribute(vbus.devices["d"], "client_mac", mac)


@given(bad=invalid_names("bus"))
@settings(max_examples=20)
def test_invalid_names(bad):
    from vbusfs.model import Vbus

    with pytest.raises(VbusError) as refused:
        Vbus().create_bus(bad.text)
    assert refused.value.errno == bad.errno


@given(vbus=topologies(max_devices=3))
@settings(max_examples=10)
def test_topologies(vbus):
    assert vbus.snapshot()["classes"]


class LoopbackConformance(DeviceClassConformance):
    deviceclass = VenetLoopback
    values = attribute_values("venet-loopback")


TestLoopback = LoopbackConformance.TestCase
TestLoopback.settings = settings(max_examples=10, stateful_step_count=10)
"""


# under the ci profile the throwaway projects draw the same examples on every run too
SEED = ["--hypothesis-seed=0"] if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else []


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makefile(".ini", pytest=STRICT_INI)
    return pytester.runpytest_subprocess(*SEED, *args, timeout=120)


def test_a_new_users_project_uses_the_fixtures_and_strategies(pytester: pytest.Pytester):
    pytester.makepyfile(test_new_user=NEW_USER_TESTS)
    result = run(pytester)
    if fuse_problem() is None:
        result.assert_outcomes(passed=7)
    else:
        result.assert_outcomes(passed=6, skipped=1)


def test_vbus_mount_skips_with_the_reason_where_fuse_is_unusable(pytester: pytest.Pytester):
    pytester.makeconftest(
        "import vbusfs.testing._mount as mounts\n"
        "mounts.fuse_problem = lambda: '/dev/fuse does not exist'\n"
    )
    pytester.makepyfile("def test_needs_a_mount(vbus_mount):\n    raise AssertionError\n")
    result = run(pytester)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*vbus_mount needs a usable FUSE: /dev/fuse does not exist*"])


@pytest.mark.mount
def test_vbus_mount_is_unmounted_when_the_test_fails(pytester: pytest.Pytester):
    record = pytester.path / "mountpoint"
    pytester.makepyfile(
        f"def test_fails(vbus_mount):\n"
        f"    with open({str(record)!r}, 'w') as f:\n"
        f"        f.write(vbus_mount.path + ' ' + str(vbus_mount.pid))\n"
        f"    assert vbus_mount.mounted()\n"
        f"    raise AssertionError('the test fails')\n"
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    path, pid = record.read_text().split()
    assert mount_at(path) is None
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # the daemon is gone too


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester):
    pytester.makepyfile("def test_uses_it(vbus_model):\n    pass\n")
    result = run(pytester, "-p", "no:vbusfs")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'vbus_model' not found*"])


def test_loading_the_plugin_imports_nothing_heavy():
    code = (
        "import sys, vbusfs.testing._plugin\n"
        "print(sorted(m.split('.')[0] for m in sys.modules"
        " if m.startswith(('hypothesis', 'pyfuse3', 'trio', 'cffi', 'vbusfs.'))"
        " and not m.startswith('vbusfs.testing')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the fixtures in this suite (which loads the plugin too) --------------------


def test_vbus_model_is_host_free(vbus_model: Vbus, vbus_tap_factory: FakeTapFactory):
    vbus_model.create_device("dev0")
    vbus_model.set_device_type("dev0", "venet-tap")
    device = vbus_model.devices["dev0"]
    vbus_model.store_attribute(device, "enabled", "1")
    assert vbus_model.show_attribute(device, "ifname") == "fake0"
    assert len(vbus_tap_factory.live) == 1
    vbus_model.store_attribute(device, "enabled", "0")
    assert not vbus_tap_factory.live
    with pytest.raises(VbusError) as refused:
        vbus_model.store_attribute(device, "host_mac", "02:00:00:00:00:01")
    assert refused.value.errno == errno.EACCES


@pytest.mark.mount
def test_vbus_mount_serves_the_trees(vbus_mount: LiveMount):
    listed = vbus_mount.sh("ls sys/vbus/deviceclass", check=True).stdout.split()
    assert {"venet-loopback", "venet-switch", "venet-tap"} <= set(listed)
    assert vbus_mount.mounted()
