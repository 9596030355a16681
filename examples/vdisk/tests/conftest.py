"""Fixtures come from vbusfs's pytest plugin (`vbus_model`, `vbus_mount`); this makes sure
`vdisk` is loaded, and gives the mount tests a disk on a bus this process has joined.

Installed (`pip install .`), the class is found through its entry point; run from a
checkout with `PYTHONPATH=src`, it is loaded by name instead (the daemon inherits
PYTHONPATH, so it imports the same code).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from vbusfs.classes import discover
from vbusfs.testing import LiveMount

BUS = "B"
DISK = "D"


@pytest.fixture
def vbus_load() -> tuple[str, ...]:
    return () if "vdisk" in discover() else ("vbusfs_vdisk:Vdisk",)


def join(mount: LiveMount, bus: str) -> None:
    """Make this process a member of `bus` (`0`: of none)."""
    with open(mount.join("proc/self/vbus"), "w") as f:
        f.write(bus)


@pytest.fixture
def disk_mount(vbus_mount: LiveMount) -> Iterator[LiveMount]:
    """A mount with vdisk `D` (memory, 1 MiB) linked into bus `B`, which this process
    has joined (it leaves at teardown)."""
    vbus_mount.sh(
        f"mkdir config/vbus/instances/{BUS} config/vbus/devices/{DISK}"
        f" && echo vdisk > config/vbus/devices/{DISK}/type"
        f" && echo 1048576 > sys/vbus/devices/{DISK}/size"
        f" && ln -s $PWD/config/vbus/devices/{DISK} config/vbus/instances/{BUS}/",
        check=True,
    )
    join(vbus_mount, BUS)
    try:
        yield vbus_mount
    finally:
        with contextlib.suppress(OSError):
            join(vbus_mount, "0")
