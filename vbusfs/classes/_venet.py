"""The built-in venet deviceclasses: venet-tap, venet-loopback, venet-switch.

All three present the `virtual-ethernet` interface type. Their attribute
tables are the contract of SPEC section 4; values are validated strictly and a
refused value changes nothing. Only venet-tap touches the host (a TAP
interface, created when `enabled` goes 0 -> 1 and removed on 1 -> 0 or when
the device is destroyed).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vbusfs.connector.venet import INTERFACE_TYPE as VIRTUAL_ETHERNET
from vbusfs.connector.venet import VERSION
from vbusfs.ioq import Switch
from vbusfs.model import Attribute, Busy, DeviceClass, InterfaceInfo, VbusError

from ._tap import TapInterface
from ._values import format_mac, parse_bool, parse_mac, parse_u32, random_mac
from ._venet_link import LoopbackConnection, SwitchConnection, TapConnection

log = logging.getLogger("vbusfs.venet")

DEFAULT_BURSTTHRESH_US = 20

TapFactory = Callable[[bytes], TapInterface]


@dataclass(eq=False)
class VenetState:
    """Per-device state shared by the venet family."""

    name: str
    host_mac: bytes
    client_mac: bytes
    enabled: bool = False
    # clients holding the device open (the connector keeps this up to date)
    clients: int = 0


@dataclass(eq=False)
class VenetTapState(VenetState):
    burstthresh: int = DEFAULT_BURSTTHRESH_US
    tap: TapInterface | None = None
    open_tap: TapFactory = TapInterface.open


def _store_client_mac(state: Any, text: str) -> None:
    mac = parse_mac(text)
    if state.clients:
        raise Busy("client_mac cannot change while a client has the device open")
    state.client_mac = mac


def _store_loopback_enabled(state: VenetState, text: str) -> None:
    state.enabled = parse_bool(text)


def _store_tap_enabled(state: VenetTapState, text: str) -> None:
    enable = parse_bool(text)
    if enable == state.enabled:
        return
    if enable:
        try:
            state.tap = state.open_tap(state.host_mac)  # refuses with the host's errno
        except VbusError as exc:
            # The writer sees only the errno: the daemon's log says why (a host problem).
            log.warning("device %s: cannot enable: %s", state.name, exc)
            raise
        state.enabled = True
    else:
        _close_tap(state)


def _close_tap(state: VenetTapState) -> None:
    if state.tap is not None:
        state.tap.close()
        state.tap = None
    state.enabled = False


def _store_burstthresh(state: VenetTapState, text: str) -> None:
    state.burstthresh = parse_u32(text)


HOST_MAC = Attribute(
    "host_mac", lambda s: format_mac(s.host_mac), None, "MAC address of the host side."
)
CLIENT_MAC = Attribute(
    "client_mac",
    lambda s: format_mac(s.client_mac),
    _store_client_mac,
    "MAC address the client side uses; EBUSY while a client has the device open.",
)


class _VenetBase(DeviceClass):
    interface_type = VIRTUAL_ETHERNET

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()


class VenetTap(_VenetBase):
    """A virtual Ethernet device whose host side is a Linux TAP interface."""

    name = "venet-tap"
    attributes = (
        CLIENT_MAC,
        Attribute(
            "enabled",
            lambda s: "1" if s.enabled else "0",
            _store_tap_enabled,
            "1 creates the host TAP interface, 0 removes it.",
        ),
        HOST_MAC,
        Attribute(
            "ifname",
            lambda s: s.tap.name if s.tap is not None else "<disabled>",
            None,
            "Name of the host TAP interface, or <disabled>.",
        ),
        Attribute(
            "burstthresh",
            lambda s: str(s.burstthresh),
            _store_burstthresh,
            "Interrupt mitigation threshold in microseconds.",
        ),
    )

    def __init__(
        self, rng: random.Random | None = None, open_tap: TapFactory | None = None
    ) -> None:
        super().__init__(rng)
        self._open_tap = open_tap if open_tap is not None else TapInterface.open

    versions = frozenset({VERSION})

    def open(self, state: VenetTapState, interface_state: Any, version: int) -> TapConnection:
        return TapConnection(state)

    def create(self, device_name: str) -> VenetTapState:
        return VenetTapState(
            device_name,
            host_mac=random_mac(self._rng),
            client_mac=random_mac(self._rng),
            open_tap=self._open_tap,
        )

    def destroy(self, state: VenetTapState) -> None:
        _close_tap(state)


class VenetLoopback(_VenetBase):
    """A virtual Ethernet device that returns every frame to its sender."""

    name = "venet-loopback"
    attributes = (
        CLIENT_MAC,
        Attribute(
            "enabled",
            lambda s: "1" if s.enabled else "0",
            _store_loopback_enabled,
            "Whether the device carries frames.",
        ),
        HOST_MAC,
    )

    versions = frozenset({VERSION})

    def create(self, device_name: str) -> VenetState:
        return VenetState(device_name, random_mac(self._rng), random_mac(self._rng))

    def open(self, state: VenetState, interface_state: Any, version: int) -> LoopbackConnection:
        return LoopbackConnection(state)


@dataclass(eq=False)
class SwitchPort:
    """One interface of a switch: its own client MAC and client count."""

    name: str
    client_mac: bytes
    clients: int = 0


@dataclass(eq=False)
class SwitchState:
    name: str
    ports: dict[str, SwitchPort] = field(default_factory=dict)
    # port name -> the client connected to it
    connections: dict[str, Any] = field(default_factory=dict)
    # port name -> the small index its client has in `switch` (while connected)
    indices: dict[str, int] = field(default_factory=dict)
    # the data path: learned MAC -> port index, and forwarding in C
    switch: Switch = field(default_factory=Switch)


class VenetSwitch(_VenetBase):
    """A virtual Ethernet switch: one device on several buses, frames switched by MAC."""

    name = "venet-switch"
    multi_bus = True
    attributes = (
        Attribute(
            "ports",
            lambda s: " ".join(s.ports),
            None,
            "The connected interfaces, as <bus>.<id>, separated by spaces.",
        ),
    )
    interface_attributes = (CLIENT_MAC,)

    def create(self, device_name: str) -> SwitchState:
        return SwitchState(device_name)

    def attach(self, state: SwitchState, interface: InterfaceInfo) -> SwitchPort:
        port = SwitchPort(interface.name, random_mac(self._rng))
        state.ports[interface.name] = port
        return port

    def detach(self, state: SwitchState, interface_state: SwitchPort) -> None:
        state.ports.pop(interface_state.name, None)
        index = state.indices.get(interface_state.name)
        if index is not None:  # its client is dropped too; nothing goes there meanwhile
            state.switch.forget_port(index)

    versions = frozenset({VERSION})

    def open(self, state: SwitchState, interface_state: SwitchPort, version: int) -> Any:
        return SwitchConnection(state, interface_state)


BUILTIN_CLASSES: tuple[type[DeviceClass], ...] = (VenetTap, VenetLoopback, VenetSwitch)
