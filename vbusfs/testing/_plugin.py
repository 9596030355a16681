"""The vbusfs pytest plugin: fixtures for tests that need a vbus, live or in-process.

Installing vbusfs registers this module through the `pytest11` entry point,
so every pytest run in that environment has these fixtures (disable it with
`-p no:vbusfs`):

- `vbus_model`: a fresh in-process `Vbus` from `host_free_model()`: every
  discovered deviceclass plus `vbus_load`, with venet-tap on the fake taps of
  `vbus_tap_factory`. No FUSE, no root, no host side effects.
- `vbus_mount`: a `LiveMount` on a temporary directory, started for one test
  with the classes of `vbus_load` loaded, in a private network namespace when
  the test runs as root. At teardown it is unmounted and its daemon stopped,
  whatever the test did; the test then fails if the daemon logged a traceback
  (an internal error is always a bug). Where `/dev/fuse` is unusable the test
  is skipped, and the reason says why.
- `vbus_load`: import specs (`package.module:ClassName`) of deviceclasses to
  load besides the discovered ones; `()` unless a conftest overrides it.
- `vbus_tap_factory`: the `FakeTapFactory` behind `vbus_model`'s venet-tap.

Fixtures are function-scoped, so a `@given` test should not take
`vbus_model` (hypothesis runs the body many times with one fixture value);
draw a model from `topologies()` or call `host_free_model()` in the body.

The plugin registers no hypothesis profile and changes no global setting; its
only hook stops, at the end of the session, any mount a crashed test left.
Being loaded into every pytest run of the environment, it imports only
pytest itself: the rest of vbusfs is imported when a fixture is first used,
so a broken vbusfs build breaks only the tests that use it.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from vbusfs.model import Vbus

    from ._fakes import FakeTapFactory
    from ._mount import LiveMount


@pytest.fixture
def vbus_load() -> tuple[str, ...]:
    """Deviceclasses (`package.module:ClassName`) to load besides the discovered ones."""
    return ()


@pytest.fixture
def vbus_tap_factory() -> FakeTapFactory:
    """The fake TAP factory venet-tap devices of `vbus_model` use."""
    from ._fakes import FakeTapFactory

    return FakeTapFactory()


@pytest.fixture
def vbus_model(vbus_load: tuple[str, ...], vbus_tap_factory: FakeTapFactory) -> Vbus:
    """A fresh in-process vbus with every discovered deviceclass loaded (no FUSE)."""
    from ._fakes import host_free_model

    return host_free_model(vbus_load, taps=vbus_tap_factory)


@pytest.fixture
def vbus_mount(tmp_path: pathlib.Path, vbus_load: tuple[str, ...]) -> Iterator[LiveMount]:
    """A live vbusfs mount for one test, unmounted and stopped at teardown."""
    from ._mount import LiveMount, fuse_problem, netns_available

    problem = fuse_problem()
    if problem is not None:
        pytest.skip(f"vbus_mount needs a usable FUSE: {problem}")
    mountpoint = tmp_path / "vbus"
    mountpoint.mkdir()
    mount = LiveMount(str(mountpoint), private_netns=netns_available(), load=vbus_load)
    mount.start()  # a mount that does not come up is stopped and raises with its log
    try:
        yield mount
    finally:
        log = mount.stop()
    if "Traceback" in log:
        pytest.fail(f"the vbusfs daemon logged an internal error:\n{log}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Whatever a crashed or interrupted test left mounted goes now (if any was made).
    mounts = sys.modules.get("vbusfs.testing._mount")
    if mounts is not None:
        mounts.stop_all()
