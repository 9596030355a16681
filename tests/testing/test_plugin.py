"""The pytest plugin, as a new user meets it: a throwaway project that only installs vbusfs."""

from __future__ import annotations

import errno
import os
import pathlib
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


# -- vbus_mount shares one daemon per session, reset between tests ------------------

EXTRA_CLASS = """
from vbusfs.model import Attribute, DeviceClass


class Extra(DeviceClass):
    name = "extra"
    interface_type = "extra-interface"
    attributes = (Attribute("answer", lambda state: "42"),)
"""

SHARED_TESTS = """
import os
import subprocess

import pytest

RECORD = {record!r}
EMPTY = ["config/vbus/devices", "config/vbus/instances", "sys/vbus/devices",
         "sys/vbus/instances"]


@pytest.fixture
def vbus_load(request):
    return ("extra_class:Extra",) if request.node.name == "test_a_builds" else ()


def record(mount, name):
    with open(RECORD, "a") as f:
        f.write(f"{{name}} {{mount.pid}} {{mount.path}}\\n")


def test_a_builds(vbus_mount):
    record(vbus_mount, "a")
    assert "extra" in os.listdir(vbus_mount.join("sys/vbus/deviceclass"))
    vbus_mount.sh(
        "mkdir config/vbus/devices/d config/vbus/instances/b && "
        "echo extra > config/vbus/devices/d/type && "
        "ln -s $PWD/config/vbus/devices/d config/vbus/instances/b/ && "
        "mkdir config/vbus/devices/l && echo venet-loopback > config/vbus/devices/l/type",
        check=True,
    )
    assert vbus_mount.sh("cat sys/vbus/devices/d/answer").stdout == "42\\n"
    with open(vbus_mount.join("proc/self/vbus"), "w") as f:
        f.write("b")  # this very process joins: the reset must let it go


def test_b_starts_empty(vbus_mount):
    record(vbus_mount, "b")
    for path in EMPTY:
        assert os.listdir(vbus_mount.join(path)) == [], path
    assert "extra" not in os.listdir(vbus_mount.join("sys/vbus/deviceclass"))
    with open(vbus_mount.join("proc/self/vbus")) as f:
        assert f.read() == "<none>\\n"
    assert "serving" not in vbus_mount.log  # only this test's part of the log
    vbus_mount.sh("mkdir config/vbus/devices/d config/vbus/instances/b", check=True)


@pytest.mark.vbus_fresh_daemon
def test_c_has_a_daemon_of_its_own(vbus_mount):
    record(vbus_mount, "c")
    assert "serving" in vbus_mount.log  # its log from the start


def test_d_is_back_on_the_shared_one(vbus_mount):
    record(vbus_mount, "d")
    for path in EMPTY:
        assert os.listdir(vbus_mount.join(path)) == [], path
"""


def recorded(path) -> dict[str, tuple[int, str]]:
    found = {}
    for line in path.read_text().splitlines():
        name, pid, where = line.split()
        found[name] = (int(pid), where)
    return found


@pytest.mark.mount
def test_vbus_mount_shares_one_daemon_and_each_test_starts_empty(pytester: pytest.Pytester):
    record = pytester.path / "record"
    pytester.makepyfile(extra_class=EXTRA_CLASS)
    pytester.makepyfile(test_shared=SHARED_TESTS.format(record=str(record)))
    result = run(pytester)
    result.assert_outcomes(passed=4)
    seen = recorded(record)
    shared = seen["a"]
    assert seen["b"] == shared and seen["d"] == shared  # one daemon, one mount point
    assert seen["c"][0] != shared[0] and seen["c"][1] != shared[1]
    for pid, path in seen.values():
        assert mount_at(path) is None  # every daemon stopped, every mount gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


BUGGY_TESTS = """
import pytest


@pytest.fixture
def vbus_load():
    return ("buggy_class:Buggy",)


def test_1_trips_a_bug_in_the_daemon(vbus_mount):
    vbus_mount.sh("mkdir config/vbus/devices/d && echo buggy > config/vbus/devices/d/type")
    read = vbus_mount.sh("cat sys/vbus/devices/d/broken")
    assert "Input/output error" in read.stderr


def test_2_is_clean(vbus_mount):
    vbus_mount.sh("mkdir config/vbus/devices/d && echo buggy > config/vbus/devices/d/type",
                  check=True)
"""


