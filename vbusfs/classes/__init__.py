"""Built-in deviceclasses and the discovery of third-party ones.

One module per class holds its type, attribute table and data path together
(``_venet_tap``, ``_venet_loopback``, ``_venet_switch``), over the pieces the
venet family shares (``_venet_common``: values, the MAC attributes, the client
connection); ``_tap`` makes the host's TAP interfaces.

Third-party classes register in the `vbusfs.deviceclasses` entry-point group;
each entry names a `DeviceClass` subclass that can be built with no arguments.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from vbusfs.model import DeviceClass, Inferred, MembershipBackend, ProcessTable, Vbus

from ._tap import TapInterface
from ._venet_common import VIRTUAL_ETHERNET, VenetState
from ._venet_loopback import VenetLoopback
from ._venet_switch import SwitchPort, SwitchState, VenetSwitch
from ._venet_tap import HostTap, TapFactory, VenetTap, VenetTapState

BUILTIN_CLASSES: tuple[type[DeviceClass], ...] = (VenetTap, VenetLoopback, VenetSwitch)

ENTRY_POINT_GROUP = "vbusfs.deviceclasses"


def discover() -> dict[str, type[DeviceClass]]:
    """Every deviceclass this installation offers, by class name."""
    found: dict[str, type[DeviceClass]] = {cls.name: cls for cls in BUILTIN_CLASSES}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, DeviceClass)):
            raise TypeError(f"entry point {entry.name} does not name a DeviceClass subclass")
        found.setdefault(cls.name, cls)
    return found


def import_class(spec: str) -> type[DeviceClass]:
    """Import a deviceclass named as `package.module:ClassName`."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not of the form package.module:ClassName")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, DeviceClass)):
        raise TypeError(f"{spec} is not a DeviceClass subclass")
    return cls


def find_class(name: str) -> type[DeviceClass]:
    """A deviceclass by registered name, else by `package.module:ClassName` spec."""
    offered = discover()
    return offered[name] if name in offered else import_class(name)


def default_model(
    extra: tuple[str, ...] = (),
    processes: ProcessTable | None = None,
    *,
    membership: MembershipBackend | None = None,
) -> Vbus:
    """A model with every discovered deviceclass loaded, plus `extra` import specs.

    With a membership backend, or a process table to infer membership from, the model
    also keeps bus membership.
    """
    if membership is None and processes is not None:
        membership = Inferred(processes)
    vbus = Vbus(membership=membership)
    for cls in discover().values():
        vbus.load_class(cls())
    for spec in extra:
        vbus.load_class(import_class(spec)())
    return vbus


__all__ = [
    "BUILTIN_CLASSES",
    "ENTRY_POINT_GROUP",
    "VIRTUAL_ETHERNET",
    "HostTap",
    "SwitchPort",
    "SwitchState",
    "TapFactory",
    "TapInterface",
    "VenetLoopback",
    "VenetState",
    "VenetSwitch",
    "VenetTap",
    "VenetTapState",
    "default_model",
    "discover",
    "find_class",
    "import_class",
]
