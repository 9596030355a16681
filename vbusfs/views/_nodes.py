"""The config and sys trees as pure functions of the model.

A node is addressed by its path inside the mount, a tuple of names
(`("sys", "vbus", "version")`). `node()` answers what is at a path and
`children()` lists a directory; both cost O(depth) dict lookups, so the size
of the model never matters, and nothing is cached: the trees cannot drift
from the model or from each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from vbusfs.model import (
    BUS_ENTRIES,
    CLASS_ENTRY,
    DEVICE_ENTRIES,
    DEVICE_ENTRY,
    INTERFACE_ENTRIES,
    INTERFACES_ENTRY,
    NO_BUS,
    PERMS_ENTRY,
    TYPE_ENTRY,
    AccessDenied,
    Attribute,
    AttributeOwner,
    Bus,
    Device,
    IdentityView,
    Interface,
    NoDevice,
    NoSuchProcess,
    PidView,
    ProcessInfo,
    ProcessPin,
    Vbus,
    attribute_mode,
)

Path = tuple[str, ...]

CONFIG_VBUS: Path = ("config", "vbus")
CONFIG_DEVICES: Path = ("config", "vbus", "devices")
CONFIG_INSTANCES: Path = ("config", "vbus", "instances")
SYS_VBUS: Path = ("sys", "vbus")
SYS_VERSION = "1"
DIR_MODE = 0o755
SYMLINK_MODE = 0o777


@dataclass(frozen=True, slots=True)
class DirNode:
    mode: int = DIR_MODE
    uid: int | None = None  # None: the daemon's own


@dataclass(frozen=True, slots=True)
class SymlinkNode:
    """A symlink of the trees: a bus's link (config) or a sys symlink; `target` is its text."""

    target: str
    mode: int = SYMLINK_MODE
    uid: int | None = None


@dataclass(frozen=True, slots=True)
class FileNode:
    """An attribute file: `show` renders the value (no newline), `store` stores one."""

    show: Callable[[], str]
    store: Callable[[str], None] | None = None
    uid: int | None = None
    gid: int | None = None  # None: the daemon's own
    # A file whose handles belong to something (proc/<pid>/vbus: one process): opening
    # calls this for the handle's own node and what to call when the handle is released.
    opened: Callable[[], tuple[FileNode, Callable[[], None]]] | None = None
    # what the value comes from, (owner, name): the model object (a device, interface or
    # bus; `process_owner(pid)` for a membership file) and the attribute. The FUSE adapter
    # wakes the file's pollers when a change of the model names that owner.
    source: tuple[object, str] | None = None

    @property
    def mode(self) -> int:
        return attribute_mode(self.writable)

    @property
    def writable(self) -> bool:
        return self.store is not None


