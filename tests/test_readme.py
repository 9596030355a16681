"""The README's deviceclass example is real code that works as the README says."""

from __future__ import annotations

import errno
import io
import pathlib
import sys
import types
import unittest

import pytest
from hypothesis import settings

from vbusfs.model import Vbus, VbusError

README = pathlib.Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    text = README.read_text()
    return [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]


def test_the_deviceclass_example_works():
    (example,) = [b for b in python_blocks() if "class Blinker(DeviceClass)" in b]
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    vbus = Vbus()
    vbus.load_class(namespace["Blinker"]())  # type: ignore[operator]
    vbus.create_device("d")
    vbus.set_device_type("d", "blinker")
    device = vbus.devices["d"]
    vbus.store_attribute(device, "rate", "5")
    assert vbus.show_attribute(device, "rate") == "5"
    # "fast", and digits int() reads but no sysfs value is spelt with (Arabic-Indic, fullwidth)
    for bad in ("fast", "\u0661", "\uff11", "\u00b2"):
        with pytest.raises(VbusError) as info:
            vbus.store_attribute(device, "rate", bad)
        assert info.value.errno == errno.EINVAL and vbus.show_attribute(device, "rate") == "5"
    with pytest.raises(VbusError) as info:
        vbus.store_attribute(device, "model", "b-2")
    assert info.value.errno == errno.EACCES


def test_the_readme_conformance_example_passes_on_the_readme_class():
    (example,) = [b for b in python_blocks() if "class Blinker(DeviceClass)" in b]
    (check,) = [b for b in python_blocks() if "class BlinkerConformance" in b]
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    module = types.ModuleType("my_package")
    module.Blinker = namespace["Blinker"]  # type: ignore[attr-defined]
    sys.modules["my_package"] = module
    try:
        scope: dict[str, object] = {}
        exec(compile(check.split("def test_on_a_live_mount")[0], "README.md", "exec"), scope)
        test_case = scope["TestBlinker"]
        test_case.settings = settings(max_examples=10, stateful_step_count=10, deadline=None)
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(test_case)
        result = unittest.TextTestRunner(stream=io.StringIO()).run(suite)
        assert result.testsRun == 1 and result.wasSuccessful(), result.failures + result.errors
    finally:
        del sys.modules["my_package"]


def test_the_readme_opens_with_the_two_commands():
    head = README.read_text().split("## ", 1)[0]
    assert "make demo" in head and "make test" in head
