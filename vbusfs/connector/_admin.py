"""What root and the daemon's owner may ask of the connector: save, modprobe, reload,
rmmod, reset.

Each takes the model, the request and what administers it (`Administered`: the daemon's
deviceclass `Catalog` and the connector's way to close every open interface), and answers
the reply's fields or raises VbusError with an errno. Who may ask is the server's
business; which deviceclasses exist is the daemon's (the connector knows none).

`reset` takes the live model back to the state its daemon started in, for a test suite
that shares one daemon among its tests (behaviour §8): every open interface is closed as
its client's close would, every interface unlinked, every device and bus removed, every
member let go (in both membership modes), and the deviceclasses made new instances of
those the daemon started with (the discovered ones and its `--load`: what modprobe added
goes). Then it checks: anything left is refused with EBUSY naming it.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Collection
from typing import Any, Protocol

from vbusfs.model import Busy, DeviceClass, NotFound, Vbus, VbusError, dump_config

from ._protocol import Request

log = logging.getLogger("vbusfs.connector")

# a deviceclass by registered name or `module:Class` spec (raises ImportError, ...)
FindClass = Callable[[str], type[DeviceClass]]


class Catalog(Protocol):
    """The deviceclasses a daemon offers and their rules (`vbusfs.classes.Catalog`)."""

    def load(self, vbus: Vbus, name: str) -> str:
        """modprobe `name` (registered name or `module:Class`); the class's name."""

    def reload(self, vbus: Vbus, name: str) -> str:
        """Re-import loaded class `name` and put the new class in its place."""

    def restore(self, vbus: Vbus) -> list[Exception]:
        """Make the loaded classes those a fresh daemon would load; what failed."""

    def extra(self, vbus: Vbus) -> list[str]:
        """How the loaded classes differ from a fresh daemon's, one text each."""

    async def changed(self, classes: Collection[str] | None = None) -> None:
        """An op may have changed the model behind the trees' back (the daemon lets its
        FUSE adapter drop the entries of what was removed, the kernel taking them before
        the op replies): `classes` the deviceclasses it loaded, replaced or unloaded when
        that is all it can have changed (modprobe, reload, rmmod), None for anything."""


class Administered(Protocol):
    """What the administrators' ops reach besides the model (the connector is one)."""

    catalog: Catalog

    def release_all(self) -> int:
        """Close every interface any client has open, as a drop does; how many."""


class FoundOnly:
    """A `Catalog` over a bare lookup function: modprobe only (reload and reset refused
    with EOPNOTSUPP), for a connector given no daemon's catalog."""

    def __init__(self, find_class: FindClass) -> None:
        self.find_class = find_class

    def load(self, vbus: Vbus, name: str) -> str:
        try:
            cls = self.find_class(name)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise NotFound(f"no deviceclass {name!r}: {exc}") from None
        if type(vbus.classes.get(cls.name)) is not cls:  # loaded already: success
            vbus.load_class(cls())
        return cls.name

    def reload(self, vbus: Vbus, name: str) -> str:
        raise VbusError("this connector cannot reload deviceclasses", errno=errno.EOPNOTSUPP)

    def restore(self, vbus: Vbus) -> list[Exception]:
        raise VbusError("this connector cannot reset deviceclasses", errno=errno.EOPNOTSUPP)

    def extra(self, vbus: Vbus) -> list[str]:
        return []

    async def changed(self, classes: Collection[str] | None = None) -> None:
        pass


def as_catalog(given: Catalog | FindClass) -> Catalog:
    """A daemon's catalog as it is; a bare lookup function wrapped in `FoundOnly`."""
    if callable(given) and not hasattr(given, "restore"):
        return FoundOnly(given)
    return given  # type: ignore[return-value]


def _save(vbus: Vbus, request: Request, admin: Administered) -> dict[str, Any]:
    return {"config": dump_config(vbus)}


def _modprobe(vbus: Vbus, request: Request, admin: Administered) -> dict[str, Any]:
    name = request.text("deviceclass", "modprobe needs a class name")
    return {"deviceclass": admin.catalog.load(vbus, name)}


def _reload(vbus: Vbus, request: Request, admin: Administered) -> dict[str, Any]:
    name = request.text("deviceclass", "reload needs a class name")
    return {"deviceclass": admin.catalog.reload(vbus, name)}


def _rmmod(vbus: Vbus, request: Request, admin: Administered) -> dict[str, Any]:
    name = request.text("deviceclass", "rmmod needs a class name")
    vbus.unload_class(name)
    return {}


def _reset(vbus: Vbus, request: Request, admin: Administered) -> dict[str, Any]:
    closed = admin.release_all()  # first: no device runs while its model goes
    faults = vbus.reset()
    faults += admin.catalog.restore(vbus)
    for fault in faults:
        if isinstance(fault, VbusError):
            log.warning("reset: %s", fault)
        else:  # a deviceclass's drop step that raised, say: a bug, with its traceback
            log.error("reset: internal error", exc_info=fault)
    left = vbus.leftovers() + admin.catalog.extra(vbus)
    if left:
        raise Busy(f"the reset left {', '.join(left)}")
    log.info("reset to the empty state (%d open interface(s) closed)", closed)
    return {"closed": closed}


# the ops that change deviceclasses alone (the model refuses them for a class with devices)
CLASS_OPS = frozenset({"modprobe", "reload", "rmmod"})


async def administer(op: str, vbus: Vbus, request: Request, admin: Administered) -> dict[str, Any]:
    """Answer administrators' op `op` (a key of ADMIN_OPS); then, refused or not (a
    refused reset may have removed much), the catalog hears the model may have changed:
    after a class op, in the deviceclasses it named (the request's, the reply's: a spec
    loads, a reload may rename) and nowhere else; after a reset, anywhere."""
    reply: dict[str, Any] = {}
    try:
        reply = ADMIN_OPS[op](vbus, request, admin)
        return reply
    finally:
        if op != "save":
            named = (request.fields.get("deviceclass"), reply.get("deviceclass"))
            names = {v for v in named if isinstance(v, str)} if op in CLASS_OPS else None
            await admin.catalog.changed(names)


ADMIN_OPS = {
    "save": _save,
    "modprobe": _modprobe,
    "reload": _reload,
    "rmmod": _rmmod,
    "reset": _reset,
}
