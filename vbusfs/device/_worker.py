"""A device worker process: one open interface's connection, rebuilt from its recipe.

Forked by the fork server (`_forkserver`), a worker builds the connection with the
recipe's factory, says `ready`, then serves its control channel (`_control`) on its
main thread: `queues` attaches the client's rings (south side, each watching the
worker's own stop socket) and starts `serve` in a thread, `call` and `stats` are
answered by the connection, and `stop` (or the daemon's end: the channel's EOF) runs
the close order: stop the rings, join the loop, close the connection, close the rings,
exit. When `serve` ends by itself the worker says `ended` and how (an
`IoqFault` is the client's, any other exception the device's), and waits to be stopped.
A worker's loop thread runs at a lower CPU priority than the daemon (the recipe's
`nice`), so the filesystem comes first when they compete; its interpreter switches
threads every 0.2 ms (`SWITCH_INTERVAL`), so a loop computing in Python holds up the
main thread's calls and stop that long at a time, not 5 ms. A worker that hangs is
killed by the daemon; it never outlives the channel's EOF by more than the time its
loop takes to stop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from vbusfs.ioq import Ioq, IoqClosed, IoqFault
from vbusfs.model import DeviceConnection, QueueSpec, VbusError

from ._control import ControlError, close_all, encode, receive, send
from ._queues import DeviceNames, Queues

log = logging.getLogger("vbusfs.worker")

#: how often (seconds) a worker's interpreter switches threads, unless its factory sets
#: its own (`sys.setswitchinterval`): while the loop computes in Python, a call, stats or
#: the stop on the main thread waits about this long for the interpreter lock each time
#: it needs it, not Python's 5 ms (bench/workers.py: stats on a worker whose loop
#: computes 16 ms in Python between ring operations, p50 1.4 ms against 6.2 ms at 5 ms,
#: idle 0.9 ms). It costs nothing while only one thread wants the lock.
SWITCH_INTERVAL = 0.0002


class Worker:
    """The worker's side of one open interface (see the module)."""

    def __init__(
        self,
        sock: socket.socket,
        connection: DeviceConnection,
        nice: int = 0,
        attributes: frozenset[str] = frozenset(),
    ) -> None:
        self.sock = sock
        self.connection = connection
        self.nice = nice
        self.attributes = attributes  # what `notify` may name: the class's attribute tables
        self.rings: dict[int, Ioq] = {}
        self.queues: Queues | None = None
        self.thread: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self.dropped = 0  # events and notices the daemon was too slow to take
        self._watched, self._stopper = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # the connection's send_event and notify, from any of its threads: told to the
        # daemon over the channel, in order (one lock), as a thread's reach the loop
        connection.event_sink = self._event
        connection.notice_sink = self._notice

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        if not isinstance(kind, str):
            raise TypeError(f"a device event's kind is a str, not {kind!r}")
        self.say({"op": "event", "kind": kind[:64], "data": data}, wait=False)

    def _notice(self, attribute: str) -> None:
        if attribute not in self.attributes:
            raise ValueError(f"the device's class declares no attribute {attribute!r}")
        self.say({"op": "notify", "attribute": attribute}, wait=False)

    def say(self, header: dict[str, Any], payload: bytes = b"", *, wait: bool = True) -> None:
        """Send `header` to the daemon (TypeError or ControlError, sending nothing, for
        what JSON or the channel cannot hold); a daemon gone is not the caller's error.
        Without `wait`, a channel the daemon has not drained drops the message (a device
        event or notice never blocks its sender, as in the daemon's own process)."""
        message = encode(header, payload)
        with self._send_lock:
            try:
                self.sock.sendmsg([message], [], 0 if wait else socket.MSG_DONTWAIT)
            except BlockingIOError:
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("the daemon reads this worker's events slowly: one dropped")
            except OSError:
                pass

    def serve_channel(self) -> None:
        """Answer the daemon until stopped (or the channel ends)."""
        while True:
            try:
                header, payload, fds = receive(self.sock)
            except (EOFError, OSError):
                return  # the daemon is gone: stop
            op = header["op"]
            if op == "queues":
                self.start(header, fds)
                continue
            close_all(fds)
            if op == "stop":
                return
            if op in ("call", "stats"):
                self.answer(header, payload)
            else:
                raise ControlError(f"unknown control operation {op[:64]!r}")

    def answer(self, header: dict[str, Any], payload: bytes) -> None:
        """A call's or stats' reply, the device's errno if it refuses."""
        reply: dict[str, Any] = {"op": "reply", "seq": header.get("seq")}
        data = b""
        try:
            if header["op"] == "call":
                data = bytes(self.connection.call(int(header["function"]), payload))
            else:
                reply["stats"] = self.connection.stats()
        except VbusError as exc:
            reply.update(errno=exc.errno, message=str(exc.args[0] if exc.args else exc))
        except Exception as exc:  # the device's bug: answered EIO, the worker goes on
            traceback.print_exc()
            reply.update(errno=errno.EIO, message=f"internal error in the device: {exc!r}"[:512])
        self.say(reply, data)

    def start(self, header: dict[str, Any], fds: list[int]) -> None:
        try:
            specs = [QueueSpec(*spec) for spec in header["queues"]]
            names = DeviceNames(*header["names"])
            if self.thread is not None or len(fds) != 4 * len(specs):
                raise ControlError("queues come once, with 4 file descriptors each")
            for n, spec in enumerate(specs):
                ring = Ioq.attach(fds[4 * n : 4 * n + 4], direction=spec.direction)
                self.rings[spec.index] = ring
                ring.watch_peer(self._watched)
        finally:
            close_all(fds)
        by_index = {spec.index: spec for spec in specs}
        self.queues = Queues(self.rings, by_index, names, stop_socket=self._stopper)
        self.thread = threading.Thread(target=self._loop, name=f"vbusfs {names}"[:200])
        self.thread.start()

    def _loop(self) -> None:
        assert self.queues is not None
        how: dict[str, Any] = {"op": "ended", "kind": "returned"}
        # this thread only (Linux nice is per thread): the trees win the CPU from a busy
        # loop, while calls, stats and the stop on the main thread stay prompt
        with contextlib.suppress(OSError):
            os.nice(self.nice)
        try:
            self.connection.serve(self.queues)
        except IoqClosed:
            how["kind"] = "closed"
        except IoqFault as exc:
            how.update(kind="fault", errno=exc.errno or errno.EPROTO, message=str(exc)[:512])
        except BaseException as exc:  # the device's failure: the daemon fails the handle
            traceback.print_exc()
            how.update(kind="error", message=repr(exc)[:512])
        if not self.queues.stopping:
            self.say(how)

    def close(self) -> None:
        """The close order: stop, join, close the connection, close the rings."""
        if self.queues is not None:
            self.queues.stop()
        else:
            with contextlib.suppress(OSError):
                self._stopper.close()
        if self.thread is not None:
            self.thread.join()
        try:
            self.connection.close()
        except Exception:
            traceback.print_exc()
        for ring in self.rings.values():
            ring.close()
        self._watched.close()


def run(
    control_fd: int,
    factory: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    fds: list[int],
    nice: int = 0,
    attributes: frozenset[str] = frozenset(),
) -> int:
    """A forked worker's life; its exit status."""
    sock = socket.socket(fileno=control_fd)
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        options = dict(kwargs)
        if fds:
            options["fds"] = list(fds)
        connection = factory(*args, **options)
        if not isinstance(connection, DeviceConnection):
            raise TypeError(f"the worker factory returned {connection!r}, not a DeviceConnection")
    except BaseException as exc:
        traceback.print_exc()
        close_all(fds)
        with contextlib.suppress(OSError):
            send(sock, {"op": "ended", "kind": "error", "message": repr(exc)[:512]})
        return 1
    worker = Worker(sock, connection, nice, attributes)
    worker.say({"op": "ready"})
    try:
        worker.serve_channel()
    except Exception:  # a channel the daemon broke: stop all the same
        traceback.print_exc()
    worker.close()
    sys.stderr.flush()
    return 0
