"""A deviceclass whose values change by themselves, from a thread: it says so with
`DeviceClass.notify` (the sysfs_notify of vbusfs).

A store of `1` in `tick` of any ticker device starts a thread that adds one to the
`count` of every ticker device, notifying each. Another device's `count` thus changes
with no store to it: only the notice can wake its pollers.
"""

from __future__ import annotations

import threading

from vbusfs.model import Attribute, DeviceClass, InvalidValue


class _State:
    def __init__(self, deviceclass: Ticker) -> None:
        self.deviceclass = deviceclass
        self.count = 0


def _store_tick(state: _State, value: str) -> None:
    if value != "1":
        raise InvalidValue("write 1")
    threading.Thread(target=state.deviceclass.tick_all, name="ticker").start()


class Ticker(DeviceClass):
    name = "ticker"
    interface_type = "ticker"
    attributes = (
        Attribute("count", lambda state: str(state.count)),
        Attribute("tick", lambda state: "0", _store_tick),
    )

    def __init__(self) -> None:
        self.states: list[_State] = []

    def tick_all(self) -> None:
        for state in list(self.states):
            state.count += 1
            self.notify(state, "count")

    def create(self, device_name: str) -> _State:
        state = _State(self)
        self.states.append(state)
        return state

    def destroy(self, state: _State) -> None:
        self.states.remove(state)
