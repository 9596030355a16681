"""Live vbusfs mounts for tests: a daemon child per mount, always cleaned up.

`LiveMount` starts a daemon in the foreground as a child process (so its pid
is known), waits until the mount is live, and on `stop()` unmounts and waits
for the daemon to exit, escalating to SIGTERM, SIGKILL and a lazy unmount
only for its own daemon (`vbusfs.daemon.start_daemon` and `stop_daemon`, the
machinery the CLI and the benchmarks use too). Every LiveMount still running is stopped by
`stop_all()`, which the pytest plugin calls at session end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from types import TracebackType

from vbusfs.daemon import (
    READY,
    canonical_mountpoint,
    daemon_command,
    fuse_problem,
    start_daemon,
    statfs_with_timeout,
    stop_daemon,
)
from vbusfs.fuse import mount_at

__all__ = [
    "LiveMount",
    "SetupFailed",
    "SharedMount",
    "fuse_problem",
    "netns_available",
    "stop_all",
]

_LIVE: set[LiveMount] = set()


def netns_available() -> bool:
    return os.getuid() == 0 and shutil.which("unshare") is not None


class LiveMount:
    """A vbusfs mount served by a daemon this process started.

    `private_netns` runs the daemon in a new network namespace (`unshare -n`),
    so the TAP interfaces it creates never touch the machine's own. `prefix` runs
    it under another command that ends by exec'ing it (so `pid` stays the
    daemon's), `setpriv --bounding-set=-net_admin --`, say.
    """

    def __init__(
        self,
        path: str,
        *,
        private_netns: bool = False,
        load: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        debug: bool = True,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.path = canonical_mountpoint(path)
        self.private_netns = private_netns
        self.load = load
        self.extra = extra  # more `vbusfs mount` options (--restore FILE, ...)
        self.debug = debug
        self.prefix = prefix
        self.process: subprocess.Popen[bytes] | None = None
        self._final_log = b""  # the log once stop() has removed the file
        # where `log` starts: the part of one test, when tests share the daemon
        self.log_offset = 0
        fd, self.log_path = tempfile.mkstemp(prefix="vbusfs-daemon-", suffix=".log")
        os.close(fd)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> LiveMount:
        prefix = ["unshare", "-n", "--"] if self.private_netns else []
        prefix += self.prefix

        def command(ready_fd: int) -> list[str]:
            daemon = daemon_command(
                self.path, ready_fd, debug=self.debug, load=self.load, extra=self.extra
            )
            return [*prefix, *daemon]

        self.process, answer = start_daemon(command, self.log_path)
        _LIVE.add(self)
        if answer != READY:
            log = self.stop()  # stop() removes the log file: keep what it returns
            reason = answer.removeprefix("error: ") or "the daemon exited without an answer"
            raise RuntimeError(f"vbusfs did not mount {self.path}: {reason}\ndaemon log:\n{log}")
        return self

    @property
    def log(self) -> str:
        """The daemon's log so far (after `stop()`, all of it), from `log_offset` on."""
        return self._log_bytes()[self.log_offset :].decode("utf-8", errors="replace")

    def _log_bytes(self) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return self._final_log

    def mark_log(self) -> None:
        """Make `log` start here: what the daemon logs from now on."""
        self.log_offset = len(self._log_bytes())

    def alive(self) -> bool:
        """Is the daemon running, mounted, and answering (within a few seconds)?"""
        if self.process is None or self.process.poll() is not None or not self.mounted():
            return False
        return statfs_with_timeout(self.path, 5.0) is None

    def mounted(self) -> bool:
        return mount_at(self.path) is not None

    def stop(self, timeout: float = 10.0) -> str:
        """Unmount, end the daemon, and return its log."""
        stop_daemon(self.process, self.path, timeout=timeout)
        _LIVE.discard(self)
        self._final_log = self._log_bytes()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
        return self.log

    def __enter__(self) -> LiveMount:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- conveniences for tests ------------------------------------------

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def sh(self, command: str, *, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run `command` with bash in the mount's root directory."""
        env = dict(os.environ, LC_ALL="C.UTF-8")
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )


