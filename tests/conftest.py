"""Shared test set-up: hypothesis profiles, live mounts, and the session's clean-up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from vbusfs.testing import LiveMount, SharedMount, fuse_problem, netns_available, stop_all

# ci: the same commit draws the same examples on every machine, so CI's verdict depends on
# the code alone (no random seed, no example database carried between runs); a failure
# prints the blob that replays it. dev and deep explore randomly and remember failures.
settings.register_profile(
    "ci",
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("deep", max_examples=2000, stateful_step_count=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

FUSE_PROBLEM = fuse_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if FUSE_PROBLEM and item.get_closest_marker("mount"):
            item.add_marker(pytest.mark.skip(reason=f"no usable FUSE: {FUSE_PROBLEM}"))
        if item.get_closest_marker("root") and os.getuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Whatever a failed or interrupted test left mounted goes now.
    stop_all()


def start_mount(tmp_path_factory: pytest.TempPathFactory, **kwargs: object) -> LiveMount:
    path = tmp_path_factory.mktemp("mnt")
    kwargs.setdefault("private_netns", netns_available())
    return LiveMount(str(path), **kwargs).start()  # type: ignore[arg-type]


@pytest.fixture
def mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMount]:
    """A fresh mount for one test; its daemon must log no internal error."""
    mount = start_mount(tmp_path_factory)
    try:
        yield mount
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log


@pytest.fixture(
    params=[
        pytest.param("cgroup", marks=pytest.mark.root, id="cgroup"),
        pytest.param("proc", id="proc"),
    ]
)
def mode_mnt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveMount]:
    """A fresh mount in each membership mode: kept by the kernel (a cgroup per bus,
    root only) and inferred from /proc. `mode_mnt.membership` says which."""
    mount = start_mount(tmp_path_factory, extra=("--membership", request.param))
    mount.membership = request.param  # type: ignore[attr-defined]
    try:
        yield mount
    finally:
        log = mount.stop()
    assert "Traceback" not in log, log


MODES = [
    pytest.param("cgroup", marks=pytest.mark.root, id="cgroup"),
    pytest.param("proc", id="proc"),
]


@pytest.fixture(scope="session")
def shared_mode_daemons(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, SharedMount]]:
    """One shared daemon per membership mode, started on first use (see shared_mode_mnt)."""
    daemons = {
        mode: SharedMount(
            str(tmp_path_factory.mktemp(f"shared-{mode}")),
            private_netns=netns_available(),
            extra=("--membership", mode),
        )
        for mode in ("cgroup", "proc")
    }
    try:
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.close()


def _use_shared(shared: SharedMount, membership: str) -> Iterator[LiveMount]:
    """A test's turn on a shared daemon: reset after it; its part of the log is clean."""
    mount = shared.acquire()
    mount.membership = membership  # type: ignore[attr-defined]
    try:
        yield mount
    finally:
        log, failure = shared.release()
    assert "Traceback" not in log, log
    assert failure is None, failure


@pytest.fixture(params=MODES)
def shared_mode_mnt(
    request: pytest.FixtureRequest, shared_mode_daemons: dict[str, SharedMount]
) -> Iterator[LiveMount]:
    """mode_mnt on the session's daemon of that mode, reset after each test (as vbus_mount
    is): for tests of membership that use only the trees and processes of their own."""
    yield from _use_shared(shared_mode_daemons[request.param], request.param)


@pytest.fixture
def shared_cgroup_mnt(shared_mode_daemons: dict[str, SharedMount]) -> Iterator[LiveMount]:
    """The session's kernel-tracked daemon (root only), reset after each test."""
    if os.getuid() != 0:
        pytest.skip("kernel-tracked membership needs root")
    yield from _use_shared(shared_mode_daemons["cgroup"], "cgroup")
