"""The conformance machine reaches the data path, follows declared dependencies and tries
the example tables; a class breaking any of those rules fails it, in process and through a
live mount."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence

import kit_devices
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from vbusfs.connector._datapath import DataPath
from vbusfs.device import Attribute, DeviceClass
from vbusfs.model import Device, Vbus
from vbusfs.testing import (
    AttributeValues,
    DeviceClassConformance,
    LiveMount,
    Opened,
    fuse_problem,
    integer_values,
)

_LABEL = re.compile(r"[a-z0-9-]{1,16}")
# where a daemon imports the test classes from (tests/testing/conftest.py puts it on sys.path)
PLUGINS = os.path.dirname(kit_devices.__file__)


def _junk(accepted: object) -> st.SearchStrategy[str]:
    return st.text(max_size=12).filter(
        lambda t: bool(t) and not t.endswith("\n") and not accepted(t)  # type: ignore[operator]
    )


SIZES = AttributeValues(
    valid=st.integers(1, kit_devices.MAX_SIZE // 512).map(lambda n: str(n * 512)),
    invalid=_junk(lambda t: t.isascii() and t.isdigit()),
    valid_examples={"512": None, "0001024": "1024"},
    invalid_examples={
        "0": errno.ERANGE,
        "513": errno.ERANGE,
        str(kit_devices.MAX_SIZE + 512): errno.ERANGE,
        "1k": errno.EINVAL,
    },
)
LABELS = AttributeValues(
    valid=st.from_regex(_LABEL, fullmatch=True),
    invalid=_junk(_LABEL.fullmatch),
    valid_examples=["disk-2"],
    invalid_examples=["Disk", "a b"],
)


class UpperConformance(DeviceClassConformance):
    deviceclass = kit_devices.Upper
    values = {"size": SIZES, "label": LABELS}
    interface_values = {"weight": integer_values(0, 100)}
    volatile = frozenset({"served"})
    busy_while_open = frozenset({"label"})
    requests = st.binary(min_size=1, max_size=64)

    def check_response(self, opened: Opened, request: bytes, response: bytes) -> None:
        assert response == request.upper(), f"{request!r} answered {response!r}"

    def class_state(self) -> object:
        return frozenset(self.instance.open_devices)  # type: ignore[attr-defined]

    def check_device(self, device: Device) -> None:
        is_open = any(o.device == device.name for o in self.opens)
        assert (device.state.connection is not None) == is_open


TestUpperConformance = UpperConformance.TestCase
TestUpperConformance.settings = settings(
    max_examples=max(settings.default.max_examples, 30),
    stateful_step_count=max(settings.default.stateful_step_count, 25),
)


# -- each rule catches a class that breaks it ---------------------------------------------

QUICK = settings(
    max_examples=200,
    stateful_step_count=20,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate],  # the first failure is enough: no time spent shrinking
    suppress_health_check=list(HealthCheck),
)


def broken(cls: type[DeviceClass], **extra: object) -> type[UpperConformance]:
    return type(f"{cls.__name__}Conformance", (UpperConformance,), {"deviceclass": cls, **extra})


def run_machine(machine: type[DeviceClassConformance]) -> None:
    test = machine.TestCase("runTest")
    test.settings = QUICK
    test.runTest()


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        (broken(kit_devices.FailingLoop), "its loop failed: RuntimeError"),
        (broken(kit_devices.StuckLoop, join_bound=0.2), "its loop did not stop within 0.2 s"),
        (broken(kit_devices.EarlyReturn), "its loop ended before it was stopped"),
        (broken(kit_devices.RaisingClose), "internal error closing the device"),
        (broken(kit_devices.WrongResponse), "answered"),
        (broken(kit_devices.LeakyClose), "the class kept state"),
        (broken(kit_devices.UndeclaredDependency), "which size does not declare it affects"),
        (broken(kit_devices.RangeAsEinval), "failed with EINVAL, not ERANGE"),
        # a class right, its declarations wrong: the machine holds the class to them
        (broken(kit_devices.Upper, busy_while_open=frozenset()), "refused the valid value"),
        (broken(kit_devices.Upper, busy_while_open=frozenset({"label", "size"})), "while open"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_the_machine_catches_a_class_that_breaks_a_data_path_or_attribute_rule(machine, message):
    with pytest.raises((AssertionError, Flaky)) as caught:
        run_machine(machine)
    assert message in str(caught.value)


def test_the_machine_fails_a_framework_that_takes_a_queue_twice(monkeypatch):
    original = DataPath.attach

    def lenient(self: DataPath, index: int, fds: Sequence[int], direction: object) -> None:
        if index not in self.rings:  # a second attach is accepted, and ignored
            original(self, index, fds, direction)

    monkeypatch.setattr(DataPath, "attach", lenient)
    with pytest.raises((AssertionError, Flaky), match="was attached twice or undeclared"):
        run_machine(UpperConformance)


def test_a_declared_dependency_is_followed_and_an_undeclared_one_caught():
    # the same class passes once its dependency is declared in the machine's table
    class Declared(UpperConformance):
        deviceclass = kit_devices.UndeclaredDependency
        affects = {"size": ("blocks",)}

    test = Declared.TestCase("runTest")
    test.settings = settings(QUICK, max_examples=30)
    test.runTest()


# -- declarations ------------------------------------------------------------------------


def _show(state: object) -> str:
    return ""


def _store(state: object, value: str) -> None:
    pass


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ((Attribute("a", _show, _store, affects=("b",)),), r"affects \['b'\]"),
        ((Attribute("a", _show, _store, affects=("a",)),), r"affects \['a'\]"),
        ((Attribute("a", _show, affects=("b",)), Attribute("b", _show)), "read-only"),
    ],
)
def test_a_class_declaring_a_dependency_on_no_other_attribute_does_not_load(table, message):
    class Wrong(DeviceClass):
        name = "wrong"
        interface_type = "wrong"
        attributes = table

    vbus = Vbus()
    with pytest.raises(ValueError, match=message):
        vbus.load_class(Wrong())
    assert vbus.classes == {}


def test_affects_is_a_tuple_of_names():
    with pytest.raises(TypeError, match="tuple of attribute names"):
        Attribute("a", _show, _store, affects="b")  # type: ignore[arg-type]


# -- through a live mount -----------------------------------------------------------------

THROUGH_MOUNT = settings(
    max_examples=8,
    stateful_step_count=15,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def kit_mount(tmp_path_factory: pytest.TempPathFactory):
    if fuse_problem() is not None:
        pytest.skip(f"no usable FUSE: {fuse_problem()}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", ""))
        mount = LiveMount(
            str(tmp_path_factory.mktemp("mnt")),
            load=("kit_devices:Upper", "kit_devices:WrongResponse"),
        ).start()
    try:
        yield mount
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log


@pytest.mark.mount
def test_the_same_machine_passes_through_a_live_mount(kit_mount):
    UpperConformance.run_through_mount(kit_mount, settings=THROUGH_MOUNT)
    # it left the mount as it found it
    assert os.listdir(kit_mount.join("config/vbus/devices")) == []
    assert os.listdir(kit_mount.join("config/vbus/instances")) == []


@pytest.mark.mount
def test_the_machine_through_a_mount_catches_wrong_responses(kit_mount):
    quick = settings(THROUGH_MOUNT, max_examples=50, phases=[Phase.generate])
    with pytest.raises((AssertionError, Flaky), match="answered"):
        broken(kit_devices.WrongResponse).run_through_mount(kit_mount, settings=quick)
    assert os.listdir(kit_mount.join("config/vbus/devices")) == []


def test_the_mount_machine_needs_its_class_loaded(tmp_path):
    with pytest.raises(RuntimeError, match="has no deviceclass 'kit-upper' loaded"):
        UpperConformance.run_through_mount(str(tmp_path), settings=THROUGH_MOUNT)
