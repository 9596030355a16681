"""`bench-busy`: the device bench/workers.py measures, in a worker process of its own.

A request/response device whose requests ``spin:US`` compute in Python for US
microseconds (a loop that holds the interpreter lock) and whose other requests echo.
Its `switch_us` attribute (0: the worker's own setting) sets the worker's interpreter
switch interval, so the bench can run the worker as vbusfs ships it and with Python's
default side by side.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from vbusfs.device import (
    Attribute,
    DeviceClass,
    InvalidValue,
    RequestResponseConnection,
    WorkerRecipe,
    request_response_queues,
)


class BusyConnection(RequestResponseConnection):
    # as the framework's tests' echo: between two ring operations the loop computes
    # 8 requests in Python (16 ms of `spin:2000`) without letting go of the lock
    batch = 32
    commit_every = 8

    def __init__(self, switch_us: int) -> None:
        self.switch_us = switch_us

    def handle(self, request: memoryview, response: memoryview) -> int:
        if bytes(request[:5]) == b"spin:":
            end = time.perf_counter() + int(bytes(request[5:])) / 1e6
            while time.perf_counter() < end:
                pass
        n = len(request)
        response[:n] = request
        return n

    def stats(self) -> dict[str, int]:
        return {"pid": os.getpid(), "switch_us": round(sys.getswitchinterval() * 1e6)}

    def worker_recipe(self) -> WorkerRecipe:
        return WorkerRecipe(__name__, "in_worker", (self.switch_us,))


def in_worker(switch_us: int) -> BusyConnection:
    if switch_us:
        sys.setswitchinterval(switch_us / 1e6)
    return BusyConnection(switch_us)


def _store_switch(state: dict[str, int], text: str) -> None:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 100_000:
        raise InvalidValue("switch_us is 0 (the worker's own) to 100000 microseconds")
    state["switch_us"] = int(text)


class BusyDevice(DeviceClass):
    name = "bench-busy"
    interface_type = "bench-busy"
    versions = frozenset({1})
    isolation = "process"
    queues = request_response_queues(4096, 4096, max_count=256)
    attributes = (
        Attribute("switch_us", lambda s: str(s["switch_us"]), _store_switch, "0: the worker's"),
    )

    def create(self, device_name: str) -> dict[str, int]:
        return {"switch_us": 0}

    def open(self, state: dict[str, int], interface_state: Any, version: int) -> BusyConnection:
        return BusyConnection(state["switch_us"])
