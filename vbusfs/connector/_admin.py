"""What the daemon's administrators may ask through the connector: save, modprobe, rmmod.

Only root and the daemon's owner reach these (the server checks, by the kernel's peer
credentials); each takes the model, the request and the daemon's class lookup, and
answers the reply's fields or raises a `VbusError` with its errno.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from vbusfs.model import DeviceClass, Vbus, VbusError, dump_config

from ._protocol import Request

# a deviceclass by registered name or `module:Class` spec (raises ImportError, ...)
FindClass = Callable[[str], type[DeviceClass]]


def _save(vbus: Vbus, request: Request, find_class: FindClass) -> dict[str, Any]:
    return {"config": dump_config(vbus)}


def _modprobe(vbus: Vbus, request: Request, find_class: FindClass) -> dict[str, Any]:
    name = request.text("deviceclass", "modprobe needs a class name")
    try:
        cls = find_class(name)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise VbusError(f"no deviceclass {name!r}: {exc}", errno=errno.ENOENT) from None
    vbus.load_class(cls())
    return {"deviceclass": cls.name}


def _rmmod(vbus: Vbus, request: Request, find_class: FindClass) -> dict[str, Any]:
    name = request.text("deviceclass", "rmmod needs a class name")
    vbus.unload_class(name)
    return {}


ADMIN_OPS = {"save": _save, "modprobe": _modprobe, "rmmod": _rmmod}
