"""The deviceclass guide's "Testing your device" examples are real code that works as the
guide says: its harness test and its conformance machine pass with the guide's Upper."""

from __future__ import annotations

import errno
import pathlib

from hypothesis import HealthCheck, settings

from vbusfs.testing import AttributeValues

GUIDE = pathlib.Path(__file__).parents[2] / "docs" / "deviceclass-guide.md"


def python_blocks() -> list[str]:
    text = GUIDE.read_text()
    return [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]


def run(marker: str, namespace: dict) -> dict:
    (block,) = [b for b in python_blocks() if marker in b]
    exec(compile(block, str(GUIDE), "exec"), namespace)
    return namespace


def with_upper() -> dict:
    return run("class Upper(DeviceClass)", {})


def test_the_guides_harness_example_passes():
    namespace = run("def test_upper_answers_in_upper_case", with_upper())
    namespace["test_upper_answers_in_upper_case"]()


def test_the_guides_conformance_example_passes():
    namespace = run("class UpperConformance(DeviceClassConformance)", with_upper())
    test = namespace["TestUpperConformance"]("runTest")
    test.settings = settings(
        max_examples=10,
        stateful_step_count=10,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    test.runTest()


def test_the_guides_attribute_values_example_is_a_table():
    namespace = run("SIZES = AttributeValues(", {})
    sizes = namespace["SIZES"]
    assert isinstance(sizes, AttributeValues)
    assert sizes.readout("0512") == "512" and sizes.refusal("/no/such/file") == errno.ENOENT
