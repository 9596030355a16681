"""The conformance machine's attribute rules: stores valid, invalid and read-only.

A valid store must be accepted (or refused with EBUSY while open, for the
attributes `busy_while_open` names) and read back as its table says; it may
change the attributes it declares it affects and nothing else, and the
machine expects what those read from then on. An invalid store must be
refused with its errno, changing nothing; a read-only attribute refuses every
write with EACCES. Every entry of the example tables is tried at the start of
every program.

`AttributeRules` is a mixin of `DeviceClassConformance` (its rules are
collected from the machine's class); the module holds no state.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from vbusfs.model import Device, DeviceClass, Interface, VbusError

from ._values import AttributeValues
from ._worlds import Owner, is_device

if TYPE_CHECKING:
    from ._conformance_data import Opened
    from ._worlds import ModelWorld, MountWorld

_ANY_TEXT = st.text(max_size=32).filter(lambda t: bool(t) and not t.endswith("\n"))


class AttributeRules:
    """The attribute half of `DeviceClassConformance` (see the module)."""

    #: device attribute -> attributes a store of it may change, beside its declaration's
    affects: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    interface_affects: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: attributes whose reading may change at any time (counters): never compared
    volatile: ClassVar[frozenset[str]] = frozenset()
    #: attributes refused with EBUSY while their device (interface) is open
    busy_while_open: ClassVar[frozenset[str]] = frozenset()

    # what the machine (`DeviceClassConformance`) provides
    world: ModelWorld | MountWorld
    instance: DeviceClass
    values: ClassVar[Mapping[str, AttributeValues]]
    interface_values: ClassVar[Mapping[str, AttributeValues]]
    opens: list[Opened]
    expected: dict[tuple[Any, ...], str]

    def _owners(self) -> list[Owner]:
        raise NotImplementedError

    def _devices(self, typed: bool = True) -> list[str]:
        raise NotImplementedError

    def _interfaces(self) -> list[tuple[str, int, str]]:
        raise NotImplementedError

    def readout(self) -> dict[tuple[Any, ...], str]:
        raise NotImplementedError

    def picture(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _refused_changing_nothing(self, before: tuple[Any, ...], exc: VbusError) -> None:
        raise NotImplementedError

    def _values(self, owner: Owner) -> Mapping[str, AttributeValues]:
        return self.values if is_device(owner) else self.interface_values

    def _store_the_examples(self) -> None:
        """Every entry of every example table, on the first device and its interface."""
        for owner in self._owners():
            for name, spec in sorted(self._values(owner).items()):
                for value in spec.valid_examples:
                    self._store_valid_value(owner, name, spec, value)
                for value in spec.invalid_examples:
                    self._store_invalid_value(owner, name, spec, value)

    def _draw_owner(self, data: st.DataObject, device: bool) -> Owner:
        owners = [o for o in self._owners() if is_device(o) == device]
        return data.draw(st.sampled_from(owners))

    def _has_owner(self, device: bool) -> bool:
        values = self.values if device else self.interface_values
        return bool(values) and any(is_device(o) == device for o in self._owners())

    @precondition(lambda self: self._has_owner(True))
    @rule(data=st.data())
    def store_valid(self, data: st.DataObject) -> None:
        self._store_valid(data, self._draw_owner(data, True))

    @precondition(lambda self: self._has_owner(True))
    @rule(data=st.data())
    def store_invalid(self, data: st.DataObject) -> None:
        self._store_invalid(data, self._draw_owner(data, True))

    @precondition(lambda self: bool(self._devices()))
    @rule(data=st.data())
    def store_read_only(self, data: st.DataObject) -> None:
        self._store_read_only(data, self._draw_owner(data, True))

    @precondition(lambda self: self._has_owner(False))
    @rule(data=st.data())
    def store_interface_valid(self, data: st.DataObject) -> None:
        self._store_valid(data, self._draw_owner(data, False))

    @precondition(lambda self: self._has_owner(False))
    @rule(data=st.data())
    def store_interface_invalid(self, data: st.DataObject) -> None:
        self._store_invalid(data, self._draw_owner(data, False))

    @precondition(lambda self: bool(self._interfaces()))
    @rule(data=st.data())
    def store_interface_read_only(self, data: st.DataObject) -> None:
        self._store_read_only(data, self._draw_owner(data, False))

    def _store_valid(self, data: st.DataObject, owner: Owner) -> None:
        values = self._values(owner)
        names = [n for n in sorted(values) if values[n].valid_values() is not None]
        if names:
            name = data.draw(st.sampled_from(names))
            value = data.draw(values[name].valid_values(), label="value")  # type: ignore[arg-type]
            self._store_valid_value(owner, name, values[name], value)

    def _busy(self, owner: Owner, name: str) -> bool:
        """Is `owner` open now, for an attribute `busy_while_open` names?"""
        if name not in self.busy_while_open:
            return False
        if is_device(owner):
            return any(o.device == owner[0] for o in self.opens)
        return any(o.owner == owner for o in self.opens)

    def _declared_affects(self, owner: Owner, name: str) -> set[str]:
        table = (Device if is_device(owner) else Interface).declared_attributes(self.instance)
        extra = self.affects if is_device(owner) else self.interface_affects
        declared = next((a.affects for a in table if a.name == name), ())
        return set(declared) | set(extra.get(name, ()))

    def _store_valid_value(
        self, owner: Owner, name: str, spec: AttributeValues, value: str
    ) -> None:
        before = self.picture()
        busy = self._busy(owner, name)
        try:
            self.world.store(owner, name, value)
        except VbusError as exc:
            if busy and exc.errno == errno.EBUSY:
                self._refused_changing_nothing(before, exc)
                return
            raise AssertionError(
                f"{owner} {name} refused the valid value {value!r}: {exc!r} "
                f"({errno.errorcode.get(exc.errno)})"
            ) from exc
        if busy:
            raise AssertionError(
                f"{owner} {name} accepted {value!r} while open: busy_while_open says it is "
                "refused with EBUSY then"
            )
        expected = spec.readout(value)
        after = self.readout()
        key = (*owner, name)
        shown = after.get(key)
        assert shown == expected, f"{name} reads {shown!r} after storing {value!r}"
        allowed = self._declared_affects(owner, name)
        for other, text in after.items():
            was = before[1].get(other, text)
            if other == key or was == text:
                continue
            if other[:-1] == owner and other[-1] in allowed:
                self.expected.pop(other, None)  # what it reads now is what it must keep
                self.expected[other] = text
                continue
            raise AssertionError(
                f"storing {value!r} in {owner} {name} changed {other} from {was!r} to "
                f"{text!r}, which {name} does not declare it affects "
                "(Attribute(..., affects=...), or the machine's affects table)"
            )
        self.expected[key] = expected

    def _store_invalid(self, data: st.DataObject, owner: Owner) -> None:
        values = self._values(owner)
        names = [n for n in sorted(values) if values[n].invalid_values() is not None]
        if names:
            name = data.draw(st.sampled_from(names))
            value = data.draw(values[name].invalid_values(), label="value")  # type: ignore[arg-type]
            self._store_invalid_value(owner, name, values[name], value)

    def _store_invalid_value(
        self, owner: Owner, name: str, spec: AttributeValues, value: str
    ) -> None:
        wants = {spec.refusal(value)} | ({errno.EBUSY} if self._busy(owner, name) else set())
        self._expect_refusal(wants, lambda: self.world.store(owner, name, value), name, value)

    def _store_read_only(self, data: st.DataObject, owner: Owner) -> None:
        read_only = sorted(n for n, w in self.world.attributes(owner).items() if not w)
        if not read_only:
            return
        name = data.draw(st.sampled_from(read_only))
        value = data.draw(_ANY_TEXT, label="value")
        self._expect_refusal(
            {errno.EACCES}, lambda: self.world.store(owner, name, value), name, value
        )

    def _expect_refusal(self, wants: set[int], store: Any, name: str, value: str) -> None:
        before = self.picture()
        try:
            store()
        except VbusError as exc:
            assert exc.errno in wants, (
                f"storing {value!r} in {name} failed with {errno.errorcode.get(exc.errno)}, "
                f"not {' or '.join(errno.errorcode[w] for w in sorted(wants))}"
            )
            self._refused_changing_nothing(before, exc)
        else:
            raise AssertionError(f"{name} accepted {value!r}: it must refuse it")
