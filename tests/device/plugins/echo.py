"""A tiny request/response deviceclass for the framework's tests: `echo`.

Each request comes back as its response; ``event:TEXT`` also sends the client a device
event ``echoed`` with ``{"text": TEXT, "served": N}`` from the loop's thread;
``spin:US`` computes in Python for US microseconds first (a loop busy in Python, holding
the interpreter lock). Some requests misbehave on purpose:
``raise`` makes `handle` raise a plain exception (the loop fails); ``einval``
raises a VbusError, answered by `error_response` as ``E<errno>``. The device's
`mode` attribute picks what its loop does instead of serving when it is stopped:

- ``echo``: serve, and end when stopped (the well-behaved loop);
- ``stuck-c:S``: ignore the stop, sleeping S seconds in C (time.sleep);
- ``stuck-python:S``: ignore the stop, spinning in Python for S seconds;
- ``stuck-wait:S``: ignore the stop, waiting S seconds on a thread's result, as a
  loop that hands its work to a worker thread and joins it would.

Its attributes count what the framework did: `serving` (loops running now),
`served` (requests handled), `closes` (connections closed after their loop had
ended and before their rings were closed: the close order), `bad_closes` (any
other close). A second client is refused (EBUSY) while one has it open.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from vbusfs.device import (
    Attribute,
    Busy,
    DeviceClass,
    InvalidValue,
    IoqClosed,
    Queues,
    RequestResponseConnection,
    VbusError,
    request_response_queues,
)

log = logging.getLogger("vbusfs.tests.echo")

MODES = ("echo", "stuck-c", "stuck-python", "stuck-wait")


@dataclass(eq=False)
class EchoState:
    name: str
    mode: str = "echo"
    seconds: float = 0.0
    clients: int = 0
    serving: int = 0
    served: int = 0
    closes: int = 0
    bad_closes: int = 0


def _store_mode(state: EchoState, text: str) -> None:
    mode, _, seconds = text.partition(":")
    if mode not in MODES or (mode != "echo") != bool(seconds):
        raise InvalidValue(f"mode is one of {', '.join(MODES)} (stuck ones with :SECONDS)")
    try:
        value = float(seconds) if seconds else 0.0
    except ValueError:
        raise InvalidValue(f"{seconds!r} is not a number of seconds") from None
    state.mode, state.seconds = mode, value


def _counter(name: str) -> Attribute:
    return Attribute(name, lambda state: str(getattr(state, name)), None, f"{name} so far")


class Echo(DeviceClass):
    name = "echo"
    interface_type = "echo"
    versions = frozenset({1})
    queues = request_response_queues(4096, 4096, max_count=256)
    attributes = (
        Attribute(
            "mode",
            lambda s: s.mode + (f":{s.seconds:g}" if s.mode != "echo" else ""),
            _store_mode,
        ),
        _counter("serving"),
        _counter("served"),
        _counter("closes"),
        _counter("bad_closes"),
    )

    def create(self, device_name: str) -> EchoState:
        return EchoState(device_name)

    def open(self, state: EchoState, interface_state: Any, version: int) -> EchoConnection:
        if state.clients:
            raise Busy("echo is open by another client")
        state.clients += 1
        return EchoConnection(state)


class EchoConnection(RequestResponseConnection):
    batch = 32
    commit_every = 8

    def __init__(self, state: EchoState) -> None:
        self.state = state
        self.queues: Queues | None = None
        self.serve_ended = threading.Event()
        self.closed = False

    def handle(self, request: memoryview, response: memoryview) -> int:
        if request == b"raise":
            raise RuntimeError("asked to fail")
        if request == b"einval":
            raise InvalidValue("asked for EINVAL")
        if bytes(request[:5]) == b"spin:":  # compute in Python for that many microseconds
            end = time.perf_counter() + int(bytes(request[5:])) / 1e6
            while time.perf_counter() < end:
                pass
        if bytes(request[:6]) == b"event:":  # a device event from the loop's thread
            self.send_event("echoed", text=bytes(request[6:]).decode(), served=self.state.served)
        n = len(request)
        response[:n] = request
        self.state.served += 1
        return n

    def error_response(self, request: memoryview, response: memoryview, exc: VbusError) -> int:
        text = f"E{exc.errno}".encode()
        response[: len(text)] = text
        return len(text)

    def serve(self, queues: Queues) -> None:
        self.queues = queues
        self.state.serving += 1
        try:
            super().serve(queues)
        except IoqClosed:
            self._misbehave(queues)
            raise
        finally:
            self.state.serving -= 1
            self.serve_ended.set()

    def _misbehave(self, queues: Queues) -> None:
        """The stuck modes: what a loop that ignores the stop does."""
        mode, seconds = self.state.mode, self.state.seconds
        if mode == "echo":
            return
        log.info("echo %s: ignoring the stop (%s for %g s)", self.state.name, mode, seconds)
        if mode == "stuck-c":
            time.sleep(seconds)
        elif mode == "stuck-python":
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
        elif mode == "stuck-wait":
            done = threading.Event()
            worker = threading.Thread(target=lambda: done.wait(seconds), daemon=True)
            worker.start()
            worker.join()

    def stats(self) -> dict[str, int]:
        return {"served": self.state.served}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        rings_open = self.queues is not None and not any(r.closed for r in self.queues.values())
        in_order = (self.queues is None or self.serve_ended.is_set()) and (
            self.queues is None or rings_open
        )
        if in_order:
            self.state.closes += 1
        else:
            self.state.bad_closes += 1
        self.state.clients -= 1
        log.info("echo %s: closed (in order: %s)", self.state.name, in_order)
