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
    stop_daemon,
)
from vbusfs.fuse import mount_at

__all__ = ["LiveMount", "fuse_problem", "netns_available", "stop_all"]

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
        self._final_log = ""  # the log's text once stop() has removed the file
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
        """The daemon's log so far (after `stop()`, all of it)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return self._final_log

    def mounted(self) -> bool:
        return mount_at(self.path) is not None

    def stop(self, timeout: float = 10.0) -> str:
        """Unmount, end the daemon, and return its log."""
        stop_daemon(self.process, self.path, timeout=timeout)
        _LIVE.discard(self)
        self._final_log = log = self.log
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
        return log

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