Node = DirNode | SymlinkNode | FileNode
DIR = DirNode()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, where the answer depends on it: proc/ and members/ (behaviour §6).

    `uid` is the caller's user, `pids` how its own pid namespace numbers processes
    (`pids.own` is the caller itself). No caller: the daemon itself asks.
    """

    uid: int = 0
    pids: PidView = field(default_factory=lambda: IdentityView(None))


def _view(caller: Caller | None) -> PidView:
    return caller.pids if caller is not None else IdentityView(None)


# The skeleton of the trees: these paths exist, with the same attributes,
# whatever the model holds, so their kernel cache entries never go stale.
FIXED_PATHS: frozenset[Path] = frozenset(
    {
        (),
        ("config",),
        CONFIG_VBUS,
        CONFIG_DEVICES,
        CONFIG_INSTANCES,
        ("sys",),
        SYS_VBUS,
        (*SYS_VBUS, "deviceclass"),
        (*SYS_VBUS, "devices"),
        (*SYS_VBUS, "instances"),
        (*SYS_VBUS, "version"),
    }
)


def _constant(value: str) -> FileNode:
    return FileNode(lambda: value)


def process_owner(pid: int) -> tuple[str, int]:
    """The owner part of a membership file's `source`: process `pid` (the daemon's)."""
    return ("process", pid)


def is_process_owner(owner: object) -> bool:
    return isinstance(owner, tuple) and owner[:1] == ("process",)


def _check_alive(owner: AttributeOwner | Bus) -> None:
    # a handle outlives its object: it never reaches a later namesake (behaviour §4)
    if not owner.alive:
        raise NoDevice(f"{owner!r} was removed")


def _attribute_file(vbus: Vbus, owner: AttributeOwner, attr: Attribute) -> FileNode:
    """The file of attribute `attr` of a device or an interface."""

    def store(value: str) -> None:
        vbus.store_attribute(owner, attr.name, value)

    return FileNode(
        lambda: vbus.show_attribute(owner, attr.name),
        store if attr.writable else None,
        source=(owner, attr.name),
    )


def _attribute_node(vbus: Vbus, owner: AttributeOwner, name: str) -> FileNode | None:
    attr = vbus.attributes(owner).get(name)
    return _attribute_file(vbus, owner, attr) if attr is not None else None


def _type_file(vbus: Vbus, device: Device) -> FileNode:
    def show() -> str:
        _check_alive(device)
        return device.deviceclass.name if device.deviceclass is not None else ""

    def store(value: str) -> None:
        _check_alive(device)  # never the type of a later device of the same name
        vbus.set_device_type(device.name, value)

    return FileNode(show, store, source=(device, TYPE_ENTRY))


def _perms_file(vbus: Vbus, bus: Bus, name: str, caller: Caller | None) -> FileNode:
    """A file of a bus's perms/, owned by the bus's owner and group.

    The kernel lets only root and the owner open it for writing (mode 0644); each store
    checks again that the opener is root or the bus's owner *now* (EPERM otherwise), so
    a handle opened before the bus was given away stores nothing.
    """
    opener = caller.uid if caller is not None else 0

    def store(value: str) -> None:
        vbus.store_perm(bus, name, value, writer=opener)

    return FileNode(
        lambda: vbus.show_perm(bus, name),
        store,
        uid=bus.perms.owner,
        gid=bus.perms.group,
        source=(bus, name),
    )


def config_link_target(device_name: str) -> str:
    """The canonical readlink text of a bus's link, whatever the user typed."""
    return f"../../../vbus/devices/{device_name}"


