"""The `net` fixture: namespaces and drivers of one test, all gone after it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from enet_net import Net


@pytest.fixture
def net() -> Iterator[Net]:
    if os.getuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root, iproute2 and nsenter")
    n = Net(f"vbusfs-enet-{os.getpid()}")
    try:
        yield n
    finally:
        n.close()
