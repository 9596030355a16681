"""Built-in deviceclasses and the discovery of third-party ones.

One module per class holds its type, attribute table and data path together
(``_venet_tap``, ``_venet_loopback``, ``_venet_switch``), over the pieces the
venet family shares (``_venet_common``: values, the MAC attributes, the client
connection); ``_tap`` makes the host's TAP interfaces.

Third-party classes register in the `vbusfs.deviceclasses` entry-point group;
each entry names a `DeviceClass` subclass that can be built with no arguments.
``_catalog`` finds them, and holds the rules by which classes come and go in a live
model (`Catalog`: modprobe, reload, and a reset's return to the discovered classes).
"""

from __future__ import annotations

from vbusfs.model import Inferred, MembershipBackend, ProcessTable, Vbus

from ._catalog import (
    BUILTIN_CLASSES,
    ENTRY_POINT_GROUP,
    Catalog,
    discover,
    find_class,
    import_class,
    load_spec,
    reimport,
)
from ._tap import TapInterface
from ._venet_common import VIRTUAL_ETHERNET, VenetState
from ._venet_loopback import VenetLoopback
from ._venet_switch import SwitchPort, SwitchState, VenetSwitch
from ._venet_tap import HostTap, TapFactory, VenetTap, VenetTapState


def default_model(
    extra: tuple[str, ...] = (),
    processes: ProcessTable | None = None,
    *,
    membership: MembershipBackend | None = None,
) -> Vbus:
    """A model with every discovered deviceclass loaded, plus `extra` import specs (one
    that has a discovered class's name takes its place, with a warning in the log).

    With a membership backend, or a process table to infer membership from, the model
    also keeps bus membership.
    """
    if membership is None and processes is not None:
        membership = Inferred(processes)
    vbus = Vbus(membership=membership)
    offered = discover()
    for cls in offered.values():
        vbus.load_class(cls())
    for spec in extra:
        load_spec(vbus, import_class(spec), offered)  # a discovered namesake gives way
    return vbus


__all__ = [
    "BUILTIN_CLASSES",
    "ENTRY_POINT_GROUP",
    "VIRTUAL_ETHERNET",
    "Catalog",
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
    "load_spec",
    "reimport",
]