def stop_all() -> None:
    for mount in list(_LIVE):
        mount.stop()


class SetupFailed(Exception):
    """A shared daemon could not be made ready for a test (the message says why)."""


class SharedMount:
    """One daemon that many tests use in turn, reset to the empty state between them.

    `acquire(load)` hands out the `LiveMount`, started on first use and started anew
    if the last one died, was unmounted, no longer answers, or was started with another
    PYTHONPATH or working directory (the daemon imports `load` with its own); its `log`
    is then this test's part of the daemon's log. `release()` resets the daemon (`vbusfs
    reset`: unlink, remove, let members go, unload the classes of `load`) and returns
    this test's log and, if the reset failed, why (the daemon is then stopped, and the
    next `acquire` starts another). `close()` stops it for good.

    Everything the daemon logged between two tests (a device loop ending late, say)
    is checked by the next `acquire`: `SetupFailed` if it holds a traceback.
    """

    def __init__(
        self,
        parent: str,
        *,
        private_netns: bool = False,
        debug: bool = True,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.parent = parent
        self.private_netns = private_netns
        self.debug = debug
        self.extra = extra  # more `vbusfs mount` options (--membership proc, ...)
        self.mount: LiveMount | None = None
        self.started = 0  # how many daemons this has started (the first included)
        self._key: tuple[str | None, str] | None = None
        self._released_at = 0  # the log's length when the last test was done with it

    def acquire(self, load: tuple[str, ...] = ()) -> LiveMount:
        key = (os.environ.get("PYTHONPATH"), os.getcwd())
        old = self.mount
        if old is not None:
            old.log_offset = self._released_at  # what it logged since the last test
            if key != self._key or not old.alive():
                self.mount = None
                between = old.stop()
            else:
                between = old.log
                old.mark_log()
            if "Traceback" in between:
                raise SetupFailed(
                    "the shared vbusfs daemon logged an internal error after the last "
                    f"test was done with it:\n{between}"
                )
        mount = self.mount if self.mount is not None else self._replace(key)
        for spec in load:
            try:
                self._admin("modprobe", deviceclass=spec)
            except Exception as exc:
                self.release()
                raise SetupFailed(
                    f"vbus_mount cannot load a deviceclass {spec} into the daemon at "
                    f"{mount.path}: {_reason(exc)}"
                ) from None
        return mount

    def release(self) -> tuple[str, str | None]:
        """Reset the daemon for the next test: this test's log, and why the reset failed
        (None if it did not, or if the daemon was gone: the test stopped it, say)."""
        mount = self.mount
        if mount is None:
            return "", None
        if not mount.alive():
            self.mount = None
            return mount.stop(), None
        try:
            self._admin("reset")
        except Exception as exc:
            self.mount = None
            return mount.stop(), f"vbus_mount could not reset the shared daemon: {_reason(exc)}"
        data = mount._log_bytes()
        self._released_at = len(data)
        return data[mount.log_offset :].decode("utf-8", errors="replace"), None

    def close(self) -> None:
        if self.mount is not None:
            self.mount.stop()
            self.mount = None

    def _replace(self, key: tuple[str | None, str]) -> LiveMount:
        self.close()
        self.started += 1
        # the same place each time: a daemon started there finds and empties what a
        # killed one left (its membership cgroups, its stale mount)
        path = os.path.join(self.parent, "vbus")
        os.makedirs(path, exist_ok=True)
        mount = LiveMount(
            path, private_netns=self.private_netns, debug=self.debug, extra=self.extra
        )
        mount.start()  # a daemon that does not come up is stopped, and raises with its log
        self.mount, self._key, self._released_at = mount, key, 0
        return mount

    def _admin(self, op: str, **fields: str) -> dict[str, object]:
        from vbusfs import client

        assert self.mount is not None
        with client.connect(self.mount.path) as admin:
            return admin.request(op, (), **fields)


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{text} ({os.strerror(code)})" if code else text
