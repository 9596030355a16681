"""The process a connection speaks for, pinned when it is accepted.

SO_PEERCRED names the peer by pid, and a pid outlives nothing: when the process that
connected exits, its socket may live on in a child it forked before (one that is no
member), and its pid may be given to a new process that is a member of the same bus.
Looked up by pid alone, the connection would regain its authority. So the connector
pins the process itself at accept and revokes the connection once that process has
exited, whatever its pid now names.

The pin is the kernel's own (convention 17): a pidfd for the peer from
getsockopt(SO_PEERPIDFD) (Linux 6.5), which names the process that called connect()
with no race. Before 6.5, os.pidfd_open(pid) right after accept: a race remains if
the process exited and its pid was reused between its connect() and that call. With
no pidfds at all (before 5.3), the process's start time from /proc/PID/stat, with the
same race. A pin holds at most one descriptor, closed with the connection.

I/O: reads the socket's options, /proc; never blocks, never raises but OSError.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

# not in Python 3.11's socket module; the kernel's number since 6.5
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)

_CREDS = struct.Struct("3i")
_INT = struct.Struct("i")
# what pidfds cannot be had with: an old kernel (or a seccomp filter), not a verdict
_NO_PIDFD = (errno.ENOPROTOOPT, errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP)
_GONE = (errno.ESRCH, errno.ENOENT)


class _Socket(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


@dataclass(eq=False)
class PeerPin:
    """The process a connection was accepted from; `exited()` once it has gone."""

    pid: int
    #: a pidfd for the process (owned: `close()` closes it), or None
    pidfd: int | None = None
    #: its start time (/proc/PID/stat field 22) when no pidfd could be had
    start: str | None = None
    #: how the pin was taken: "SO_PEERPIDFD", "pidfd_open", "start time" or "gone"
    how: str = "gone"

    @classmethod
    def of(cls, sock: _Socket) -> PeerPin:
        """Pin the peer of an accepted Unix socket.

        A peer that has already exited gives a pin that says so. OSError only for
        what is a refusal of this connection (out of descriptors, say).
        """
        pid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size))[0]
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, _INT.size)
            return cls(pid, pidfd=_INT.unpack(raw)[0], how="SO_PEERPIDFD")
        except OSError as exc:
            if exc.errno in _GONE:
                return cls(pid)
            if exc.errno not in _NO_PIDFD:
                raise
        try:
            return cls(pid, pidfd=os.pidfd_open(pid), how="pidfd_open")
        except OSError as exc:
            if exc.errno in _GONE:
                return cls(pid)
            if exc.errno not in _NO_PIDFD:
                raise
        start = _start_time(pid)
        return cls(pid, start=start, how="start time" if start is not None else "gone")

    def exited(self) -> bool:
        """Has the pinned process exited (zombies included)? Never blocks.

        OSError (no descriptor left to read /proc with) is no verdict: the caller
        asks again later.
        """
        if self.pidfd is not None:
            poller = select.poll()  # poll, not select: a pidfd may be numbered over 1023
            poller.register(self.pidfd, select.POLLIN)
            return bool(poller.poll(0))
        if self.start is None:
            return True
        return _start_time(self.pid) != self.start

    def close(self) -> None:
        if self.pidfd is not None:
            fd, self.pidfd = self.pidfd, None
            os.close(fd)

    def __enter__(self) -> PeerPin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_time(pid: int) -> str | None:
    """The process's start time, or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    # the command name (field 2) may hold anything, ')' included: split at the last
    fields = text.rsplit(b")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()
