"""`pecho`: the `echo` test deviceclass with its loop in a worker process.

The worker rebuilds the connection from the device's `mode` at open
(`EchoConnection.worker_recipe`). Besides echo's requests, ``exit`` ends the worker
with `os._exit(3)` and ``segv`` reads address 0 (SIGSEGV); `stats` adds the worker's
``pid``. The daemon's side counts closes (`closes`, `bad_closes`) as echo does.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from echo import Echo, EchoConnection, EchoState

from vbusfs.device import WorkerRecipe


class WorkerEcho(EchoConnection):
    """The connection in the worker."""

    def handle(self, request: memoryview, response: memoryview) -> int:
        if request == b"exit":
            os._exit(3)
        if request == b"segv":
            ctypes.string_at(0)  # a real SIGSEGV: reading address 0
        return super().handle(request, response)

    def stats(self) -> dict[str, int]:
        return {"served": self.state.served, "pid": os.getpid()}


def worker(name: str, mode: str, seconds: float) -> WorkerEcho:
    return WorkerEcho(EchoState(name, mode, seconds))


class DaemonEcho(EchoConnection):
    def worker_recipe(self) -> WorkerRecipe:
        return WorkerRecipe(
            __name__, "worker", (self.state.name, self.state.mode, self.state.seconds)
        )


class PEcho(Echo):
    name = "pecho"
    isolation = "process"

    def open(self, state: EchoState, interface_state: Any, version: int) -> DaemonEcho:
        super().open(state, interface_state, version)
        return DaemonEcho(state)


class BrokenEcho(EchoConnection):
    def worker_recipe(self) -> WorkerRecipe:
        return WorkerRecipe(__name__, "no_such_factory")


class BrokenPEcho(PEcho):
    """`pecho-broken`: its recipe names a factory its module lacks."""

    name = "pecho-broken"

    def open(self, state: EchoState, interface_state: Any, version: int) -> BrokenEcho:
        super().open(state, interface_state, version)
        return BrokenEcho(state)
