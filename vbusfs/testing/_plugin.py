"""The vbusfs pytest plugin: fixtures for tests that need a vbus, live or in-process.

Installing vbusfs registers this module through the `pytest11` entry point,
so every pytest run in that environment has these fixtures (disable it with
`-p no:vbusfs`):

- `vbus_model`: a fresh in-process `Vbus` from `host_free_model()`: every
  discovered deviceclass plus `vbus_load`, with venet-tap on the fake taps of
  `vbus_tap_factory`. No FUSE, no root, no host side effects.
- `vbus_mount`: a `LiveMount` of the session's one daemon (one per xdist worker),
  started on first use and reset to the empty state after each test (`vbusfs
  reset`: every open interface closed, every interface, device and bus removed,
  every member let go, the classes of `vbus_load` unloaded), so a test costs
  milliseconds, not a daemon's start. The test's `vbus_load` classes are loaded
  by modprobe before it runs. Its `log` is the test's part of the daemon's log,
  and the test fails if that part holds a traceback (an internal error is always
  a bug) or if the reset fails (the daemon is then replaced). A daemon that died,
  was unmounted or stopped answering, or was started with another PYTHONPATH or
  working directory, is replaced before the next test. The daemon runs in a
  private network namespace when the session runs as root. Where `/dev/fuse` is
  unusable the test is skipped, and the reason says why.
  `@pytest.mark.vbus_fresh_daemon` gives a test a daemon of its own instead
  (started with `vbus_load`, unmounted and stopped at teardown whatever the
  test did): for a test that kills, signals or counts the daemon's resources,
  changes its environment, or would leave what a reset cannot take away.
- `vbus_shared_daemon`: the session's `SharedMount` behind `vbus_mount`.
- `vbus_load`: import specs (`package.module:ClassName`) of deviceclasses to
  load besides the discovered ones; `()` unless a conftest overrides it.
- `vbus_tap_factory`: the `FakeTapFactory` behind `vbus_model`'s venet-tap.

Fixtures are function-scoped, so a `@given` test should not take
`vbus_model` (hypothesis runs the body many times with one fixture value);
draw a model from `topologies()` or call `host_free_model()` in the body.

The plugin registers no hypothesis profile and changes no global setting; its
hooks register the `vbus_fresh_daemon` marker and stop, at the end of the session,
any mount a crashed test left.
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
    from ._mount import LiveMount, SharedMount


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


FRESH_MARKER = "vbus_fresh_daemon"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{FRESH_MARKER}: vbus_mount starts a daemon for this test alone instead of "
        "resetting the one the session shares",
    )


@pytest.fixture(scope="session")
def vbus_shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedMount]:
    """The daemon `vbus_mount` shares among the session's tests (one per xdist worker,
    each worker being a session of its own); started on first use."""
    from ._mount import SharedMount, netns_available

    shared = SharedMount(
        str(tmp_path_factory.mktemp("vbus-shared")), private_netns=netns_available()
    )
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def vbus_mount(request: pytest.FixtureRequest, vbus_load: tuple[str, ...]) -> Iterator[LiveMount]:
    """A live vbusfs mount for one test: the session's daemon, reset between tests."""
    from ._mount import LiveMount, SetupFailed, fuse_problem, netns_available

    problem = fuse_problem()
    if problem is not None:
        pytest.skip(f"vbus_mount needs a usable FUSE: {problem}")
    if request.node.get_closest_marker(FRESH_MARKER) is not None:
        tmp_path: pathlib.Path = request.getfixturevalue("tmp_path")
        mountpoint = tmp_path / "vbus"
        mountpoint.mkdir()
        mount = LiveMount(str(mountpoint), private_netns=netns_available(), load=vbus_load)
        mount.start()  # a mount that does not come up is stopped and raises with its log
        try:
            yield mount
        finally:
            log = mount.stop()
        failure = None
    else:
        shared: SharedMount = request.getfixturevalue("vbus_shared_daemon")
        try:
            mount = shared.acquire(vbus_load)
        except SetupFailed as exc:
            refused: str | None = str(exc)
        else:
            refused = None
        if refused is not None:
            pytest.fail(refused, pytrace=False)
        try:
            yield mount
        finally:
            log, failure = shared.release()
    if "Traceback" in log:
        pytest.fail(f"the vbusfs daemon logged an internal error:\n{log}", pytrace=False)
    if failure is not None:
        pytest.fail(f"{failure}\ndaemon log of this test:\n{log}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Whatever a crashed or interrupted test left mounted goes now (if any was made).
    mounts = sys.modules.get("vbusfs.testing._mount")
    if mounts is not None:
        mounts.stop_all()
