"""A conformance machine for deviceclasses, in the spirit of trio.testing's stream checks.

`DeviceClassConformance` is a hypothesis `RuleBasedStateMachine` that loads one
deviceclass into an in-process `Vbus` (no FUSE, no host) and drives it with
random programs of the operations an administrator and a client perform:
create a device and set its type, create and remove buses, link and unlink,
store valid, invalid and read-only attribute values, open and close an
interface, unload the class, and tear everything down. After every step it
checks the contract of behaviour §4 and §5 as it concerns a class:

- an attribute reads what was last stored in it (`AttributeValues.shows`),
  as text with no trailing newline and at most 4095 bytes;
- every value of `AttributeValues.valid` is accepted; every value of
  `invalid` is refused with a `VbusError` whose errno is EINVAL, and the
  refusal changes nothing (the model's snapshot, every attribute of every
  device and interface, and `class_state()`);
- a read-only attribute refuses every write with EACCES and changes nothing;
- any refusal of a step (create, attach, open) is a `VbusError` and changes
  nothing; any other exception is a bug;
- create/link/unlink/remove cycles leak nothing: once every device is gone
  the model's snapshot is what it was at the start, `class_in_use` is 0, the
  class unloads, and `class_state()` is back to its first value.

Use it by subclassing and naming the `TestCase`::

    from vbusfs.testing import AttributeValues, DeviceClassConformance, choice_values

    class BlinkConformance(DeviceClassConformance):
        deviceclass = Blink
        values = {"color": choice_values(["red", "green"])}

    TestBlinkConformance = BlinkConformance.TestCase

Set `deviceclass` (built with no arguments) or override `make_deviceclass()`;
`values` and `interface_values` must name every writable attribute of the
class's two tables (the machine says which are missing). Override
`class_state()` to return a picture of state the class keeps outside its
devices (counters, open handles, registries): it must compare equal to its
first value once every device is gone. Override `check_device(device)` and
`check_interface(interface)` for invariants of your own; they run after every
step. Tune the run with hypothesis settings on the TestCase
(`TestBlinkConformance.settings = settings(max_examples=..., stateful_step_count=...)`).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from vbusfs.model import AttributeOwner, Device, DeviceClass, Interface, Vbus, VbusError

from ._strategies import AttributeValues

# A value plus its newline fits in one page, as a sysfs show must.
MAX_SHOW_BYTES = 4095

# The machine's table of values for each kind of attribute owner.
_VALUES_FIELD = {Device.noun: "values", Interface.noun: "interface_values"}

_ANY_TEXT = st.text(max_size=32)


class DeviceClassConformance(RuleBasedStateMachine):
    """Checks that one deviceclass obeys the deviceclass contract; subclass it."""

    #: the class under test, built with no arguments (or override `make_deviceclass`)
    deviceclass: ClassVar[type[DeviceClass] | None] = None
    #: writable device attribute name -> its values
    values: ClassVar[Mapping[str, AttributeValues]] = {}
    #: writable interface attribute name -> its values
    interface_values: ClassVar[Mapping[str, AttributeValues]] = {}
    #: the names the machine draws from (few, so that operations collide)
    device_names: ClassVar[tuple[str, ...]] = ("d0", "d1", "d2")
    bus_names: ClassVar[tuple[str, ...]] = ("b0", "b1", "b2")

    def make_deviceclass(self) -> DeviceClass:
        """The deviceclass instance under test (default: `deviceclass()`)."""
        if self.deviceclass is None:
            raise TypeError(
                f"{type(self).__name__} must set `deviceclass` or override make_deviceclass()"
            )
        return self.deviceclass()

    def class_state(self) -> Any:
        """State the class keeps outside its devices; equal to its first value when idle."""
        return None

    def check_device(self, device: Device) -> None:
        """An invariant of your own for each device of the class (after every step)."""

    def check_interface(self, interface: Interface) -> None:
        """An invariant of your own for each interface of the class (after every step)."""

    # -- set-up ------------------------------------------------------------

    def __init__(self) -> None:
        super().__init__()
        self.instance = self.make_deviceclass()
        self.class_name = self.instance.name
        self.vbus = Vbus()
        self.vbus.load_class(self.instance)
        self._check_tables()
        self.empty_snapshot = self.vbus.snapshot()
        self.idle_class_state = self.class_state()
        # what each attribute must read: (device, attribute) or (bus, id, attribute) -> text
        self.expected: dict[tuple[Any, ...], str] = {}

    def _check_tables(self) -> None:
        for owner in (Device, Interface):
            what = _VALUES_FIELD[owner.noun]
            given = getattr(self, what)
            writable = {a.name for a in owner.declared_attributes(self.instance) if a.writable}
            missing = writable - set(given)
            extra = set(given) - writable
            if missing or extra:
                raise TypeError(
                    f"{type(self).__name__}.{what} must give values for exactly the writable "
                    f"attributes of {self.class_name}: missing {sorted(missing)}, "
                    f"not writable or unknown {sorted(extra)}"
                )

    # -- what the machine looks at -------------------------------------------

    def _devices(self) -> list[Device]:
        return [d for d in self.vbus.devices.values() if d.deviceclass is self.instance]

    def _interfaces(self) -> list[Interface]:
        return [i for d in self._devices() for i in d.interfaces.values()]

    def _owners(self) -> list[AttributeOwner]:
        return [*self._devices(), *self._interfaces()]

    def _values(self, owner: AttributeOwner) -> Mapping[str, AttributeValues]:
        values: Mapping[str, AttributeValues] = getattr(self, _VALUES_FIELD[owner.noun])
        return values

    @staticmethod
    def _key(owner: AttributeOwner, name: str) -> tuple[Any, ...]:
        """(device, attribute) or (bus, id, attribute): where `expected` keeps a value."""
        if isinstance(owner, Interface):
            return (owner.bus.name, owner.id, name)
        assert isinstance(owner, Device)
        return (owner.name, name)

    def readout(self) -> dict[tuple[Any, ...], str]:
        """Every attribute of every device and interface of the class, as it reads now."""
        return {
            self._key(owner, name): self.vbus.show_attribute(owner, name)
            for owner in self._owners()
            for name in self.vbus.attributes(owner)
        }

    def picture(self) -> tuple[Any, ...]:
        """All the machine compares to say "nothing changed"."""
        return (self.vbus.snapshot(), self.readout(), self.class_state())

    def _refused_changing_nothing(self, before: tuple[Any, ...], exc: VbusError) -> None:
        after = self.picture()
        assert after == before, f"a refused step ({exc!r}) changed the model or the class"

    def _draw_device(self, data: st.DataObject, typed: bool = True) -> Device:
        candidates = self._devices() if typed else list(self.vbus.devices.values())
        return data.draw(st.sampled_from(sorted(candidates, key=lambda d: d.name)))

    def _draw_interface(self, data: st.DataObject) -> Interface:
        interfaces = sorted(self._interfaces(), key=lambda i: (i.bus.name, i.id))
        return data.draw(st.sampled_from(interfaces))

    def _has_devices(self) -> bool:
        return bool(self._devices())

    def _has_interfaces(self) -> bool:
        return bool(self._interfaces())

    # -- the administrator's operations ----------------------------------------

    @initialize()
    def start_with_a_device_on_a_bus(self) -> None:
        # Start where every step is possible, so that short programs reach them all.
        self.vbus.create_bus(self.bus_names[0])
        self._create_device(self.device_names[0], typed=True)
        self._link(self.bus_names[0], self.vbus.devices[self.device_names[0]])

    @rule(data=st.data(), typed=st.booleans())
    def create_device(self, data: st.DataObject, typed: bool) -> None:
        free = [n for n in self.device_names if n not in self.vbus.devices]
        if free:
            self._create_device(data.draw(st.sampled_from(free)), typed=typed)

    def _create_device(self, name: str, *, typed: bool) -> None:
        self.vbus.create_device(name)
        if typed:
            self._set_type(name)

    @rule(data=st.data())
    def set_type(self, data: st.DataObject) -> None:
        untyped = sorted(n for n, d in self.vbus.devices.items() if not d.typed)
        if untyped:
            self._set_type(data.draw(st.sampled_from(untyped)))

    def _set_type(self, name: str) -> None:
        before = self.picture()
        in_use = self.vbus.class_in_use(self.class_name)
        try:
            self.vbus.set_device_type(name, self.class_name)
        except VbusError as exc:  # the class's create step may refuse
            self._refused_changing_nothing(before, exc)
            return
        assert self.vbus.class_in_use(self.class_name) == in_use + 1
        assert self.vbus.devices[name].deviceclass is self.instance

    @rule(data=st.data())
    def create_bus(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.bus_names))
        if name not in self.vbus.buses:
            self.vbus.create_bus(name)

    @rule(data=st.data())
    def remove_bus(self, data: st.DataObject) -> None:
        empty = sorted(n for n, b in self.vbus.buses.items() if not b.links)
        if empty:
            self.vbus.remove_bus(data.draw(st.sampled_from(empty)))

    @precondition(_has_devices)
    @rule(data=st.data())
    def link(self, data: st.DataObject) -> None:
        device = self._draw_device(data)
        free = sorted(
            b
            for b in self.vbus.buses
            if b not in {i.bus.name for i in device.interfaces.values()}
            and device.name not in self.vbus.buses[b].links
        )
        if not free or (device.interfaces and not self.instance.multi_bus):
            return
        self._link(data.draw(st.sampled_from(free)), device)

    def _link(self, bus: str, device: Device) -> None:
        if not device.typed:
            return
        before = self.picture()
        try:
            interface = self.vbus.link(bus, device.name, device.name)
        except VbusError as exc:  # the class's attach step may refuse
            self._refused_changing_nothing(before, exc)
            return
        assert interface.device is device and interface.name in device.interfaces

    @precondition(_has_interfaces)
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        interface = self._draw_interface(data)
        self.vbus.unlink(interface.bus.name, interface.link_name)
        for key in [k for k in self.expected if k[:2] == (interface.bus.name, interface.id)]:
            del self.expected[key]

    @precondition(lambda self: bool(self.vbus.devices))
    @rule(data=st.data())
    def remove_device(self, data: st.DataObject) -> None:
        device = self._draw_device(data, typed=False)
        if device.interfaces:
            try:
                self.vbus.remove_device(device.name)
            except VbusError as exc:
                assert exc.errno == errno.EBUSY, exc
            else:
                raise AssertionError("a linked device was removed")
            return
        in_use = self.vbus.class_in_use(self.class_name)
        self.vbus.remove_device(device.name)
        assert self.vbus.class_in_use(self.class_name) == in_use - device.typed
        for key in [k for k in self.expected if len(k) == 2 and k[0] == device.name]:
            del self.expected[key]

    @precondition(_has_devices)
    @rule()
    def unload_class_in_use(self) -> None:
        before = self.picture()
        try:
            self.vbus.unload_class(self.class_name)
        except VbusError as exc:
            assert exc.errno == errno.EBUSY, exc
            self._refused_changing_nothing(before, exc)
        else:
            raise AssertionError("a class with typed devices was unloaded")

    @rule()
    def tear_down_everything(self) -> None:
        """Unlink, remove every device and bus: nothing of the class may remain."""
        self._tear_down()

    def _tear_down(self) -> None:
        for bus in list(self.vbus.buses.values()):
            for link_name in list(bus.links):
                self.vbus.unlink(bus.name, link_name)
        for name in list(self.vbus.devices):
            self.vbus.remove_device(name)
        for name in list(self.vbus.buses):
            self.vbus.remove_bus(name)
        self.expected.clear()
        assert self.vbus.class_in_use(self.class_name) == 0
        assert self.vbus.snapshot() == self.empty_snapshot
        assert self.class_state() == self.idle_class_state, (
            "the class kept state after all its devices were removed"
        )
        # an idle class unloads and loads again
        assert self.vbus.unload_class(self.class_name) is self.instance
        self.vbus.load_class(self.instance)

    # -- attributes ------------------------------------------------------------

    @precondition(lambda self: self._has_devices() and bool(self.values))
    @rule(data=st.data())
    def store_valid(self, data: st.DataObject) -> None:
        self._store_valid(data, self._draw_device(data))

    @precondition(lambda self: self._has_devices() and bool(self.values))
    @rule(data=st.data())
    def store_invalid(self, data: st.DataObject) -> None:
        self._store_invalid(data, self._draw_device(data))

    @precondition(_has_devices)
    @rule(data=st.data())
    def store_read_only(self, data: st.DataObject) -> None:
        self._store_read_only(data, self._draw_device(data))

    @precondition(lambda self: self._has_interfaces() and bool(self.interface_values))
    @rule(data=st.data())
    def store_interface_valid(self, data: st.DataObject) -> None:
        self._store_valid(data, self._draw_interface(data))

    @precondition(lambda self: self._has_interfaces() and bool(self.interface_values))
    @rule(data=st.data())
    def store_interface_invalid(self, data: st.DataObject) -> None:
        self._store_invalid(data, self._draw_interface(data))

    @precondition(_has_interfaces)
    @rule(data=st.data())
    def store_interface_read_only(self, data: st.DataObject) -> None:
        self._store_read_only(data, self._draw_interface(data))

    def _store_valid(self, data: st.DataObject, owner: AttributeOwner) -> None:
        values = self._values(owner)
        name = data.draw(st.sampled_from(sorted(values)))
        spec = values[name]
        value = data.draw(spec.valid, label="value")
        self.vbus.store_attribute(owner, name, value)
        expected = spec.shows(value)
        shown = self.vbus.show_attribute(owner, name)
        assert shown == expected, f"{name} reads {shown!r} after storing {value!r}"
        self.expected[self._key(owner, name)] = expected

    def _store_invalid(self, data: st.DataObject, owner: AttributeOwner) -> None:
        values = self._values(owner)
        name = data.draw(st.sampled_from(sorted(values)))
        value = data.draw(values[name].invalid, label="value")
        self._expect_refusal(
            errno.EINVAL, lambda: self.vbus.store_attribute(owner, name, value), name, value
        )

    def _store_read_only(self, data: st.DataObject, owner: AttributeOwner) -> None:
        read_only = sorted(n for n, a in self.vbus.attributes(owner).items() if not a.writable)
        if not read_only:
            return
        name = data.draw(st.sampled_from(read_only))
        value = data.draw(_ANY_TEXT, label="value")
        self._expect_refusal(
            errno.EACCES, lambda: self.vbus.store_attribute(owner, name, value), name, value
        )

    def _expect_refusal(self, want: int, store: Any, name: str, value: str) -> None:
        before = self.picture()
        try:
            store()
        except VbusError as exc:
            assert exc.errno == want, (
                f"storing {value!r} in {name} failed with {errno.errorcode.get(exc.errno)}, "
                f"not {errno.errorcode[want]}"
            )
            self._refused_changing_nothing(before, exc)
        else:
            raise AssertionError(f"{name} accepted {value!r}: it must refuse it")

    # -- a client's open and close ------------------------------------------------

    @precondition(lambda self: self._has_interfaces() and bool(self.instance.versions))
    @rule(data=st.data())
    def open_and_close(self, data: st.DataObject) -> None:
        interface = self._draw_interface(data)
        version = data.draw(st.sampled_from(sorted(self.instance.versions)))
        before = self.picture()
        try:
            connection = self.vbus.open_interface(interface.bus.name, interface.id, version)
        except VbusError as exc:  # the class may refuse an open
            self._refused_changing_nothing(before, exc)
            return
        try:
            stats = connection.stats()
            assert isinstance(stats, dict), stats
            assert all(isinstance(k, str) and isinstance(v, int) for k, v in stats.items())
        finally:
            connection.close()
        assert self.picture() == before, "an open and a close left something behind"

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def attributes_read_what_was_stored(self) -> None:
        shown = self.readout()
        for key, text in shown.items():
            assert isinstance(text, str), f"{key} shows {text!r}, not text"
            assert not text.endswith("\n"), f"{key} shows a trailing newline"
            assert len(text.encode("utf-8", "surrogateescape")) <= MAX_SHOW_BYTES, key
        for key, text in self.expected.items():
            assert shown.get(key) == text, f"{key} reads {shown.get(key)!r}, stored {text!r}"

    @invariant()
    def typed_devices_are_counted(self) -> None:
        assert self.vbus.class_in_use(self.class_name) == len(self._devices())

    @invariant()
    def your_invariants(self) -> None:
        for device in self._devices():
            self.check_device(device)
        for interface in self._interfaces():
            self.check_interface(interface)

    def teardown(self) -> None:
        # Release without asserting: a failure here would hide the step that failed.
        self.vbus.clear()