@pytest.mark.mount
def test_a_traceback_fails_only_the_test_whose_part_of_the_log_has_it(
    pytester: pytest.Pytester,
):
    pytester.makepyfile(
        buggy_class=(pathlib.Path(__file__).parents[1] / "mount/plugins/buggy.py").read_text()
    )
    pytester.makepyfile(test_buggy=BUGGY_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_1_trips_a_bug_in_the_daemon*",
            "*the vbusfs daemon logged an internal error*",
            "*RuntimeError: a bug in a deviceclass*",
        ]
    )


REPLACED_TESTS = """
import os
import signal
import subprocess

import pytest

RECORD = {record!r}


def record(mount, name):
    with open(RECORD, "a") as f:
        f.write(f"{{name}} {{mount.pid}} {{mount.path}}\\n")


@pytest.fixture
def other_path(monkeypatch, tmp_path):
    (tmp_path / "elsewhere_class.py").write_text(
        "from vbusfs.model import DeviceClass\\n"
        "class Elsewhere(DeviceClass):\\n"
        "    name = 'elsewhere'\\n"
        "    interface_type = 'x'\\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))


def test_1_kills_the_daemon(vbus_mount):
    record(vbus_mount, "1")
    vbus_mount.sh("mkdir config/vbus/instances/b", check=True)
    os.kill(vbus_mount.pid, signal.SIGKILL)


def test_2_gets_a_new_one(vbus_mount):
    record(vbus_mount, "2")
    assert os.listdir(vbus_mount.join("config/vbus/instances")) == []


def test_3_unmounts_it(vbus_mount):
    record(vbus_mount, "3")
    subprocess.run(["fusermount3", "-u", vbus_mount.path], check=True)


def test_4_gets_a_new_one(vbus_mount):
    record(vbus_mount, "4")
    vbus_mount.sh("mkdir config/vbus/instances/b", check=True)


@pytest.mark.parametrize("vbus_load", [("elsewhere_class:Elsewhere",)])
def test_5_another_pythonpath_gets_a_daemon_that_imports_from_it(other_path, vbus_mount):
    record(vbus_mount, "5")
    assert "elsewhere" in os.listdir(vbus_mount.join("sys/vbus/deviceclass"))
"""


@pytest.mark.mount
def test_a_daemon_that_died_went_away_or_has_another_pythonpath_is_replaced(
    pytester: pytest.Pytester,
):
    record = pytester.path / "record"
    pytester.makepyfile(test_replaced=REPLACED_TESTS.format(record=str(record)))
    result = run(pytester)
    result.assert_outcomes(passed=5)
    seen = recorded(record)
    pids = [seen[name][0] for name in "12345"]
    assert pids[0] != pids[1] and pids[1] == pids[2] != pids[3] != pids[4]
    assert len({where for _, where in seen.values()}) == 1  # replaced in place
    for pid, path in seen.values():
        assert mount_at(path) is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.mount
def test_a_reset_that_fails_fails_its_test_and_the_daemon_is_replaced(
    pytester: pytest.Pytester,
):
    # the daemon refusing the reset, as it would with EBUSY naming what is left
    pytester.makeconftest(
        "import errno\n"
        "import vbusfs.testing._mount as mounts\n"
        "from vbusfs.client import ConnectorError\n"
        "admin = mounts.SharedMount._admin\n"
        "def refuse_the_first_reset(self, op, **fields):\n"
        "    if op == 'reset' and not getattr(mounts, 'refused', False):\n"
        "        mounts.refused = True\n"
        "        raise ConnectorError(errno.EBUSY, 'the reset left bus b')\n"
        "    return admin(self, op, **fields)\n"
        "mounts.SharedMount._admin = refuse_the_first_reset\n"
    )
    record = pytester.path / "record"
    pytester.makepyfile(
        f"def record(mount):\n"
        f"    with open({str(record)!r}, 'a') as f:\n"
        f"        f.write(f'{{mount.pid}}\\n')\n"
        f"def test_1(vbus_mount):\n"
        f"    record(vbus_mount)\n"
        f"    vbus_mount.sh('mkdir config/vbus/instances/b', check=True)\n"
        f"def test_2(vbus_mount):\n"
        f"    record(vbus_mount)\n"
        f"    vbus_mount.sh('mkdir config/vbus/instances/b', check=True)\n"
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_1*",
            "*vbus_mount could not reset the shared daemon: the reset left bus b*",
        ]
    )
    first, second = record.read_text().split()
    assert first != second
