"""The daemon's log: lines on stderr, and a log file that never outgrows its bound.

A background daemon's stdout and stderr are its log file (libfuse and tracebacks write
there too). `log_to_stderr(log_path=...)` adds the bound: once the file passes
`LOG_MAX_BYTES` it is renamed to FILE.1 (replacing the previous one) and a fresh FILE
takes over fds 1 and 2, so a flood of refused requests costs at most twice the bound
(root's log lives in RAM-backed /run). If the fresh file cannot be made (no fd left,
say), the current one is truncated instead. Nothing here follows a symlink. The fresh
file is held (locked) as the first was, so a sweep of ended mounts leaves it alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from ._runtime import NOFOLLOW, hold

LOG_MAX_BYTES = 1 << 20  # per file; with FILE.1, at most 2 MiB per mount
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class CappedLogHandler(logging.StreamHandler):
    """Log to stderr; keep the log file stderr points at under `max_bytes`."""

    def __init__(self, path: str, max_bytes: int = LOG_MAX_BYTES) -> None:
        super().__init__(sys.stderr)
        self.path = path
        self.max_bytes = max_bytes

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        try:
            if os.fstat(2).st_size > self.max_bytes:
                self._rotate()
        except OSError:
            pass  # a log that cannot be measured is no reason to fail a request

    def _rotate(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            ours = os.fstat(2)
            there = os.lstat(self.path)
            if (there.st_dev, there.st_ino) != (ours.st_dev, ours.st_ino):
                raise OSError("stderr is no longer the log file")
            os.replace(self.path, self.path + ".1")
            fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600
            )
        except OSError:
            os.ftruncate(2, 0)  # O_APPEND: the next line starts the file again
            return
        hold(fd)  # in use while the daemon lives, as the first one was
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def log_to_stderr(*, debug: bool = False, log_path: str | None = None) -> None:
    """Configure the daemon's logging; with `log_path` (stderr's file), keep it bounded."""
    handler: logging.Handler
    if log_path is not None and _is_stderr(log_path):
        handler = CappedLogHandler(log_path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])


def _is_stderr(path: str) -> bool:
    with contextlib.suppress(OSError):
        there, ours = os.lstat(path), os.fstat(2)
        return (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)
    return False
