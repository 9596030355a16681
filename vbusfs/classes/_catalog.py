"""Which deviceclasses a daemon offers, and how they come and go in a live model.

A *discovered* class is a built-in or one registered in the `vbusfs.deviceclasses`
entry-point group: a fresh daemon loads every one. Any other class is named by an
import spec, `package.module:ClassName`, and loaded at start (`--load`) or at run time
(`modprobe`).

The rules a running daemon follows, in one place (`Catalog`, which the daemon hands the
connector, and `load_spec`, which the daemon's start uses too):

- a spec whose class has the name of a loaded *discovered* class takes its place, with a
  warning in the log, rather than being refused with EEXIST: the loaded one is the one
  being worked on (a checkout on PYTHONPATH beside an installed copy of itself, whose
  entry point made it discovered); a class of that name loaded by spec is refused (EEXIST);
- a reload re-imports the module of a loaded class from its source and puts the new class
  in its place (EBUSY while devices of it exist);
- a reset gives the model back the classes the daemon started with, as new instances:
  the discovered ones and those of its `--load`; every class modprobe added goes, one
  replaced or unloaded comes back.

This module does what the model cannot (imports); it never decides errnos the model
already decides (a replace refused while devices exist is the model's EBUSY).
"""

from __future__ import annotations

import importlib
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable, Collection, Mapping
from importlib.metadata import entry_points

from vbusfs.model import (
    AlreadyExists,
    Busy,
    DeviceClass,
    InvalidValue,
    NotFound,
    Vbus,
    VbusError,
)

from ._venet_loopback import VenetLoopback
from ._venet_switch import VenetSwitch
from ._venet_tap import VenetTap

log = logging.getLogger("vbusfs.classes")

BUILTIN_CLASSES: tuple[type[DeviceClass], ...] = (VenetTap, VenetLoopback, VenetSwitch)

ENTRY_POINT_GROUP = "vbusfs.deviceclasses"

# builds the instance a model loads; venet-tap's in-process models give it fake taps
Make = Callable[[type[DeviceClass]], DeviceClass]


def _build(cls: type[DeviceClass]) -> DeviceClass:
    return cls()


def _as_loaded_now(cls: type[DeviceClass]) -> type[DeviceClass]:
    """`cls`, or the class of the same name its module defines now (after a reload)."""
    module = sys.modules.get(cls.__module__)
    now = getattr(module, cls.__name__, cls) if module is not None else cls
    return now if isinstance(now, type) and issubclass(now, DeviceClass) else cls


#: entry point name -> why it did not load, as the last `discover()` found
unloadable: dict[str, str] = {}


def discover() -> dict[str, type[DeviceClass]]:
    """Every deviceclass this installation offers, by class name (a built-in wins a
    name an entry point also claims). An entry point that does not load, or names no
    deviceclass, is logged and skipped (`unloadable` says why)."""
    found: dict[str, type[DeviceClass]] = {}
    for builtin in BUILTIN_CLASSES:
        cls = _as_loaded_now(builtin)
        found[cls.name] = cls
    unloadable.clear()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, DeviceClass)):
                raise TypeError("it names no DeviceClass subclass")
        except Exception as exc:  # one broken package must not take the others down
            where = f"{entry.name} = {entry.value}"
            unloadable[entry.name] = f"its entry point ({where}) does not load: {exc!r}"
            log.error("deviceclass %s skipped: %s", entry.name, unloadable[entry.name])
            continue
        found.setdefault(cls.name, cls)
    return found