def _is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes Arabic-Indic or superscript digits."""
    return text.isascii() and text.isdigit()


def _bus_interface(vbus: Vbus, bus_name: str, id_text: str) -> Interface | None:
    bus = vbus.buses.get(bus_name)
    if bus is None or not _is_decimal(id_text) or (id_text != "0" and id_text[0] == "0"):
        return None
    return bus.interfaces.get(int(id_text))


def node(vbus: Vbus, path: Path, caller: Caller | None = None) -> Node | None:
    """What is at `path`, or None. `caller` is who asks (proc/ and members/ depend on it)."""
    if path[:1] == ("proc",):
        return _proc_node(vbus, path, caller)
    match path:
        case () | ("config",) | ("config", "vbus") | ("sys",) | ("sys", "vbus"):
            return DIR
        case ("config", "vbus", "devices" | "instances"):
            return DIR
        case ("config", "vbus", "devices", d):
            return DIR if d in vbus.devices else None
        case ("config", "vbus", "devices", d, name) if name == TYPE_ENTRY:
            device = vbus.devices.get(d)
            return _type_file(vbus, device) if device is not None else None
        case ("config", "vbus", "instances", b):
            return DIR if b in vbus.buses else None
        case ("config", "vbus", "instances", b, name):
            bus = vbus.buses.get(b)
            if bus is None:
                return None
            if name == PERMS_ENTRY:
                return DirNode(uid=bus.perms.owner)
            interface = bus.links.get(name)
            return SymlinkNode(config_link_target(interface.device.name)) if interface else None
        case ("config", "vbus", "instances", b, perms, name) if perms == PERMS_ENTRY:
            bus = vbus.buses.get(b)
            if bus is None or name not in vbus.perms_attributes():
                return None
            return _perms_file(vbus, bus, name, caller)
        case ("sys", "vbus", "version"):
            return _constant(SYS_VERSION)
        case ("sys", "vbus", "deviceclass" | "devices" | "instances"):
            return DIR
        case ("sys", "vbus", "deviceclass", c):
            return DIR if c in vbus.classes else None
        case ("sys", "vbus", "devices", d):
            return DIR if d in vbus.devices else None
        case ("sys", "vbus", "devices", d, name) if name == INTERFACES_ENTRY:
            return DIR if d in vbus.devices else None
        case ("sys", "vbus", "devices", d, name, i) if name == INTERFACES_ENTRY:
            device = vbus.devices.get(d)
            interface = device.interfaces.get(i) if device is not None else None
            if interface is None:
                return None
            return SymlinkNode(f"../../../instances/{interface.bus.name}/devices/{interface.id}")
        case ("sys", "vbus", "devices", d, name) if name == CLASS_ENTRY:
            device = vbus.devices.get(d)
            if device is None or device.deviceclass is None:
                return None
            return SymlinkNode(f"../../deviceclass/{device.deviceclass.name}")
        case ("sys", "vbus", "devices", d, name):
            device = vbus.devices.get(d)
            return _attribute_node(vbus, device, name) if device is not None else None
        case ("sys", "vbus", "instances", b):
            return DIR if b in vbus.buses else None
        case ("sys", "vbus", "instances", b, "devices" | "members"):
            return DIR if b in vbus.buses else None
        case ("sys", "vbus", "instances", b, "devices", i):
            return DIR if _bus_interface(vbus, b, i) is not None else None
        case ("sys", "vbus", "instances", b, "members", pid):
            return DIR if b in vbus.buses and _member(vbus, pid, caller) == b else None
        case ("sys", "vbus", "instances", b, "devices", i, name):
            interface = _bus_interface(vbus, b, i)
            if interface is None:
                return None
            if name == DEVICE_ENTRY:
                return SymlinkNode(f"../../../../devices/{interface.device.name}")
            if name == TYPE_ENTRY:
                return _interface_type(interface)
            return _attribute_node(vbus, interface, name)
    return None


def _interface_type(interface: Interface) -> FileNode:
    def show() -> str:
        _check_alive(interface)
        return interface.type

    return FileNode(show, source=(interface, TYPE_ENTRY))


def dependents(vbus: Vbus, path: Path) -> list[Path]:
    """`path` and the other paths that exist only because of the object at `path`, in
    either tree: what goes when rmdir or unlink removes `path`. Ask before removing.

    The FUSE adapter tells the kernel about them: it learns of `path` from the rmdir or
    unlink itself, never of the rest (a device's sys directory, a link's interface).
    """
    match path:
        case ("config", "vbus", "devices", d):
            return [path, (*SYS_VBUS, "devices", d)]
        case ("config", "vbus", "instances", b):
            return [path, (*SYS_VBUS, "instances", b)]
        case ("config", "vbus", "instances", b, link):
            bus = vbus.buses.get(b)
            interface = bus.links.get(link) if bus is not None else None
            if interface is None:
                return [path]
            return [
                path,
                (*SYS_VBUS, "instances", b, "devices", str(interface.id)),
                (*SYS_VBUS, "devices", interface.device.name, INTERFACES_ENTRY, interface.name),
            ]
    return [path]


def _pid(text: str) -> int | None:
    """A process id as procfs spells it, or None."""
    if not _is_decimal(text) or (text[0] == "0") or len(text) > 10:
        return None
    return int(text)


def _member(vbus: Vbus, text: str, caller: Caller | None) -> str | None:
    """The bus of the process the caller calls `text`, if it is one."""
    pid = _pid(text)
    if pid is None or vbus.membership is None:
        return None
    daemon_pid = _view(caller).inward(pid)
    if daemon_pid is None:
        return None
    try:
        return vbus.bus_of(daemon_pid)
    except NoSuchProcess:
        return None


def _proc_node(vbus: Vbus, path: Path, caller: Caller | None) -> Node | None:
    if vbus.membership is None:
        return None
    if path == ("proc",):
        return DIR
    view = _view(caller)
    if path == ("proc", "self"):
        return SymlinkNode(str(view.own)) if view.own is not None else None
    pid = _pid(path[1])
    if pid is None or len(path) > 3 or (len(path) == 3 and path[2] != "vbus"):
        return None
    daemon_pid = view.inward(pid)
    if daemon_pid is None:
        return None  # no such pid in the caller's namespace: ENOENT, as /proc says
    try:
        info = vbus.process(daemon_pid)
    except NoSuchProcess:
        return None
    if len(path) == 2:
        return DirNode(uid=info.uid)
    return _membership_file(vbus, info, caller)


def _membership_file(vbus: Vbus, info: ProcessInfo, caller: Caller | None) -> FileNode:
    """proc/<pid>/vbus of process `info`: bound to that process, not to its number.

    A handle outlives neither the process (ESRCH once it has exited, whoever gets its
    pid) nor the opener's right: each store checks again that the opener is root or
    the process's owner (the kernel checked the open; the process may have changed its
    user since, through a set-user-id program say).
    """
    opener = caller.uid if caller is not None else 0

    def node(pin: ProcessPin | None) -> FileNode:
        def same() -> ProcessInfo:
            try:
                now = vbus.process(info.pid)
            except NoSuchProcess:
                now = None
            # a pid recycled within the same clock tick has the same start time: only
            # the pin (a pidfd) tells that process from the one the handle was opened for
            gone = pin is not None and not pin.alive()
            if gone or now is None or now.start != info.start:
                raise NoSuchProcess(f"process {info.pid} has exited")
            return now

        def show() -> str:
            bus = vbus.membership_of(same().pid)
            return bus if bus is not None else NO_BUS

        def store(value: str) -> None:
            now = same()
            if opener != 0 and now.uid != opener:
                raise AccessDenied(f"process {info.pid} is no longer user {opener}'s")
            vbus.change_membership(now, value)

        def opened() -> tuple[FileNode, Callable[[], None]]:
            held = vbus.pin_process(info)
            return node(held), held.close

        return FileNode(
            show,
            store,
            uid=info.uid,
            opened=opened if pin is None else None,
            source=(process_owner(info.pid), "vbus"),
        )

    return node(None)


def children(vbus: Vbus, path: Path, caller: Caller | None = None) -> Sequence[str]:
    """The entry names of the directory at `path`, in a stable order (empty if none)."""
    match path:
        case ():
            return ("config", "sys", "proc") if vbus.membership is not None else ("config", "sys")
        case ("proc",):
            if vbus.membership is None:
                return ()
            return ["self", *_seen(vbus.membership.members(), caller)]
        case ("proc", _):
            return ("vbus",)
        case ("config",) | ("sys",):
            return ("vbus",)
        case ("config", "vbus"):
            return ("devices", "instances")
        case ("config", "vbus", "devices"):
            return list(vbus.devices)
        case ("config", "vbus", "devices", d):
            return (TYPE_ENTRY,) if d in vbus.devices else ()
        case ("config", "vbus", "instances"):
            return list(vbus.buses)
        case ("config", "vbus", "instances", b):
            bus = vbus.buses.get(b)
            return [*BUS_ENTRIES, *bus.links] if bus is not None else ()
        case ("config", "vbus", "instances", b, perms) if perms == PERMS_ENTRY:
            return list(vbus.perms_attributes()) if b in vbus.buses else ()
        case ("sys", "vbus"):
            return ("deviceclass", "devices", "instances", "version")
        case ("sys", "vbus", "deviceclass"):
            return list(vbus.classes)
        case ("sys", "vbus", "devices"):
            return list(vbus.devices)
        case ("sys", "vbus", "devices", d):
            device = vbus.devices.get(d)
            if device is None:
                return ()
            if device.deviceclass is None:
                return (INTERFACES_ENTRY,)
            return (*DEVICE_ENTRIES, *vbus.attributes(device))
        case ("sys", "vbus", "devices", d, name) if name == INTERFACES_ENTRY:
            device = vbus.devices.get(d)
            return list(device.interfaces) if device is not None else ()
        case ("sys", "vbus", "instances"):
            return list(vbus.buses)
        case ("sys", "vbus", "instances", b):
            return ("devices", "members") if b in vbus.buses else ()
        case ("sys", "vbus", "instances", b, "devices"):
            bus = vbus.buses.get(b)
            return [str(i) for i in bus.interfaces] if bus is not None else ()
        case ("sys", "vbus", "instances", b, "members"):
            if b not in vbus.buses or vbus.membership is None:
                return ()
            return _seen(vbus.membership.members_of(b), caller)
        case ("sys", "vbus", "instances", b, "devices", i):
            interface = _bus_interface(vbus, b, i)
            if interface is None:
                return ()
            return (*INTERFACE_ENTRIES, *vbus.attributes(interface))
    return ()


def _seen(pids: Iterable[int], caller: Caller | None) -> list[str]:
    """Daemon-namespace pids as the caller's namespace numbers them (hidden: left out)."""
    view = _view(caller)
    seen = (view.outward(pid) for pid in pids)
    return [str(pid) for pid in sorted(pid for pid in seen if pid is not None)]
