"""Request/response deviceclasses for the testing kit's own tests: one good, many broken.

`Upper` (class `kit-upper`) answers each request with it in upper case. Its device
attributes: `size` (bytes, a multiple of 512 from 512 to 1 MiB: EINVAL for anything
not a decimal number, ERANGE for one out of range), `blocks` (read-only, size / 512:
`size` declares it affects it), `label` (1 to 16 of a-z, 0-9, -; refused with EBUSY
while the device is open), `opened` (read-only, 1 while a client has it open) and
`served` (read-only, requests answered: changes with traffic); its interface has
`weight` (0 to 100). One client at a time (EBUSY). The class keeps the set of open
devices (`open_devices`), empty once every connection is closed.

Each broken class breaks one rule and is otherwise `Upper`:

- `FailingLoop` (`kit-failing`): its loop raises on the third request of an open;
- `StuckLoop` (`kit-stuck`): its loop ignores the stop for a second;
- `EarlyReturn` (`kit-early`): its loop returns at once;
- `RaisingClose` (`kit-raising-close`): its `close()` raises;
- `WrongResponse` (`kit-wrong`): responses longer than 4 bytes come back cut short;
- `LeakyClose` (`kit-leaky`): its `close()` forgets to say the device is no longer open;
- `UndeclaredDependency` (`kit-undeclared`): `size` changes `blocks` without saying so;
- `RangeAsEinval` (`kit-range-einval`): an out-of-range size is refused with EINVAL.
"""

from __future__ import annotations

import errno
import re
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

MAX_SIZE = 1 << 20
_LABEL = re.compile(r"[a-z0-9-]{1,16}")


@dataclass(eq=False)
class UpperState:
    name: str
    size: int = 4096
    label: str = "disk"
    served: int = 0
    connection: UpperConnection | None = None


@dataclass(eq=False)
class WeightState:
    weight: int = 50


def _store_size(state: UpperState, text: str) -> None:
    if not (text.isascii() and text.isdigit()):
        raise InvalidValue(f"size is a decimal number of bytes, not {text!r}")
    size = int(text)
    if size % 512 or not 512 <= size <= MAX_SIZE:
        raise VbusError(f"size is a multiple of 512 from 512 to {MAX_SIZE}", errno=errno.ERANGE)
    state.size = size


def _store_label(state: UpperState, text: str) -> None:
    if state.connection is not None:
        raise Busy("label cannot change while the device is open")
    if not _LABEL.fullmatch(text):
        raise InvalidValue(f"label is 1 to 16 of a-z, 0-9 and -, not {text!r}")
    state.label = text


def _store_weight(state: WeightState, text: str) -> None:
    if not (text.isascii() and text.isdigit()) or int(text) > 100:
        raise InvalidValue(f"weight is 0 to 100, not {text!r}")
    state.weight = int(text)


class UpperConnection(RequestResponseConnection):
    batch = 16
    commit_every = 4

    def __init__(self, deviceclass: Upper, state: UpperState) -> None:
        self.deviceclass = deviceclass
        self.state = state
        self.handled = 0
        state.connection = self
        deviceclass.open_devices.add(state.name)

    def handle(self, request: memoryview, response: memoryview) -> int:
        out = bytes(request).upper()
        response[: len(out)] = out
        self.state.served += 1
        self.handled += 1
        return len(out)

    def stats(self) -> dict[str, int]:
        return {"handled": self.handled}

    def close(self) -> None:
        self.state.connection = None
        self.deviceclass.open_devices.discard(self.state.name)


class Upper(DeviceClass):
    name = "kit-upper"
    interface_type = "kit-upper"
    versions = frozenset({1})
    queues = request_response_queues(256, 256, max_count=64)
    size_affects: tuple[str, ...] = ("blocks",)
    connection_class: type[UpperConnection] = UpperConnection

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # each broken subclass gets its own table, from its own store_size and affects
        super().__init_subclass__(**kwargs)
        cls.attributes = cls.table()

    @classmethod
    def table(cls) -> tuple[Attribute, ...]:
        return (
            Attribute("size", lambda s: str(s.size), cls.store_size, affects=cls.size_affects),
            Attribute("blocks", lambda s: str(s.size // 512)),
            Attribute("label", lambda s: s.label, _store_label),
            Attribute("opened", lambda s: "0" if s.connection is None else "1"),
            Attribute("served", lambda s: str(s.served)),
        )

    store_size = staticmethod(_store_size)
    interface_attributes = (Attribute("weight", lambda s: str(s.weight), _store_weight),)

    def __init__(self) -> None:
        self.open_devices: set[str] = set()

    def create(self, device_name: str) -> UpperState:
        return UpperState(device_name)

    def attach(self, state: UpperState, interface: Any) -> WeightState:
        return WeightState()

    def open(self, state: UpperState, interface_state: Any, version: int) -> UpperConnection:
        if state.connection is not None:
            raise Busy(f"{state.name} is open by another client")
        return self.connection_class(self, state)


Upper.attributes = Upper.table()


class _FailingConnection(UpperConnection):
    def handle(self, request: memoryview, response: memoryview) -> int:
        if self.handled == 2:
            raise RuntimeError("the third request breaks this loop")
        return super().handle(request, response)


class FailingLoop(Upper):
    name = "kit-failing"
    connection_class = _FailingConnection


class _StuckConnection(UpperConnection):
    def serve(self, queues: Queues) -> None:
        try:
            super().serve(queues)
        except IoqClosed:
            time.sleep(1.0)  # ignores the stop, off the rings
            raise


class StuckLoop(Upper):
    name = "kit-stuck"
    connection_class = _StuckConnection


class _EarlyConnection(UpperConnection):
    def serve(self, queues: Queues) -> None:
        return


class EarlyReturn(Upper):
    name = "kit-early"
    connection_class = _EarlyConnection


class _RaisingCloseConnection(UpperConnection):
    def close(self) -> None:
        super().close()
        raise RuntimeError("close() must not fail, and this one does")


class RaisingClose(Upper):
    name = "kit-raising-close"
    connection_class = _RaisingCloseConnection


class _WrongConnection(UpperConnection):
    def handle(self, request: memoryview, response: memoryview) -> int:
        return min(4, super().handle(request, response))


class WrongResponse(Upper):
    name = "kit-wrong"
    connection_class = _WrongConnection


class _LeakyConnection(UpperConnection):
    def close(self) -> None:
        self.state.connection = None  # but the class still counts the device as open


class LeakyClose(Upper):
    name = "kit-leaky"
    connection_class = _LeakyConnection


class UndeclaredDependency(Upper):
    name = "kit-undeclared"
    size_affects = ()


def _store_size_einval(state: UpperState, text: str) -> None:
    try:
        _store_size(state, text)
    except VbusError as exc:
        raise InvalidValue(str(exc)) from None


class RangeAsEinval(Upper):
    name = "kit-range-einval"
    store_size = staticmethod(_store_size_einval)
