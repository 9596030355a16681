"""Device workers, the daemon's side: the fork server, and a data path in a worker process.

A deviceclass with `isolation = "process"` has each open interface's data path run in
a worker process of its own, rebuilt from the connection's `worker_recipe()`:

- the fork server (`_forks`: one clean process, started in the background as soon as a
  device is given a process-isolated class, keeping a worker forked ahead) forks it;
- `WorkerDataPath`: a `DataPath` whose loop is a worker. The worker is asked for at
  open (the reply does not wait for it); the client's rings are validated here as for a
  thread, then their fds pass to the worker over its control channel (SCM_RIGHTS), as do
  calls and stats: the channel exists from the open on, so nothing waits for the worker
  to be forked or ready (it reads them in order once it runs). Its device events and
  notices come back on the channel. The close order is the thread's: stop (the worker
  stops its rings), join (the worker process has exited: its mappings are gone), at most the
  bound, after which it is SIGKILLed through its pidfd; then `connection.close()`, the
  rings, the client's hang-up socket. A worker that dies (an exception in `serve`,
  `os._exit`, a signal) fails the handle as a failing thread loop does.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import pickle
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import astuple
from typing import Any

import trio

from vbusfs.device import DeviceNames
from vbusfs.device._control import (
    ControlError,
    WorkerRecipe,
    close_all,
    send,
)
from vbusfs.ioq import IoqFault
from vbusfs.model import DeviceConnection, QueueSpec, VbusError

from ._datapath import DataPath, Outcome
from ._forks import Workers, channel, receive

log = logging.getLogger("vbusfs.connector")

#: seconds a device call or stats may take in a worker before it is answered EIO
CALL_BOUND = 5.0


class WorkerDied(Exception):
    """A device's worker process ended without being asked to."""


