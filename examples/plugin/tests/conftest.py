"""Fixtures come from vbusfs's pytest plugin; this only makes sure `blink` is loaded.

Installed (`pip install .`), the class is found through its entry point; run
from a checkout with `PYTHONPATH=src`, it is loaded by name instead.
"""

import pytest

from vbusfs.classes import discover


@pytest.fixture
def vbus_load() -> tuple[str, ...]:
    return () if "blink" in discover() else ("vbus_blink:Blink",)
