"""Mounts serving the `echo` test deviceclass, and member processes that drive it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from vbusfs.testing import LiveMount

PLUGINS = str(pathlib.Path(__file__).parent / "plugins")
CHILD = str(pathlib.Path(__file__).parent / "child.py")

SETUP = (
    "mkdir config/vbus/instances/B config/vbus/devices/E && "
    "echo echo > config/vbus/devices/E/type && "
    "ln -s ../../devices/E config/vbus/instances/B/E"
)


class Child:
    """A member process of bus B with interface 0 open through a RequestResponseClient."""

    def __init__(self, mount: LiveMount, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, CHILD, mount.path, "B", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._line(20)
        assert line == "ready", f"child said {line!r}: {self.stderr()}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _line(self, timeout: float) -> str:
        import select

        assert self.process.stdout is not None
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            raise TimeoutError(f"the child said nothing in {timeout} s")
        return self.process.stdout.readline().rstrip("\n")

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def ask(self, command: str, timeout: float = 20) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class EchoMount:
    """A live mount with device E (class echo) linked into bus B; children it started."""

    def __init__(self, mount: LiveMount) -> None:
        self.mount = mount
        self.children: list[Child] = []
        #: log lines a test expects (a failing loop logs its traceback on purpose)
        self.expect_traceback = False

    @property
    def path(self) -> str:
        return self.mount.path

    def child(self, *args: str) -> Child:
        child = Child(self.mount, *args)
        self.children.append(child)
        return child

    def attr(self, name: str) -> str:
        with open(self.mount.join("sys/vbus/devices/E", name)) as f:
            return f.read().strip()

    def set_attr(self, name: str, value: str) -> None:
        with open(self.mount.join("sys/vbus/devices/E", name), "w") as f:
            f.write(value)

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        return wait_for(predicate, timeout)

    def closes(self) -> tuple[int, int]:
        """(connections closed in order, closed out of order) so far."""
        return int(self.attr("closes")), int(self.attr("bad_closes"))


def _echo_mount(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    load: tuple[str, ...],
    setup: str,
    extra: tuple[str, ...] = (),
) -> Iterator[EchoMount]:
    monkeypatch.setenv("PYTHONPATH", PLUGINS)
    mount = LiveMount(str(tmp_path_factory.mktemp("mnt")), load=load, extra=extra).start()
    echo = EchoMount(mount)
    try:
        mount.sh(setup, check=True)
        yield echo
    finally:
        for child in echo.children:
            child.end()
        log = mount.stop()
    if not echo.expect_traceback:
        assert "Traceback" not in log, log


@pytest.fixture
def echo_mount(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EchoMount]:
    yield from _echo_mount(tmp_path_factory, monkeypatch, ("echo:Echo",), SETUP)


@pytest.fixture
def pecho_mount(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EchoMount]:
    """Device E of class `pecho` (echo in a worker process) on bus B; a 0.3 s join bound."""
    yield from _echo_mount(
        tmp_path_factory,
        monkeypatch,
        ("pecho:PEcho", "pecho:BrokenPEcho"),
        SETUP.replace("echo echo", "echo pecho"),
        ("--join-bound", "0.3"),
    )
