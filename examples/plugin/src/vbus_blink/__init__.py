"""vbus_blink: an example third-party vbus deviceclass, a blinking LED.

`Blink` (class name `blink`, interface type `blink-led`) shows every part of
the deviceclass API of `vbusfs.model`:

- device attributes, validated strictly (a refused value raises
  `InvalidValue`, errno EINVAL, and changes nothing): `color` (0644, one of
  red, green, blue, amber), `period_ms` (0644, 10 to 10000),
  `brightness` (0644, 0 to 255), and the read-only `serial` and `lit` (0444);
- an interface attribute: `label` (0644, 1 to 32 of a-z, 0-9 and `-`);
- the steps: `create` (refused with ENOSPC past `MAX_DEVICES` devices),
  `destroy`, `attach`, `detach`;
- the data-path hook: `open` for interface version 1 gives a
  `BlinkConnection` whose device call 0 toggles the LED and call 1 returns
  the color; one client at a time (EBUSY).

The class keeps a registry of its live devices (`Blink.live`), which must
be empty once every device is gone: the conformance machine checks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vbusfs.model import (
    Attribute,
    Busy,
    DeviceClass,
    DeviceConnection,
    InterfaceInfo,
    InvalidValue,
    NoSpace,
)

COLORS = ("red", "green", "blue", "amber")
PERIOD_MS = (10, 10_000)
BRIGHTNESS = (0, 255)
MAX_DEVICES = 64
VERSION = 1
TOGGLE, COLOR = 0, 1

_DECIMAL = re.compile(r"[0-9]+")
_LABEL = re.compile(r"[a-z0-9-]{1,32}")


@dataclass(eq=False)
class BlinkState:
    """One blink device."""

    name: str
    serial: int
    color: str = "green"
    period_ms: int = 500
    brightness: int = 255
    lit: bool = False
    clients: int = 0
    # interface name -> its label
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class BlinkPort:
    """One interface of a blink device (it sits on one bus at a time)."""

    device: BlinkState
    name: str
    label: str


def _parse_int(text: str, bounds: tuple[int, int], what: str) -> int:
    low, high = bounds
    if not _DECIMAL.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidValue(f"{what} must be a decimal integer from {low} to {high}, not {text!r}")
    return int(text)


def _store_color(state: BlinkState, text: str) -> None:
    if text not in COLORS:
        raise InvalidValue(f"color must be one of {', '.join(COLORS)}, not {text!r}")
    state.color = text


def _store_period(state: BlinkState, text: str) -> None:
    state.period_ms = _parse_int(text, PERIOD_MS, "period_ms")


def _store_brightness(state: BlinkState, text: str) -> None:
    state.brightness = _parse_int(text, BRIGHTNESS, "brightness")


def _store_label(port: BlinkPort, text: str) -> None:
    if not _LABEL.fullmatch(text):
        raise InvalidValue(f"a label is 1 to 32 of a-z, 0-9 and '-', not {text!r}")
    port.label = text
    port.device.labels[port.name] = text


class BlinkConnection(DeviceConnection):
    """One client's open of a blink interface."""

    def __init__(self, state: BlinkState) -> None:
        if state.clients:
            raise Busy("the LED is open by another client")
        state.clients += 1
        self.state = state
        self.toggles = 0
        self.closed = False

    def call(self, function: int, data: bytes) -> bytes:
        if function == TOGGLE:
            self.state.lit = not self.state.lit
            self.toggles += 1
            return b"\x01" if self.state.lit else b"\x00"
        if function == COLOR:
            return self.state.color.encode()
        raise InvalidValue(f"blink has no function {function}")

    def stats(self) -> dict[str, int]:
        return {"toggles": self.toggles}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.state.clients -= 1


class Blink(DeviceClass):
    """A blinking LED: a color, a period, a brightness, and a switch clients toggle."""

    name = "blink"
    interface_type = "blink-led"
    attributes = (
        Attribute("color", lambda s: s.color, _store_color, f"One of {', '.join(COLORS)}."),
        Attribute(
            "period_ms",
            lambda s: str(s.period_ms),
            _store_period,
            "Blink period in milliseconds, 10 to 10000.",
        ),
        Attribute("brightness", lambda s: str(s.brightness), _store_brightness, "0 (off) to 255."),
        Attribute("serial", lambda s: f"blink-{s.serial}", None, "Serial number, fixed."),
        Attribute("lit", lambda s: "1" if s.lit else "0", None, "Whether the LED is on now."),
    )
    interface_attributes = (
        Attribute("label", lambda p: p.label, _store_label, "A name for the LED on this bus."),
    )
    versions = frozenset({VERSION})

    def __init__(self) -> None:
        self.live: dict[str, BlinkState] = {}
        self._next_serial = 1

    def create(self, device_name: str) -> BlinkState:
        if len(self.live) >= MAX_DEVICES:
            raise NoSpace(f"at most {MAX_DEVICES} blink devices")
        state = BlinkState(device_name, self._next_serial)
        self._next_serial += 1
        self.live[device_name] = state
        return state

    def destroy(self, state: BlinkState) -> None:
        self.live.pop(state.name, None)

    def attach(self, state: BlinkState, interface: InterfaceInfo) -> BlinkPort:
        state.labels[interface.name] = "led"
        return BlinkPort(state, interface.name, "led")

    def detach(self, state: BlinkState, interface_state: BlinkPort) -> None:
        state.labels.pop(interface_state.name, None)

    def open(self, state: BlinkState, interface_state: Any, version: int) -> BlinkConnection:
        return BlinkConnection(state)


__all__ = ["COLORS", "MAX_DEVICES", "Blink", "BlinkConnection", "BlinkPort", "BlinkState"]