class WorkerDataPath(DataPath):
    """A data path whose loop runs in a worker process (see the module)."""

    def __init__(
        self,
        connection: DeviceConnection,
        specs: Sequence[QueueSpec],
        names: DeviceNames,
        hangup: socket.socket | None,
        on_end: Callable[[DataPath, Outcome], None],
        workers: Workers,
        bound: float,
        attributes: frozenset[str] = frozenset(),
    ) -> None:
        recipe = connection.worker_recipe()
        if not isinstance(recipe, WorkerRecipe):
            raise TypeError(f"{names.deviceclass}: worker_recipe() gave {recipe!r}")
        super().__init__(connection, specs, names, hangup, on_end)
        self.recipe = recipe
        self.bound = bound
        self.pid: int | None = None
        self.pidfd: int | None = None
        # the worker's channel: a worker forked ahead's, or one for a worker forked later
        self._theirs: socket.socket | None = None
        fresh = workers.take()
        if fresh is not None:
            self.control, self.pid, self.pidfd = fresh.control, fresh.pid, fresh.pidfd
        else:
            self.control, self._theirs = channel()
        self.ready = trio.Event()  # the worker said ready (or is gone)
        self.exited = False
        self.reported = False  # its loop's end was told to on_end
        self._fds: dict[int, list[int]] = {}
        self._replies: dict[int, list[Any]] = {}
        self._seq = itertools.count(1)
        self.why: str | None = None  # why the worker never started
        self.workers = workers
        try:
            # the first message on the channel, whenever the worker reads it: the recipe
            # (with its fds: the kernel's copies travel with it, the connection keeps its own)
            payload = pickle.dumps(
                (
                    recipe.module,
                    recipe.factory,
                    recipe.args,
                    recipe.kwargs,
                    recipe.nice,
                    sorted(attributes),
                )
            )
            try:
                send(self.control, {"op": "recipe"}, payload, recipe.fds)
            except OSError:
                if self._theirs is not None:
                    raise
                # the worker forked ahead died since it was taken: one is forked instead
                self.control.close()
                assert self.pidfd is not None
                os.close(self.pidfd)
                self.pid = self.pidfd = None
                self.control, self._theirs = channel()
                send(self.control, {"op": "recipe"}, payload, recipe.fds)
            workers.start_soon(self._run)
        except BaseException:  # nothing started: what it made goes (the hang-up is the caller's)
            self.exited = self.closed = True
            self._close_rings()
            self.control.close()
            if self._theirs is not None:
                self._theirs.close()
            if self.pidfd is not None:
                os.close(self.pidfd)
            raise

    # -- the worker's life -------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._live()
        finally:
            with trio.CancelScope(shield=True):
                if not self.exited:
                    self.stop()  # the daemon is ending, or watching it broke
                    await self._wait_exit()
                self._exited()

    async def _live(self) -> None:
        if self._theirs is not None:  # no worker was forked ahead: one is forked now
            try:
                self.pid, self.pidfd = await self.workers.forkserver.spawn(self._theirs.fileno())
            except OSError as exc:
                self.why = f"its worker could not start: {exc.strerror or exc}"
                self._exited()
                return
            finally:
                self._theirs.close()
                self._theirs = None
        log.debug("%s: worker pid %d", self.names, self.pid)
        if self.stopping:
            self._ask_stop()
        await self._messages()
        await self._wait_exit()
        self._exited()

    async def _wait_exit(self) -> None:
        """Until the worker process is gone; SIGKILLed if it outlives the bound."""
        if self.pidfd is None:
            return
        with trio.move_on_after(self.bound):
            await trio.lowlevel.wait_readable(self.pidfd)
            return
        self.kill()
        with trio.move_on_after(self.bound):
            await trio.lowlevel.wait_readable(self.pidfd)

    async def _messages(self) -> None:
        """What the worker says, until its channel ends."""
        while True:
            try:
                header, payload, fds = await receive(self.control)
            except EOFError:
                return
            except ControlError as exc:
                log.error("%s: its worker broke the control channel: %s", self.names, exc)
                self.kill()
                continue
            close_all(fds)
            op, seq = header["op"], header.get("seq")
            if op == "ready":
                self.ready.set()
            elif op == "reply" and isinstance(seq, int) and seq in self._replies:
                box = self._replies.pop(seq)
                box[1] = (header, payload)
                box[0].set()
            elif op == "ended":
                self._loop_said(header)
            elif op == "event":
                self._event(header)
            elif op == "notify":
                self._notice(header)

    def _event(self, header: dict[str, Any]) -> None:
        """The worker's connection sent its client a device event: on, as a thread's."""
        kind, data = header.get("kind"), header.get("data")
        sink = self.connection.event_sink
        if not isinstance(kind, str) or not isinstance(data, dict):
            log.error("%s: its worker sent a malformed device event", self.names)
            self.kill()
        elif sink is not None and not self.stopping:
            try:
                sink(kind[:64], data)
            except Exception as exc:  # too big for the connector, say: the device's to fix
                log.error("%s: its worker's device event was refused: %s", self.names, exc)

    def _notice(self, header: dict[str, Any]) -> None:
        """The worker's connection marked an attribute changed (`notify`)."""
        attribute = header.get("attribute")
        try:
            if not isinstance(attribute, str):
                raise ValueError(f"{attribute!r} is not an attribute's name")
            self.connection.notify(attribute)
        except Exception as exc:
            log.error("%s: its worker's notify was refused: %s", self.names, exc)

    def _loop_said(self, header: dict[str, Any]) -> None:
        """The worker's loop ended by itself: as a thread's would, `on_end` hears how."""
        if self.stopping or self.reported:
            return
        kind, message = header.get("kind"), str(header.get("message", ""))[:512]
        outcome: Outcome = None
        if not self.ready.is_set() and kind == "error":
            outcome = WorkerDied(f"its worker could not start: {message}")
        elif kind == "fault":
            code = header.get("errno")
            outcome = IoqFault(code if isinstance(code, int) else errno.EPROTO, message)
        elif kind not in ("returned", "closed"):
            outcome = WorkerDied(f"its loop failed in its worker: {message}")
        self.reported = True
        self.on_end(self, outcome)

    def _exited(self) -> None:
        """The worker process is gone (or never was)."""
        if self.exited:
            return
        self.exited = True
        self.ready.set()
        for box in self._replies.values():
            box[0].set()
        self._replies.clear()
        self.ended.set()
        if self.stopping:
            self._finish()
        elif not self.reported:
            self.reported = True
            why = self.why or f"its worker process (pid {self.pid}) ended unexpectedly"
            self.on_end(self, WorkerDied(why))

    def kill(self) -> None:
        """SIGKILL the worker through its pidfd (no pid is ever reused for it)."""
        if self.pidfd is not None and not self.exited:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        elif self.pid is None:
            with contextlib.suppress(OSError):
                self.control.shutdown(socket.SHUT_RDWR)  # a worker on its way ends at once

    # -- the data path -----------------------------------------------------------

    def attach(self, index: int, fds: Sequence[int], direction: Any) -> None:
        if self.stopping or index in self.rings or index not in self.specs:
            super().attach(index, fds, direction)  # refused there
            return
        copies: list[int] = []
        try:
            for fd in fds:
                copies.append(os.dup(fd))
            self._fds[index] = copies
            super().attach(index, fds, direction)
        except BaseException:
            self._fds.pop(index, None)
            close_all(copies)
            raise

    def _start(self) -> None:
        if not self.exited:  # the worker reads them once it runs
            self._send_queues()

    def _send_queues(self) -> None:
        order = sorted(self._fds)
        fds = [fd for index in order for fd in self._fds[index]]
        header = {
            "op": "queues",
            "queues": [list(astuple(self.specs[index])) for index in order],
            "names": [self.names.deviceclass, self.names.device, self.names.interface],
        }
        try:
            send(self.control, header, b"", fds)
        except OSError as exc:
            log.warning("%s: cannot hand its worker the queues: %s", self.names, exc)
            self.kill()
        finally:
            close_all(fds)
            self._fds.clear()

    @property
    def running(self) -> bool:
        return not self.ended.is_set()

    def stop(self) -> None:
        """Step 1: ask the worker to stop its rings. Never blocks; idempotent."""
        if not self.stopping:
            self.stopping = True
            self._ask_stop()

    def _ask_stop(self) -> None:
        if self.pid is not None and not self.exited:
            try:
                send(self.control, {"op": "stop"})
            except OSError:
                self.kill()

    def abandon(self, bound: float) -> None:
        log.error(
            "%s: its worker (pid %s) did not stop within %g s: killed",
            self.names,
            self.pid,
            bound,
        )
        self.kill()

    def _finish(self) -> None:
        if self.closed:
            return
        super()._finish()
        self.control.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        for copies in self._fds.values():
            close_all(copies)
        self._fds.clear()

    # -- calls -----------------------------------------------------------------

    async def ask(
        self, header: dict[str, Any], payload: bytes = b""
    ) -> tuple[dict[str, Any], bytes]:
        """The worker's reply to `header` (sent at once: a worker still starting reads it
        when it runs); VbusError (its errno, or EIO) otherwise."""
        if self.exited or self.stopping:
            raise VbusError(f"{self.names}: its worker is not running", errno=errno.EIO)
        seq = next(self._seq)
        box: list[Any] = [trio.Event(), None]
        self._replies[seq] = box
        try:
            send(self.control, {**header, "seq": seq}, payload)
            with trio.move_on_after(CALL_BOUND):
                await box[0].wait()
        except (OSError, ControlError) as exc:
            raise VbusError(
                f"{self.names}: cannot reach its worker: {exc}", errno=errno.EIO
            ) from None
        finally:
            self._replies.pop(seq, None)
        if box[1] is None:
            raise VbusError(f"{self.names}: its worker did not answer", errno=errno.EIO)
        reply, data = box[1]
        code = reply.get("errno")
        if code is not None:
            code = code if isinstance(code, int) and code > 0 else errno.EIO
            raise VbusError(str(reply.get("message", ""))[:512], errno=code)
        return reply, data

    async def call(self, function: int, data: bytes) -> bytes:
        return (await self.ask({"op": "call", "function": function}, data))[1]

    async def stats(self) -> dict[str, int]:
        stats = (await self.ask({"op": "stats"}))[0].get("stats")
        if not isinstance(stats, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in stats.items()
        ):
            raise VbusError(f"{self.names}: its worker's stats are not counters", errno=errno.EIO)
        return stats
