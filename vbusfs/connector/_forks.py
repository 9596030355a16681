"""The device workers' fork server, the daemon's side (`_workers` runs the data paths).

- `ForkServer`: one clean process (`python -m vbusfs.device._forkserver`, exec'd, never
  forked from the daemon's trio and FUSE process) that forks workers, each waiting on
  its control channel for its recipe; it hands back each one's pid and a pidfd. The
  daemon keeps one such worker forked ahead (`spare`): an open takes it and sends it
  its recipe at once, so it waits for no fork, and the next is forked in the
  background. It ends with the daemon.
- `Workers`: the connector's fork server and the nursery of the tasks watching workers.
  It watches the model: as soon as a process-isolated class is loaded (at the daemon's
  start, by modprobe or a reload) or a device is given one, it starts the fork server in
  the background (else the first such open does), has it import that class's module,
  and forks the spare, so the first open finds a worker ready for it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import select
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from vbusfs.device._control import MAX_FDS, MAX_MESSAGE, close_all, send, unpack_message
from vbusfs.model import Change, ClassLoaded, TypeSet, Vbus, VbusError

log = logging.getLogger("vbusfs.connector")

#: seconds after an open took the worker forked ahead before the next is forked: a fork
#: at once competes for the CPU with the open it follows (its worker starting, its
#: client attaching queues); opens closer together than this fork their own, as without
#: a spare
REFILL_DELAY = 0.1


async def receive(sock: socket.socket) -> tuple[dict[str, Any], bytes, list[int]]:
    """The next control message on a non-blocking socket (EOFError at the peer's end)."""
    while True:
        try:
            data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        except ConnectionResetError:
            raise EOFError("the worker is gone") from None
        return unpack_message(data, ancdata, flags)


@dataclass
class Fresh:
    """A worker forked ahead: waiting on its control channel (`control`, ours) for a
    recipe."""

    pid: int
    pidfd: int
    control: socket.socket

    def alive(self) -> bool:
        poll = select.poll()
        poll.register(self.pidfd, select.POLLIN)
        return not poll.poll(0)

    def close(self) -> None:
        """Let it go: its channel ends, so it exits (the fork server's kernel reaps it)."""
        self.control.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


class ForkServer:
    """The one process that forks device workers (see the module)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._lock: trio.Lock | None = None
        self._ids = itertools.count(1)
        #: the worker forked ahead of the next open
        self.spare: Fresh | None = None
        # bumped by every preload: a spare forked before it lacks the module
        self._generation = 0
        self._refilling = False

    def preload(self, module: str) -> None:
        """Start the server now, in the background, and have it import `module` (a
        process-isolated class's); a spare forked before goes. Never raises."""
        try:
            send(self._ensure(), {"op": "preload", "module": module})
        except Exception as exc:  # the first open tries again, and says why
            log.warning("cannot start the device worker fork server yet: %s", exc)
        self._generation += 1
        self._drop_spare()

    def take(self) -> Fresh | None:
        """The spare, now the caller's (None if there is none, or it died)."""
        spare, self.spare = self.spare, None
        if spare is not None and not spare.alive():
            spare.close()
            return None
        return spare

    async def refill(self, delay: float = 0.0) -> None:
        """Fork the next spare after `delay` seconds, unless one is there or on its way."""
        if self._refilling:
            return
        self._refilling = True
        try:
            await trio.sleep(delay)
            while self.spare is None:
                generation = self._generation
                fresh = await self.fork()
                if generation == self._generation and self.spare is None:
                    self.spare = fresh
                else:
                    fresh.close()
        except OSError as exc:
            log.warning("cannot fork a device worker ahead: %s", exc)
        finally:
            self._refilling = False

    async def fork(self) -> Fresh:
        """A new worker, waiting for its recipe on the channel returned."""
        ours, theirs = channel()
        try:
            pid, pidfd = await self.spawn(theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return Fresh(pid, pidfd, ours)

    def _drop_spare(self) -> None:
        if self.spare is not None:
            self.spare.close()
            self.spare = None

    def _ensure(self) -> socket.socket:
        if self.sock is not None and self.process is not None and self.process.poll() is None:
            return self.sock
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # the worker imports device code as the daemon did: from the daemon's path
        paths = [p for p in sys.path if p] + [env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vbusfs.device._forkserver", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        log.info("device worker fork server started (pid %d)", self.process.pid)
        return ours

    async def spawn(self, control: int) -> tuple[int, int]:
        """A new worker with `control` as its channel: (pid, pidfd)."""
        if self._lock is None:
            self._lock = trio.Lock()
        async with self._lock:
            sock = self._ensure()
            ask = next(self._ids)
            send(sock, {"op": "spawn", "id": ask}, b"", [control])
            while True:
                try:
                    header, _, fds = await receive(sock)
                except EOFError:
                    raise OSError(errno.EPIPE, "the worker fork server ended") from None
                if header.get("id") == ask:
                    break
                close_all(fds)  # the answer to a request given up on: its worker has no channel
        if header["op"] != "spawned" or len(fds) != 1:
            close_all(fds)
            code = header.get("errno")
            raise OSError(code if isinstance(code, int) else errno.EIO, header.get("message", ""))
        return int(header["pid"]), fds[0]

    def close(self) -> None:
        """End the fork server (its workers end with their channels); never blocks long."""
        self._drop_spare()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(1.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def channel() -> tuple[socket.socket, socket.socket]:
    """A worker's control channel: the daemon's end (non-blocking, for trio) and the
    worker's (blocking, handed to it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


class Workers:
    """The connector's device workers: the fork server and the tasks watching workers."""

    def __init__(self, vbus: Vbus | None = None) -> None:
        self.forkserver = ForkServer()
        self._nursery: trio.Nursery | None = None
        self.vbus = vbus
        self._preloaded: set[str] = set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        unsubscribe = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.vbus is not None:
                    unsubscribe = self.vbus.changes.subscribe(self._changed)
                    for deviceclass in self.vbus.classes.values():
                        self._wanted(deviceclass)
                task_status.started()
                await trio.sleep_forever()
        finally:
            if unsubscribe is not None:
                unsubscribe()
            self._nursery = None
            self.forkserver.close()

    def _changed(self, change: Change) -> None:
        if isinstance(change, ClassLoaded) and self.vbus is not None:
            # loaded, or reloaded: the server imports the module (again if it changed)
            self._wanted(self.vbus.classes.get(change.name), again=True)
        elif isinstance(change, TypeSet):
            self._wanted(change.device.deviceclass)

    def _wanted(self, deviceclass: Any, again: bool = False) -> None:
        """`deviceclass` is loaded or a device has it: if it isolates its loops in
        processes, the fork server starts (if it has not), imports its module and forks
        a worker ahead, so the first open finds one waiting."""
        if getattr(deviceclass, "isolation", None) != "process" or not deviceclass.queues:
            return
        module = type(deviceclass).__module__
        if module in self._preloaded and self.forkserver.sock is not None and not again:
            return
        self._preloaded.add(module)
        self.forkserver.preload(module)
        if self._nursery is not None:
            self._nursery.start_soon(self.forkserver.refill)

    def take(self) -> Fresh | None:
        """A worker forked ahead (the next is forked in the background), or None: the
        caller forks its own (`forkserver.fork`)."""
        fresh = self.forkserver.take()
        if self._nursery is not None:
            self._nursery.start_soon(self.forkserver.refill, REFILL_DELAY)
        return fresh

    def start_soon(self, task: Callable[[], Any]) -> None:
        if self._nursery is None:
            raise VbusError("the daemon runs no device workers now", errno=errno.EAGAIN)
        self._nursery.start_soon(task)