def import_class(spec: str) -> type[DeviceClass]:
    """Import a deviceclass named as `package.module:ClassName`."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not of the form module:ClassName")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, DeviceClass)):
        raise TypeError(f"{spec} is not a DeviceClass subclass")
    return cls


def _unknown(name: str, offered: Mapping[str, type[DeviceClass]]) -> str:
    """Why modprobe cannot load a bare name that no installed class has."""
    if name in unloadable:
        return unloadable[name]
    return (
        f"no installed deviceclass has that name (installed: {', '.join(sorted(offered))}),"
        " and it is no module:ClassName to import"
    )


def find_class(name: str) -> type[DeviceClass]:
    """A deviceclass by registered name, else by `package.module:ClassName` spec."""
    offered = discover()
    if name in offered:
        return offered[name]
    if ":" not in name:
        raise ValueError(_unknown(name, offered))
    return import_class(name)


def spec_of(cls: type[DeviceClass]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def load_spec(
    vbus: Vbus,
    cls: type[DeviceClass],
    discovered: Mapping[str, type[DeviceClass]],
    make: Make = _build,
) -> str:
    """Load `cls`, named by an import spec, into `vbus`; its name.

    A loaded discovered class of the same name gives way to it (a warning says so; the
    model's EBUSY while devices of that class exist); `cls` itself, loaded already, stays
    (success, as modprobe(8)); another class of that name loaded by a spec is refused
    (AlreadyExists). Nothing changes on a refusal."""
    name = cls.name
    loaded = vbus.classes.get(name)
    if loaded is None:
        vbus.load_class(make(cls))
        return name
    if type(loaded) is cls:  # this very class: loaded already, as modprobe(8) says
        if cls is discovered.get(name):
            log.warning(
                "%s is the discovered deviceclass %s itself, already loaded: it stays",
                spec_of(cls),
                name,
            )
        return name
    if type(loaded) is not discovered.get(name):
        raise AlreadyExists(f"deviceclass {name} is already loaded (from {spec_of(type(loaded))})")
    vbus.replace_class(name, make(cls))
    log.warning(
        "deviceclass %s from %s replaces the discovered one from %s",
        name,
        spec_of(cls),
        spec_of(type(loaded)),
    )
    return name


def reimport(cls: type[DeviceClass]) -> type[DeviceClass]:
    """Import the module of `cls` again (importlib.reload) and return the class of the
    same name it defines now. ImportError, SyntaxError, ... if the module no longer
    imports (the module is then as far as its code ran; `cls` itself is unchanged);
    TypeError if that name is no longer a DeviceClass subclass.

    The module is compiled from its source, never from its bytecode cache: an edit
    within the second of the last compile that keeps the file's size would otherwise
    leave the cache looking fresh and the old code running."""
    module = sys.modules.get(cls.__module__)
    if module is None:
        raise ImportError(f"module {cls.__module__} is not imported", name=cls.__module__)
    prefix, dont_write = sys.pycache_prefix, sys.dont_write_bytecode
    importlib.invalidate_caches()  # a file added since the last import is found
    with tempfile.TemporaryDirectory(prefix="vbusfs-reload-") as nowhere:
        # bytecode is looked for (and not written) under an empty directory
        sys.pycache_prefix, sys.dont_write_bytecode = nowhere, True
        try:
            importlib.reload(module)
        finally:
            sys.pycache_prefix, sys.dont_write_bytecode = prefix, dont_write
    found: object = module
    for part in cls.__qualname__.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, DeviceClass)):
        raise TypeError(f"{spec_of(cls)} is no longer a DeviceClass subclass")
    return found


class Catalog:
    """The deviceclass side of the administrators' ops (modprobe, reload, reset), as the
    daemon hands it to the connector (which knows no deviceclass of its own). `start`
    holds the import specs the daemon loaded at start (`--load`), which a reset keeps."""

    def __init__(
        self,
        start: tuple[str, ...] = (),
        make: Make = _build,
        *,
        changed: Callable[[Collection[str] | None], Awaitable[None]] | None = None,
    ) -> None:
        self.start = start
        self.make = make
        # told after each op that may have changed the model, and which deviceclasses
        # (None: anything; the daemon's FUSE adapter then drops the entries of what went)
        self._changed = changed

    async def changed(self, classes: Collection[str] | None = None) -> None:
        if self._changed is not None:
            await self._changed(classes)

    def find(self, name: str) -> type[DeviceClass]:
        return find_class(name)

    def load(self, vbus: Vbus, name: str) -> str:
        """modprobe: a registered name, or a `module:Class` spec (see `load_spec`).

        Like modprobe(8), loading what is loaded succeeds and changes nothing: a
        registered name that is loaded (by whichever class), a spec of the loaded class."""
        offered = discover()
        if name in offered:
            cls = offered[name]
            if name not in vbus.classes:
                vbus.load_class(self.make(cls))
            return name
        if ":" not in name:
            raise NotFound(f"no deviceclass {name!r}: {_unknown(name, offered)}")
        try:
            cls = import_class(name)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise NotFound(f"no deviceclass {name!r}: {exc}") from None
        return load_spec(vbus, cls, offered, self.make)

    def reload(self, vbus: Vbus, name: str) -> str:
        """Re-import the module of loaded class `name` and put its new class in its
        place; the new class's name. NotFound if not loaded, Busy while devices of it
        exist (checked first: nothing is imported then), NotFound if its module no
        longer imports, InvalidValue if it fails otherwise; the old class stays then."""
        loaded = vbus.classes.get(name)
        if loaded is None:
            raise NotFound(f"deviceclass {name} is not loaded")
        if vbus.class_in_use(name):
            raise Busy(f"deviceclass {name} has {vbus.class_in_use(name)} device(s)")
        old = type(loaded)
        try:
            new = reimport(old)
            instance = self.make(new)
        except ImportError as exc:
            raise NotFound(f"cannot re-import {old.__module__}: {exc}") from None
        except VbusError:
            raise
        except Exception as exc:  # the author's code: a SyntaxError, a NameError, ...
            raise InvalidValue(
                f"cannot re-import {old.__module__}: {type(exc).__name__}: {exc}"
            ) from None
        vbus.replace_class(name, instance)
        log.info("deviceclass %s reloaded from %s", instance.name, spec_of(new))
        return instance.name

    def base(self) -> dict[str, type[DeviceClass]]:
        """The classes the daemon started with, by name, as their modules define them now:
        the discovered ones, and those of `start` in the place of a namesake."""
        offered = discover()
        for spec in self.start:
            cls = import_class(spec)  # imported at start: the module as it is now
            offered[cls.name] = cls
        return offered

    def restore(self, vbus: Vbus) -> list[Exception]:
        """Give `vbus` the classes the daemon started with (`base`), each a new instance,
        so nothing a class keeps in itself (a counter of serial numbers, say) outlives the
        reset; other classes are unloaded. Devices must be gone first. What could not be
        done is returned (and left as it was)."""
        faults: list[Exception] = []
        try:
            offered = self.base()
        except Exception as exc:  # a broken entry point, say: keep what is loaded
            return [exc]
        for name in list(vbus.classes):
            try:
                if name in offered:
                    vbus.replace_class(name, self.make(offered[name]))
                else:
                    vbus.unload_class(name)
            except Exception as exc:
                faults.append(exc)
        for name, cls in offered.items():
            if name not in vbus.classes:
                try:
                    vbus.load_class(self.make(cls))
                except Exception as exc:
                    faults.append(exc)
        return faults

    def extra(self, vbus: Vbus) -> list[str]:
        """The loaded classes the daemon did not start with, and those it started with
        that this model lacks, as texts for an EBUSY; [] when they agree."""
        try:
            offered = self.base()
        except Exception as exc:
            return [f"the daemon's deviceclasses unknown ({type(exc).__name__}: {exc})"]
        found = [
            f"deviceclass {name} ({spec_of(type(loaded))})"
            for name, loaded in vbus.classes.items()
            if type(loaded) is not offered.get(name)
        ]
        found += [f"no deviceclass {name}" for name in offered if name not in vbus.classes]
        return found
