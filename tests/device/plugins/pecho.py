"""`pecho`: the `echo` test deviceclass with its loop in a worker process.

The worker rebuilds the connection from the device's `mode` at open
(`EchoConnection.worker_recipe`). Besides echo's requests, ``exit`` ends the worker
with `os._exit(3)` and ``segv`` reads address 0 (SIGSEGV); ``note:TEXT`` writes TEXT
into the device's `note` (a memfd the daemon and the worker share) and calls
`notify("note")`; ``notify:NAME`` calls `notify(NAME)` and answers ``ok`` or the
exception's class name. `stats` adds the worker's ``pid`` and its interpreter's switch interval
(``switch_us``). The daemon's side counts
closes (`closes`, `bad_closes`) as echo does.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from typing import Any

from echo import Echo, EchoConnection, EchoState

from vbusfs.device import Attribute, WorkerRecipe


@dataclass(eq=False)
class PEchoState(EchoState):
    note: int = -1  # a memfd: the note's text, NUL-padded


def _show_note(state: PEchoState) -> str:
    return os.pread(state.note, 256, 0).rstrip(b"\0").decode()


class WorkerEcho(EchoConnection):
    """The connection in the worker."""

    def __init__(self, state: EchoState, note: int) -> None:
        super().__init__(state)
        self.note = note

    def handle(self, request: memoryview, response: memoryview) -> int:
        if request == b"exit":
            os._exit(3)
        if request == b"segv":
            ctypes.string_at(0)  # a real SIGSEGV: reading address 0
        if bytes(request[:5]) == b"note:":
            os.pwrite(self.note, bytes(request[5:]).ljust(256, b"\0"), 0)
            self.notify("note")
        if bytes(request[:7]) == b"notify:":
            try:
                self.notify(bytes(request[7:]).decode())
                answer = b"ok"
            except Exception as exc:
                answer = type(exc).__name__.encode()
            response[: len(answer)] = answer
            return len(answer)
        return super().handle(request, response)

    def stats(self) -> dict[str, int]:
        switch_us = round(sys.getswitchinterval() * 1e6)
        return {"served": self.state.served, "pid": os.getpid(), "switch_us": switch_us}

    def close(self) -> None:
        super().close()
        os.close(self.note)


def worker(name: str, mode: str, seconds: float, *, fds: list[int]) -> WorkerEcho:
    return WorkerEcho(EchoState(name, mode, seconds), fds[0])


class DaemonEcho(EchoConnection):
    state: PEchoState

    def worker_recipe(self) -> WorkerRecipe:
        return WorkerRecipe(
            __name__,
            "worker",
            (self.state.name, self.state.mode, self.state.seconds),
            fds=(self.state.note,),
        )


class PEcho(Echo):
    name = "pecho"
    isolation = "process"
    attributes = (*Echo.attributes, Attribute("note", _show_note, None, "the worker's note"))

    def create(self, device_name: str) -> PEchoState:
        state = PEchoState(device_name)
        state.note = os.memfd_create(f"pecho-{device_name}")
        os.ftruncate(state.note, 256)
        return state

    def destroy(self, state: PEchoState) -> None:
        os.close(state.note)

    def open(self, state: PEchoState, interface_state: Any, version: int) -> DaemonEcho:
        super().open(state, interface_state, version)
        return DaemonEcho(state)


class BrokenEcho(EchoConnection):
    def worker_recipe(self) -> WorkerRecipe:
        return WorkerRecipe(__name__, "no_such_factory")


class BrokenPEcho(PEcho):
    """`pecho-broken`: its recipe names a factory its module lacks."""

    name = "pecho-broken"

    def open(self, state: PEchoState, interface_state: Any, version: int) -> BrokenEcho:
        super().open(state, interface_state, version)
        return BrokenEcho(state)
