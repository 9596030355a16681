"""The root of the model: the deviceclasses, devices and buses of one vbus.

Every operation either succeeds completely or raises a `VbusError` and leaves
the model exactly as it was: it checks everything, then mutates. Operations
cost O(1) in the number of objects (dict lookups and counters only). This
module does no I/O; deviceclass plugins may, inside their own steps.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from . import _events as events
from ._attributes import Attribute, table_index
from ._deviceclass import DeviceClass, DeviceConnection, InterfaceInfo, bind_notices
from ._errors import (
    AccessDenied,
    AlreadyExists,
    Busy,
    InvalidValue,
    NoDevice,
    NoSpace,
    NoSuchProcess,
    NotEmpty,
    NotFound,
    NotPermitted,
)
from ._events import Event, Listener
from ._membership import MembershipBackend, ProcessInfo, ProcessPin, process_of
from ._names import BUS_ENTRIES, LEAVE_TOKEN, check_bus_name, check_name
from ._objects import AttributeOwner, Bus, Device, Interface, interface_name
from ._perms import PERMS_INDEX, ROOT, BusPerms, perms_text

# The two kinds of attribute owner; a deviceclass declares a table for each.
OWNER_TYPES: tuple[type[AttributeOwner], ...] = (Device, Interface)

# Interface ids are u32 on the wire of the original; one bus can hand out this many.
MAX_INTERFACE_IDS = 1 << 32


class Vbus:
    """The whole model: three namespaces (classes, devices, buses) and their links."""

    def __init__(
        self,
        *,
        max_interface_ids: int = MAX_INTERFACE_IDS,
        membership: MembershipBackend | None = None,
    ) -> None:
        self.classes: dict[str, DeviceClass] = {}
        self.devices: dict[str, Device] = {}
        self.buses: dict[str, Bus] = {}
        self._max_interface_ids = max_interface_ids
        # typed devices per class name, so unloading a class costs O(1)
        self._typed: dict[str, int] = {}
        # None: this model has no processes (an in-process model without /proc)
        self.membership = membership
        self._listeners: list[Listener] = []
        # (class name, owner noun) -> attribute name -> attribute
        self._attr_index: dict[tuple[str, str], dict[str, Attribute]] = {}
        # every change the trees show, for pollers and monitors (model/_events.py)
        self.changes = events.Changes()
        self._states = events.StateIndex()
        self._notices = events.Notices(self.changes, self._noticed)

    # -- deviceclasses -------------------------------------------------

    def load_class(self, deviceclass: DeviceClass) -> None:
        name = deviceclass.name
        check_name(name, "deviceclass")
        if not deviceclass.interface_type:
            raise InvalidValue(f"deviceclass {name} declares no interface type")
        if name in self.classes:
            raise AlreadyExists(f"deviceclass {name} is already loaded")
        indexes = {
            owner.noun: table_index(owner.declared_attributes(deviceclass)) for owner in OWNER_TYPES
        }
        for index in indexes.values():
            for attribute in index:  # each is an entry name in the sys tree
                check_name(attribute, f"deviceclass {name}: attribute")
        clash = set().union(*(indexes[owner.noun].keys() & owner.entries for owner in OWNER_TYPES))
        if clash:
            raise InvalidValue(f"deviceclass {name} uses reserved attribute names {sorted(clash)}")
        self.classes[name] = deviceclass
        self._typed[name] = 0
        for noun, index in indexes.items():
            self._attr_index[name, noun] = index
        bind_notices(deviceclass, self._notices, True)
        self.changes.publish(events.ClassLoaded(name))

    def unload_class(self, name: str) -> DeviceClass:
        deviceclass = self.classes.get(name)
        if deviceclass is None:
            raise NotFound(f"deviceclass {name} is not loaded")
        if self._typed[name]:
            raise Busy(f"deviceclass {name} has {self._typed[name]} device(s)")
        del self.classes[name], self._typed[name]
        for owner in OWNER_TYPES:
            del self._attr_index[name, owner.noun]
        bind_notices(deviceclass, self._notices, False)
        self.changes.publish(events.ClassUnloaded(name))
        return deviceclass

    def replace_class(self, name: str, deviceclass: DeviceClass) -> DeviceClass:
        """Put `deviceclass` where the loaded class `name` is (a reload, an override);
        returns the class it replaced. NotFound if `name` is not loaded, Busy while devices
        of it exist, AlreadyExists if the new class's name is another loaded class's; the
        new class is checked as `load_class` checks it. On any refusal nothing changed."""
        if name not in self.classes:
            raise NotFound(f"deviceclass {name} is not loaded")
        if deviceclass.name != name and deviceclass.name in self.classes:
            raise AlreadyExists(f"deviceclass {deviceclass.name} is already loaded")
        old = self.unload_class(name)  # Busy: nothing changed
        try:
            self.load_class(deviceclass)
        except BaseException:
            self.load_class(old)  # it was loaded a moment ago: it loads again
            raise
        return old

    def class_in_use(self, name: str) -> int:
        return self._typed.get(name, 0)

    # -- devices -------------------------------------------------------

    def create_device(self, name: str) -> Device:
        check_name(name, "device")
        if name in self.devices:
            raise AlreadyExists(f"device {name} exists")
        device = Device(name)
        self.devices[name] = device
        self.changes.publish(events.DeviceCreated(device))
        return device

    def device(self, name: str) -> Device:
        device = self.devices.get(name)
        if device is None:
            raise NotFound(f"no device {name}")
        return device

    def set_device_type(self, name: str, class_name: str) -> None:
        device = self.device(name)
        deviceclass = self.classes.get(class_name)
        if deviceclass is None:
            raise NotFound(f"no deviceclass {class_name!r} is loaded")
        if device.deviceclass is not None:
            raise InvalidValue(f"device {name} is already of type {device.deviceclass.name}")
        state = deviceclass.create(name)  # may refuse; nothing changed yet
        device.deviceclass = deviceclass
        device.state = state
        self._typed[class_name] += 1
        self._states.add(device)
        self.changes.publish(events.TypeSet(device))

    def remove_device(self, name: str) -> None:
        device = self.device(name)
        if device.interfaces:
            buses = sorted({i.bus.name for i in device.interfaces.values()})
            raise Busy(f"device {name} is linked from bus(es) {', '.join(buses)}")
        del self.devices[name]
        device.alive = False
        self._states.discard(device)
        if device.deviceclass is not None:
            self._typed[device.deviceclass.name] -= 1
            device.deviceclass.destroy(device.state)
        self.changes.publish(events.DeviceRemoved(device))

    # -- buses ---------------------------------------------------------

    def create_bus(self, name: str, *, owner: int = ROOT, group: int = ROOT) -> Bus:
        """Make bus `name`, owned by its creator's `owner` uid and `group` gid, mode 0700."""
        check_bus_name(name)
        if name in self.buses:
            raise AlreadyExists(f"bus {name} exists")
        if self.membership is not None:
            self.membership.bus_made(name)
        bus = Bus(name, perms=BusPerms(owner, group))
        self.buses[name] = bus
        self.changes.publish(events.BusCreated(bus))
        return bus

    def bus(self, name: str) -> Bus:
        bus = self.buses.get(name)
        if bus is None:
            raise NotFound(f"no bus {name}")
        return bus

    def remove_bus(self, name: str) -> None:
        bus = self.bus(name)
        if bus.links:
            raise NotEmpty(f"bus {name} still links {len(bus.links)} device(s)")
        if self.membership is not None:
            members = self.membership.members_of(name)
            if members:
                raise Busy(f"bus {name} still has {len(members)} live member(s)")
            self.membership.bus_gone(name)
        del self.buses[name]
        bus.alive = False
        self.changes.publish(events.BusRemoved(bus))

    # -- membership ------------------------------------------------------

    def _membership(self) -> MembershipBackend:
        if self.membership is None:
            raise NoSuchProcess("this model has no process table")
        return self.membership

    def process(self, pid: int) -> ProcessInfo:
        """The live process `pid` (or the process of thread `pid`), else NoSuchProcess."""
        return process_of(self._membership().table, pid)

    def pin_process(self, info: ProcessInfo) -> ProcessPin:
        """Hold process `info` itself until the pin's close(), else NoSuchProcess."""
        pin = self._membership().table.pin(info)
        if pin is None:
            raise NoSuchProcess(f"process {info.pid} has exited")
        return pin

    def bus_of(self, pid: int) -> str | None:
        """The bus process `pid` (a process id, not a thread's) is on now (None: no bus)."""
        membership = self._membership()
        info = membership.table.info(pid)
        if info is None:
            raise NoSuchProcess(f"no process {pid}")
        return membership.bus_of(info)

    def membership_of(self, pid: int) -> str | None:
        """The bus of process `pid`, or of the process of thread `pid` (None: no bus).

        What proc/<pid>/vbus shows; the views render None as `<none>`.
        """
        return self._membership().bus_of(self.process(pid))

    def set_membership(self, pid: int, value: str) -> None:
        """What a write to proc/<pid>/vbus does: join a bus, or leave with "0"."""
        self.change_membership(self.process(pid), value)

    def change_membership(self, info: ProcessInfo, value: str) -> None:
        """Join process `info` to bus `value`, or leave with "0" (behaviour §6).

        Joining needs the bus's perms to let the *target* process's user in
        (its uid, effective gid and supplementary groups), whoever writes:
        AccessDenied (EACCES) otherwise. Leaving is always allowed.
        """
        membership = self._membership()
        if info.kernel_thread:
            raise InvalidValue(f"process {info.pid} is a kernel thread: it cannot join a bus")
        joined = None if value == LEAVE_TOKEN else value
        if joined is not None:
            bus = self.buses.get(joined)
            if bus is None:
                raise NotFound(f"no bus {value!r}")
            decided = bus.perms.decided_by_uid(info.uid)
            gids = frozenset() if decided else self.groups_of(info.pid)
            if not bus.may_join(info.uid, gids):
                raise AccessDenied(
                    f"bus {value}'s perms ({perms_text(bus.perms)}) do not let process "
                    f"{info.pid} (uid {info.uid}) join"
                )
        left = membership.bus_of(info)
        membership.change(info, joined)
        self.changes.publish(events.MembershipChanged(info.pid, left, joined))

    # -- who may join (perms/) ---------------------------------------------

    def groups_of(self, pid: int) -> frozenset[int]:
        """The effective gid and supplementary groups of process `pid` (NoSuchProcess)."""
        groups = self._membership().table.groups(pid)
        if groups is None:
            raise NoSuchProcess(f"no process {pid}")
        return groups[1] | {groups[0]}

    def may_use(self, bus_name: str, uid: int, gids: Collection[int]) -> bool:
        """May a process of `uid` and groups `gids` join bus `bus_name` and open its devices?"""
        bus = self.buses.get(bus_name)
        return bus is not None and bus.may_join(uid, gids)

    def perms_attributes(self) -> Mapping[str, Attribute]:
        """The attributes of every bus's perms/ directory: owner, group, mode."""
        return PERMS_INDEX

    def show_perm(self, bus: Bus, name: str) -> str:
        return self._perm(bus, name).show(bus)

    def check_perms_writer(self, bus: Bus, uid: int) -> None:
        """Only root and the bus's owner may change its perms (NotPermitted: EPERM)."""
        if uid not in (ROOT, bus.perms.owner):
            raise NotPermitted(
                f"only root and its owner (uid {bus.perms.owner}) may change bus {bus.name}'s perms"
            )

    def store_perm(self, bus: Bus, name: str, value: str, *, writer: int | None = None) -> None:
        """Store `value` in perms attribute `name`; `writer` (a uid) is checked when given."""
        attr = self._perm(bus, name)
        if writer is not None:
            self.check_perms_writer(bus, writer)
        attr.write(bus, value)
        self.changes.publish(events.PermStored(bus, name))

    def _perm(self, bus: Bus, name: str) -> Attribute:
        if not bus.alive:
            raise NoDevice(f"bus {bus.name} was removed")
        attr = PERMS_INDEX.get(name)
        if attr is None:
            raise NotFound(f"perms has no attribute {name}")
        return attr

    # -- links (interfaces) ----------------------------------------------

    def link(
        self, bus_name: str, link_name: str, device_name: str, *, interface_id: int | None = None
    ) -> Interface:
        """Put a device on a bus. `interface_id` (restore only) takes an id not yet handed out."""
        bus = self.bus(bus_name)
        device = self.device(device_name)
        check_name(link_name, "link")
        if link_name in bus.links or link_name in BUS_ENTRIES:
            raise AlreadyExists(f"bus {bus_name} already has an entry {link_name}")
        deviceclass = device.deviceclass
        if deviceclass is None:
            raise InvalidValue(f"device {device_name} has no type yet")
        if device.interfaces:
            if not deviceclass.multi_bus:
                raise Busy(f"device {device_name} ({deviceclass.name}) is already on a bus")
            if any(i.bus is bus for i in device.interfaces.values()):
                raise Busy(f"device {device_name} is already on bus {bus_name}")
        if interface_id is None:
            if bus.next_id >= self._max_interface_ids:
                raise NoSpace(f"bus {bus_name} has used all its interface ids")
            interface_id = bus.next_id
        elif interface_id < bus.next_id or interface_id >= self._max_interface_ids:
            raise InvalidValue(f"interface id {interface_id} was already handed out on {bus_name}")
        name = interface_name(device, bus_name, interface_id)
        if name in device.interfaces:  # a bus named like another's shortened name (§3)
            raise AlreadyExists(f"device {device_name} already has an interface {name}")
        state = deviceclass.attach(device.state, InterfaceInfo(bus_name, interface_id, name))
        interface = Interface(bus, device, interface_id, link_name, state)
        bus.next_id = interface_id + 1
        bus.links[link_name] = interface
        bus.interfaces[interface_id] = interface
        device.interfaces[name] = interface
        self._states.add(interface)
        self.changes.publish(events.Linked(interface))
        self._emit(Event("add", bus_name, interface_id, interface.type, device_name))
        return interface

    def unlink(self, bus_name: str, link_name: str) -> None:
        bus = self.bus(bus_name)
        interface = bus.links.get(link_name)
        if interface is None:
            raise NotFound(f"bus {bus_name} has no link {link_name}")
        device = interface.device
        del bus.links[link_name], bus.interfaces[interface.id]
        del device.interfaces[interface.name]
        interface.alive = False
        self._states.discard(interface)
        assert device.deviceclass is not None
        try:
            device.deviceclass.detach(device.state, interface.state)
        finally:
            # a detach that raises (a bug: drops cannot fail) still drops the interface,
            # and its clients still hear it
            self.changes.publish(events.Unlinked(interface))
            self._emit(Event("drop", bus_name, interface.id, interface.type, device.name))

    # -- clients ---------------------------------------------------------

    def open_interface(self, bus_name: str, interface_id: int, version: int) -> DeviceConnection:
        """Open interface `interface_id` of `bus_name` for one client."""
        bus = self.bus(bus_name)
        interface = bus.interfaces.get(interface_id)
        if interface is None:
            raise NotFound(f"bus {bus_name} has no interface {interface_id}")
        deviceclass = interface.device.deviceclass
        assert deviceclass is not None
        if version not in deviceclass.versions:
            supported = ", ".join(map(str, sorted(deviceclass.versions))) or "none"
            raise InvalidValue(
                f"{interface.type} version {version} is not supported (supported: {supported})"
            )
        return deviceclass.open(interface.device.state, interface.state, version)

    # -- attributes ----------------------------------------------------

    def attributes(self, owner: AttributeOwner) -> Mapping[str, Attribute]:
        """The attributes of a device or an interface, in declaration order."""
        deviceclass = owner.owner_class
        if deviceclass is None:
            return {}
        return self._attr_index[deviceclass.name, owner.noun]

    def show_attribute(self, owner: AttributeOwner, name: str) -> str:
        """The value of attribute `name` of a device or an interface (no newline)."""
        return self._attribute(owner, name).show(owner.state)

    def store_attribute(self, owner: AttributeOwner, name: str, value: str) -> None:
        """Store `value` in attribute `name` of a device or an interface."""
        self._attribute(owner, name).write(owner.state, value)
        self.changes.publish(events.AttributeStored(owner, name))

    def _noticed(self, state: Any, name: str) -> None:
        """A deviceclass's `notify`, now in the model's thread."""
        for owner in self._states.owners(state):
            if owner.alive and name in self.attributes(owner):
                self.changes.publish(events.AttributeChanged(owner, name))

    def _attribute(self, owner: AttributeOwner, name: str) -> Attribute:
        if not owner.alive:
            raise NoDevice(f"{owner.label} was removed")
        attr = self.attributes(owner).get(name)
        if attr is None:
            raise NotFound(f"{owner.label} has no attribute {name}")
        return attr

    # -- events ----------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every add and drop of an interface; returns the unsubscribe call."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)

    def reset(self) -> list[Exception]:
        """Back to the empty state a new model starts in, classes aside: every interface
        unlinked (its clients hear the drop), every device and bus removed, every member
        let go, whatever holds them. Drop steps cannot fail; one that raises anyway (a bug
        in its deviceclass) stops nothing: the model goes on emptying, and the exceptions
        are returned for the caller to report. What the membership backend raises (the
        kernel refusing to empty a cgroup, say) is returned too."""
        faults: list[Exception] = []
        for bus in list(self.buses.values()):
            for link_name in list(bus.links):
                try:
                    self.unlink(bus.name, link_name)
                except Exception as exc:
                    faults.append(exc)
        for name in list(self.devices):
            try:
                self.remove_device(name)
            except Exception as exc:
                faults.append(exc)
        for bus in list(self.buses.values()):
            if self.membership is not None:
                try:
                    self.membership.bus_gone(bus.name)  # its members are let go
                except Exception as exc:
                    faults.append(exc)
            del self.buses[bus.name]
            bus.alive = False
            self.changes.publish(events.BusRemoved(bus))
        return faults

    def leftovers(self) -> list[str]:
        """What keeps this model from being empty, classes aside: devices, buses, members
        (one text each, for an EBUSY that names them); [] when it is empty."""
        found = [f"device {name}" for name in self.devices]
        found += [f"bus {name}" for name in self.buses]
        if self.membership is not None:
            found += [
                f"member {pid} of bus {bus}" for pid, bus in self.membership.members().items()
            ]
        return found

    def clear(self) -> None:
        """Drop every link, device and bus (members included), releasing class state.

        Used at shutdown: drop steps cannot fail, so neither can this.
        """
        for bus in list(self.buses.values()):
            for link_name in list(bus.links):
                self.unlink(bus.name, link_name)
        for name in list(self.devices):
            self.remove_device(name)
        for bus in self.buses.values():
            if self.membership is not None:
                self.membership.bus_gone(bus.name)
            bus.alive = False
            self.changes.publish(events.BusRemoved(bus))
        self.buses.clear()

    # -- inspection ------------------------------------------------------

    def iter_interfaces(self) -> Iterator[Interface]:
        for bus in self.buses.values():
            yield from bus.interfaces.values()

    def snapshot(self) -> dict[str, Any]:
        """A plain-data picture of the configuration, for comparisons and tests."""
        from ._config import snapshot  # it reads a Vbus: imported on use, no cycle

        return snapshot(self)
