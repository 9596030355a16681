"""A conformance machine for deviceclasses, in the spirit of trio.testing's stream checks.

`DeviceClassConformance` is a hypothesis `RuleBasedStateMachine` that loads one
deviceclass into an in-process `Vbus` (no FUSE, no host) and drives it with
random programs of the operations an administrator and a client perform:
create a device and set its type, create and remove buses, link and unlink,
store valid, invalid and read-only attribute values, open interfaces and move
data through them, unload the class, and tear everything down. After every
step it checks the contract of behaviour §4, §5 and §7.5 as it concerns a class:

- an attribute reads what was last stored in it (`AttributeValues.shows`, or
  the readout its `valid_examples` table gives), as text with no trailing
  newline and at most 4095 bytes;
- a store changes the stored attribute and the attributes it declares it
  affects (`Attribute(..., affects=("size",))`, or the machine's `affects` and
  `interface_affects` tables for a class you cannot edit), nothing else; the
  machine then expects what the affected ones read from then on;
- every valid value is accepted (unless `busy_while_open` names the attribute
  and its device is open: then it must be refused with EBUSY); every invalid
  value is refused with EINVAL (or the errno of its `invalid_examples` entry),
  and the refusal changes nothing (the model's snapshot, every attribute of
  every device and interface but the `volatile` ones, and `class_state()`);
  each example of the tables is tried in every program;
- a read-only attribute refuses every write with EACCES and changes nothing;
- any refusal of a step (create, attach, open) is a `VbusError` and changes
  nothing; any other exception is a bug;
- for a class that declares queues (`DeviceClass.queues`), the data path
  (`_conformance_data`): opens through the daemon's own connector (a
  `DeviceHarness`), the declared queues attached, the loop run, requests sent
  and checked, and every open ended in each of the daemon's endings, with the
  framework's guarantees checked each time; a loop that fails, ends unasked,
  or does not stop within the bound is a failure;
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
step. The data-path hooks (`requests`, `check_response`, `drive`,
`ring_shape`, `endings`) are `DataPathRules`'s. Tune the run with hypothesis
settings on the TestCase
(`TestBlinkConformance.settings = settings(max_examples=..., stateful_step_count=...)`).

The same machine runs against a live mount, through its files and a member
client: `BlinkConformance.run_through_mount(mount)` (a `LiveMount` or a mount
point with the class loaded); `class_state`, `check_device` and
`check_interface` need the in-process model and are not run there.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Mapping
from typing import Any, ClassVar

from hypothesis import settings as HypothesisSettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from vbusfs.model import Device, DeviceClass, Interface, VbusError

from ._conformance_attrs import AttributeRules
from ._conformance_data import DataPathRules, Opened
from ._values import AttributeValues
from ._worlds import ModelWorld, MountWorld, Owner, is_device

# A value plus its newline fits in one page, as a sysfs show must.
MAX_SHOW_BYTES = 4095


class DeviceClassConformance(AttributeRules, DataPathRules, RuleBasedStateMachine):
    """Checks that one deviceclass obeys the deviceclass contract; subclass it."""

    #: the class under test, built with no arguments (or override `make_deviceclass`)
    deviceclass: ClassVar[type[DeviceClass] | None] = None
    #: writable device attribute name -> its values
    values: ClassVar[Mapping[str, AttributeValues]] = {}
    #: writable interface attribute name -> its values
    interface_values: ClassVar[Mapping[str, AttributeValues]] = {}
    #: the names the machine draws from (few, so that operations collide); the
    #: first bus is where the machine's client opens interfaces
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

    #: the live mount the machine drives (None: an in-process model); see run_through_mount
    mount_root: ClassVar[str | None] = None
    mount_load: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        mount, load = self.mount_root, self.mount_load
        self.instance = self.make_deviceclass()
        self.class_name = self.instance.name
        self._check_tables()
        self.client_bus = self.bus_names[0]
        self.opens: list[Opened] = []
        self.world: ModelWorld | MountWorld
        if mount is None:
            data_path = bool(self.instance.queues) and bool(self.instance.versions)
            self.world = ModelWorld(
                self.instance,
                data_path=data_path,
                client_bus=self.client_bus,
                join_bound=self.join_bound,
            )
        else:
            cls = type(self.instance)
            spec = load or f"{cls.__module__}:{cls.__qualname__}"
            self.world = MountWorld(mount, self.instance, client_bus=self.client_bus, load=spec)
            taken = (set(self.world.devices()) & set(self.device_names)) | (
                set(self.world.links()) & set(self.bus_names)
            )
            if taken:
                raise RuntimeError(f"{mount} already holds {sorted(taken)}: give an empty mount")
        #: the in-process model (None through a mount)
        self.vbus = self.world.vbus
        self.empty_snapshot = self.world.snapshot()
        self.idle_class_state = self.class_state()
        # what each attribute must read: (device, attribute) or (bus, id, attribute) -> text
        self.expected: dict[tuple[Any, ...], str] = {}

    @classmethod
    def run_through_mount(
        cls, mount: Any, *, settings: HypothesisSettings | None = None, load: str | None = None
    ) -> None:
        """Run this machine against a live mount (a `LiveMount` or a mount point) with the
        class loaded; `load` names it for modprobe after the tear-down's rmmod (default:
        `module:Class` of the deviceclass)."""
        through = type(
            f"{cls.__name__}ThroughMount",
            (cls,),
            {"mount_root": getattr(mount, "path", mount), "mount_load": load},
        )
        run_state_machine_as_test(through, settings=settings)

    def _check_tables(self) -> None:
        for owner, what in ((Device, "values"), (Interface, "interface_values")):
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

    def _devices(self, typed: bool = True) -> list[str]:
        """The machine's devices (typed: of the class under test)."""
        found = self.world.devices()
        return sorted(
            n
            for n, c in found.items()
            if n in self.device_names and (c == self.class_name or not typed)
        )

    def _links(self) -> dict[str, dict[str, tuple[str, int]]]:
        return {b: links for b, links in self.world.links().items() if b in self.bus_names}

    def _interfaces(self) -> list[tuple[str, int, str]]:
        """(bus, interface id, device) of every interface of the class's devices."""
        ours = set(self._devices())
        return sorted(
            (bus, interface_id, device)
            for bus, links in self._links().items()
            for device, interface_id in links.values()
            if device in ours
        )

    def _owners(self) -> list[Owner]:
        return [(d,) for d in self._devices()] + [(b, i) for b, i, _ in self._interfaces()]

    def _device_of(self, owner: Owner) -> str:
        if is_device(owner):
            return str(owner[0])
        return next(d for b, i, d in self._interfaces() if (b, i) == owner)

    def readout(self) -> dict[tuple[Any, ...], str]:
        """Every attribute of every device and interface of the class, as it reads now
        (but the `volatile` ones)."""
        return {
            (*owner, name): self.world.show(owner, name)
            for owner in self._owners()
            for name in self.world.attributes(owner)
            if name not in self.volatile
        }

    def picture(self) -> tuple[Any, ...]:
        """All the machine compares to say "nothing changed"."""
        return (self.world.snapshot(), self.readout(), self.class_state())

    def _refused_changing_nothing(self, before: tuple[Any, ...], exc: VbusError) -> None:
        after = self.picture()
        assert after == before, f"a refused step ({exc!r}) changed the model or the class"

    # -- the administrator's operations ----------------------------------------

    @initialize(data=st.data())
    def start_with_a_device_on_a_bus(self, data: st.DataObject) -> None:
        # Start where every step is possible, so that short programs reach them all,
        # with the first interface open if the class has a data path.
        self.world.create_bus(self.bus_names[0])
        self._create_device(self.device_names[0], typed=True)
        self._link(self.bus_names[0], self.device_names[0])
        self._store_the_examples()
        if self.world.data_path and self._interfaces():
            self._open(data, *self._interfaces()[0])

    @rule(data=st.data(), typed=st.booleans())
    def create_device(self, data: st.DataObject, typed: bool) -> None:
        free = [n for n in self.device_names if n not in self._devices(typed=False)]
        if free:
            self._create_device(data.draw(st.sampled_from(free)), typed=typed)

    def _create_device(self, name: str, *, typed: bool) -> None:
        self.world.create_device(name)
        if typed:
            self._set_type(name)

    @rule(data=st.data())
    def set_type(self, data: st.DataObject) -> None:
        untyped = [
            n for n, c in self.world.devices().items() if c is None and n in self.device_names
        ]
        if untyped:
            self._set_type(data.draw(st.sampled_from(sorted(untyped))))

    def _set_type(self, name: str) -> None:
        before = self.picture()
        in_use = self.world.class_in_use()
        try:
            self.world.set_type(name)
        except VbusError as exc:  # the class's create step may refuse
            self._refused_changing_nothing(before, exc)
            return
        if in_use is not None:
            assert self.world.class_in_use() == in_use + 1
        assert self.world.devices()[name] == self.class_name

    @rule(data=st.data())
    def create_bus(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.bus_names))
        if name not in self._links():
            self.world.create_bus(name)

    @rule(data=st.data())
    def remove_bus(self, data: st.DataObject) -> None:
        empty = sorted(n for n, links in self._links().items() if not links)
        if empty:
            self.world.remove_bus(data.draw(st.sampled_from(empty)))

    @precondition(lambda self: bool(self._devices()))
    @rule(data=st.data())
    def link(self, data: st.DataObject) -> None:
        device = data.draw(st.sampled_from(self._devices()))
        links = self._links()
        on = {b for b, entries in links.items() if any(d == device for d, _ in entries.values())}
        free = sorted(b for b in links if b not in on and device not in links[b])
        if not free or (on and not self.instance.multi_bus):
            return
        self._link(data.draw(st.sampled_from(free)), device)

    def _link(self, bus: str, device: str) -> None:
        if self.world.devices().get(device) != self.class_name:
            return
        before = self.picture()
        try:
            interface_id = self.world.link(bus, device)
        except VbusError as exc:  # the class's attach step may refuse
            self._refused_changing_nothing(before, exc)
            return
        assert self._links()[bus][device] == (device, interface_id)

    @precondition(lambda self: bool(self._interfaces()))
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        bus, interface_id, _ = data.draw(st.sampled_from(self._interfaces()))
        opened = [o for o in self.opens if o.owner == (bus, interface_id)]
        if opened:  # a client has it open: the ending named "unlink"
            self._end(opened[0], "unlink")
            return
        link = next(n for n, (_, i) in self._links()[bus].items() if i == interface_id)
        self.world.unlink(bus, link)
        for key in [k for k in self.expected if k[:2] == (bus, interface_id)]:
            del self.expected[key]

    @precondition(lambda self: bool(self._devices(typed=False)))
    @rule(data=st.data())
    def remove_device(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self._devices(typed=False)))
        typed = self.world.devices()[name] is not None
        if any(d == name for links in self._links().values() for d, _ in links.values()):
            try:
                self.world.remove_device(name)
            except VbusError as exc:
                assert exc.errno == errno.EBUSY, exc
            else:
                raise AssertionError("a linked device was removed")
            return
        in_use = self.world.class_in_use()
        self.world.remove_device(name)
        if in_use is not None:
            assert self.world.class_in_use() == in_use - typed
        for key in [k for k in self.expected if len(k) == 2 and k[0] == name]:
            del self.expected[key]

    @precondition(lambda self: bool(self._devices()))
    @rule()
    def unload_class_in_use(self) -> None:
        before = self.picture()
        try:
            self.world.unload_class()
        except VbusError as exc:
            assert exc.errno == errno.EBUSY, exc
            self._refused_changing_nothing(before, exc)
        else:
            raise AssertionError("a class with typed devices was unloaded")

    @rule()
    def tear_down_everything(self) -> None:
        """End every open, unlink, remove every device and bus: nothing may remain."""
        self._end_every_open()
        for bus, links in self._links().items():
            for link in links:
                self.world.unlink(bus, link)
        for name in self._devices(typed=False):
            self.world.remove_device(name)
        for name in self._links():
            self.world.remove_bus(name)
        self.expected.clear()
        self._check_idle("the tear-down")
        # an idle class unloads and loads again
        self.world.unload_class()
        self.world.load_class()

    def _after_unmount(self) -> None:
        self.expected.clear()
        self._check_idle("the unmount")

    def _check_idle(self, after: str) -> None:
        assert self.world.class_in_use() in (0, None)
        assert self.world.snapshot() == self.empty_snapshot, f"something is left after {after}"
        assert self.class_state() == self.idle_class_state, (
            f"the class kept state after all its devices were removed ({after})"
        )

    # -- a client's open and close, in the model alone --------------------------------

    @precondition(
        lambda self: (
            isinstance(self.world, ModelWorld)
            and not self.world.data_path
            and bool(self._interfaces())
            and bool(self.instance.versions)
        )
    )
    @rule(data=st.data())
    def open_and_close(self, data: st.DataObject) -> None:
        assert self.vbus is not None
        bus, interface_id, _ = data.draw(st.sampled_from(self._interfaces()))
        version = data.draw(st.sampled_from(sorted(self.instance.versions)))
        before = self.picture()
        try:
            connection = self.vbus.open_interface(bus, interface_id, version)
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
        in_use = self.world.class_in_use()
        assert in_use is None or in_use == len(self._devices())

    @invariant()
    def your_invariants(self) -> None:
        world = self.world
        if not isinstance(world, ModelWorld):
            return
        vbus = world.vbus

        def check() -> None:
            for name in self._devices():
                self.check_device(vbus.device(name))
            for bus, interface_id, _ in self._interfaces():
                self.check_interface(vbus.bus(bus).interfaces[interface_id])

        world.do(check)

    def teardown(self) -> None:
        # Release without asserting: a failure here would hide the step that failed.
        opens, self.opens = self.opens, []
        self._release_quietly(opens)
        if isinstance(self.world, MountWorld):
            self._clear_mount()
        self.world.close()

    def _clear_mount(self) -> None:
        world = self.world
        steps: list[Any] = []
        try:
            for bus, links in self._links().items():
                steps += [lambda b=bus, n=n: world.unlink(b, n) for n in links]
            steps += [lambda d=d: world.remove_device(d) for d in self._devices(typed=False)]
            steps += [lambda b=b: world.remove_bus(b) for b in self._links()]
        except OSError:
            return
        for step in steps:
            with contextlib.suppress(OSError, VbusError):
                step()
