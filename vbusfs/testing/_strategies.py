"""Hypothesis strategies for vbus names, MAC addresses, attribute values and topologies.

Names (behaviour §2): `names(kind)` draws names the model accepts for a bus,
a device, a link or a deviceclass (1 to 255 UTF-8 bytes, no `/` or NUL, not
`.` or `..`, and for a bus not the reserved `0`); `invalid_names(kind)` draws
`InvalidName(text, errno)` pairs the model refuses with that errno. Only the
too-long names and the bus name `0` reach vbusfs unchanged through a mount
(`InvalidName.through_mount`); the kernel answers the others itself.

MAC addresses (behaviour §4): `mac_addresses()` draws every text form a
`client_mac` accepts (six hex octets of one or two digits, either case,
separated by `:`); `canonical_mac(text)` is what the attribute then reads;
`invalid_mac_addresses()` draws forms it refuses with EINVAL.

Attribute values: `AttributeValues(valid, invalid, shows)` describes one
writable attribute: a strategy of values it must accept, one of values it
must refuse with EINVAL, and what it reads after storing a valid value.
`attribute_values(class_name)` and `interface_attribute_values(class_name)`
give the tables of the built-in venet classes; write your own table for your
class (it is what `DeviceClassConformance.values` takes). Invalid values
never end in a newline and are never empty: through a mount one trailing
newline is stripped and an empty write stores nothing, so such values would
mean different things to the model and to a mount.

Topologies: `topology_plans()` draws a `Plan`, a tuple of steps (`CreateBus`,
`CreateDevice`, `SetType`, `StoreAttribute`, `Link`, `StoreInterfaceAttribute`)
that all succeed, in order, on an empty vbus; `apply_plan(vbus, plan)` applies
it through the `Vbus` API and `apply_plan_to_mount(path, plan)` through file
system calls on a live mount. `topologies()` draws a populated model.

Every strategy here is pure: drawing never touches the host.
"""

from __future__ import annotations

import errno as _errno
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hypothesis import strategies as st

from vbusfs.classes import BUILTIN_CLASSES
from vbusfs.model import BUS_ENTRIES, LEAVE_TOKEN, NAME_MAX, TYPE_ENTRY, DeviceClass, Vbus

from ._fakes import host_free_model
from ._values import AttributeValues, choice_values, integer_values

KINDS = ("bus", "device", "link", "deviceclass")
U32_MAX = (1 << 32) - 1

# -- names --------------------------------------------------------------------

_NAME_CHARACTERS = st.characters(codec="utf-8", exclude_characters="/\0")
#: A small, shell-friendly alphabet, for names a person reads in a failing example.
SIMPLE_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"


def _fit(text: str, max_bytes: int = NAME_MAX) -> str:
    """`text` cut at a character boundary to at most `max_bytes` UTF-8 bytes."""
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    return text


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")


def _acceptable(kind: str) -> Callable[[str], bool]:
    def acceptable(name: str) -> bool:
        if not name or name in (".", ".."):
            return False
        if kind == "link" and name in BUS_ENTRIES:
            return False
        return not (kind == "bus" and name == LEAVE_TOKEN)

    return acceptable


def names(
    kind: str = "device",
    *,
    alphabet: st.SearchStrategy[str] | str | None = None,
    max_size: int | None = None,
) -> st.SearchStrategy[str]:
    """Names the model accepts for `kind` ('bus', 'device', 'link' or 'deviceclass').

    By default any character but `/` and NUL, and now and then a name of
    exactly 255 bytes (multi-byte characters included). Link names are never
    `perms`, the entry every bus directory already holds. Give `alphabet`
    (e.g. `SIMPLE_NAME_ALPHABET`) and `max_size` (in characters) for small names.
    """
    _check_kind(kind)
    chars = _NAME_CHARACTERS if alphabet is None else alphabet
    if max_size is not None:
        drawn = st.text(chars, min_size=1, max_size=max_size)
    else:
        longest = st.text(chars, min_size=NAME_MAX, max_size=NAME_MAX).map(_fit)
        drawn = st.one_of(st.text(chars, min_size=1, max_size=32).map(_fit), longest)
    return drawn.filter(_acceptable(kind))


class InvalidName(NamedTuple):
    """A name the model refuses, and the errno it refuses it with."""

    text: str
    errno: int

    @property
    def through_mount(self) -> bool:
        """Whether vbusfs itself answers this name through a mount (not the kernel)."""
        return self.errno == _errno.ENAMETOOLONG or self.text == LEAVE_TOKEN


def invalid_names(kind: str = "device") -> st.SearchStrategy[InvalidName]:
    """Names the model refuses for `kind`, each with the errno of the refusal."""
    _check_kind(kind)
    valid = names(kind, max_size=16)
    einval = st.one_of(
        st.sampled_from(["", ".", ".."]),
        st.tuples(valid, valid).map(lambda pair: f"{pair[0]}/{pair[1]}"),
        st.sampled_from(["/", "a/", "/a"]),
        st.tuples(valid, valid).map(lambda pair: f"{pair[0]}\0{pair[1]}"),
    )
    if kind == "bus":
        einval = st.one_of(einval, st.just(LEAVE_TOKEN))
    too_long = st.one_of(
        st.integers(NAME_MAX + 1, 4 * NAME_MAX).map(lambda n: "n" * n),
        # 128 two-byte characters: 128 characters, 256 bytes
        st.text(st.characters(min_codepoint=0x80, max_codepoint=0x7FF), min_size=128),
    )
    return st.one_of(
        einval.map(lambda text: InvalidName(text, _errno.EINVAL)),
        too_long.map(lambda text: InvalidName(text, _errno.ENAMETOOLONG)),
    )


# -- MAC addresses ------------------------------------------------------------

_MAC_TEXT = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")
_HEX = "0123456789abcdefABCDEF"


@st.composite
def _octet_text(draw: st.DrawFn) -> str:
    octet = draw(st.integers(0, 255))
    text = f"{octet:02x}" if octet >= 16 or draw(st.booleans()) else f"{octet:x}"
    return "".join(c.upper() if draw(st.booleans()) else c for c in text)


def mac_addresses() -> st.SearchStrategy[str]:
    """Every text form `client_mac` accepts: six octets of 1-2 hex digits, either case."""
    return st.lists(_octet_text(), min_size=6, max_size=6).map(":".join)


def mac_bytes() -> st.SearchStrategy[bytes]:
    """Six raw octets, any value (`canonical_mac(":".join(...))` renders one)."""
    return st.binary(min_size=6, max_size=6)


def canonical_mac(text: str) -> str:
    """What a MAC attribute reads after `text` (a valid form) was stored: `xx:..:xx`."""
    return ":".join(f"{int(part, 16):02x}" for part in text.split(":"))


def _not_a_mac(text: str) -> bool:
    return bool(text) and not text.endswith("\n") and not _MAC_TEXT.fullmatch(text)


def invalid_mac_addresses() -> st.SearchStrategy[str]:
    """Text a MAC attribute refuses with EINVAL (never empty, never newline-terminated)."""
    octets = st.lists(_octet_text(), min_size=0, max_size=9)
    wrong_count = octets.filter(lambda o: len(o) != 6).map(":".join)
    six = st.lists(_octet_text(), min_size=6, max_size=6)
    wrong_separator = st.tuples(six, st.sampled_from(["-", ".", "", " ", "::", ";"])).map(
        lambda pair: pair[1].join(pair[0])
    )
    bad_octet = st.tuples(
        six,
        st.integers(0, 5),
        st.one_of(
            st.text(st.sampled_from(_HEX), min_size=3, max_size=5),  # too many digits
            st.text(st.characters(exclude_characters=_HEX + ":"), min_size=1, max_size=2),
            st.just(""),
        ),
    ).map(lambda t: ":".join([*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]]))
    padded = st.tuples(mac_addresses(), st.sampled_from([" ", "\t", ":", "0x"])).flatmap(
        lambda pair: st.sampled_from([pair[1] + pair[0], pair[0] + pair[1]])
    )
    junk = st.text(max_size=24)
    return st.one_of(wrong_count, wrong_separator, bad_octet, padded, junk).filter(_not_a_mac)


# -- attribute values -----------------------------------------------------------


MAC_VALUES = AttributeValues(mac_addresses(), invalid_mac_addresses(), canonical_mac)
BOOL_VALUES = choice_values(["0", "1"])
U32_VALUES = integer_values(0, U32_MAX)

MTU_VALUES = integer_values(68, 65535)
# every venet class's data-path settings (behaviour §4)
_TUNING = {"mtu": MTU_VALUES, "burstthresh": U32_VALUES, "txmitigation": U32_VALUES}

_DEVICE_VALUES: dict[str, dict[str, AttributeValues]] = {
    "venet-tap": {"client_mac": MAC_VALUES, "enabled": BOOL_VALUES, **_TUNING},
    "venet-loopback": {"client_mac": MAC_VALUES, "enabled": BOOL_VALUES, **_TUNING},
    "venet-switch": dict(_TUNING),
}
_INTERFACE_VALUES: dict[str, dict[str, AttributeValues]] = {
    "venet-tap": {},
    "venet-loopback": {},
    "venet-switch": {"client_mac": MAC_VALUES},
}


def attribute_values(class_name: str) -> dict[str, AttributeValues]:
    """The writable device attributes of a built-in class, with their values."""
    if class_name not in _DEVICE_VALUES:
        raise KeyError(f"{class_name!r} is not a built-in deviceclass")
    return dict(_DEVICE_VALUES[class_name])


def interface_attribute_values(class_name: str) -> dict[str, AttributeValues]:
    """The writable interface attributes of a built-in class, with their values."""
    if class_name not in _INTERFACE_VALUES:
        raise KeyError(f"{class_name!r} is not a built-in deviceclass")
    return dict(_INTERFACE_VALUES[class_name])


# -- topologies -------------------------------------------------------------------


@dataclass(frozen=True)
class CreateBus:
    name: str


@dataclass(frozen=True)
class CreateDevice:
    name: str


@dataclass(frozen=True)
class SetType:
    device: str
    deviceclass: str


@dataclass(frozen=True)
class StoreAttribute:
    device: str
    attribute: str
    value: str


@dataclass(frozen=True)
class Link:
    """Put `device` on `bus` under the entry `link`; it becomes interface `interface_id`."""

    bus: str
    link: str
    device: str
    interface_id: int


@dataclass(frozen=True)
class StoreInterfaceAttribute:
    bus: str
    interface_id: int
    attribute: str
    value: str


Step = CreateBus | CreateDevice | SetType | StoreAttribute | Link | StoreInterfaceAttribute
Plan = tuple[Step, ...]

# venet-tap's `enabled` makes a host TAP interface through a mount: left out unless asked for
HOST_ATTRIBUTES = frozenset({("venet-tap", "enabled")})


@st.composite
def topology_plans(
    draw: st.DrawFn,
    *,
    classes: Sequence[type[DeviceClass]] = BUILTIN_CLASSES,
    values: Mapping[str, Mapping[str, AttributeValues]] | None = None,
    interface_values: Mapping[str, Mapping[str, AttributeValues]] | None = None,
    bus_names: st.SearchStrategy[str] | None = None,
    device_names: st.SearchStrategy[str] | None = None,
    max_buses: int = 4,
    max_devices: int = 6,
    untyped: bool = True,
    skip_attributes: frozenset[tuple[str, str]] = HOST_ATTRIBUTES,
) -> Plan:
    """A plan that builds buses, devices of `classes` with attribute values, and links.

    Every step succeeds, in order, on an empty vbus with `classes` loaded.
    `values` and `interface_values` map a class name to its attribute table
    (default: the built-in tables; a class with none gets no stores);
    `skip_attributes` holds (class, attribute) pairs never written.
    With `untyped`, some devices stay untyped.
    """
    device_values = values if values is not None else _DEVICE_VALUES
    iface_values = interface_values if interface_values is not None else _INTERFACE_VALUES
    bus_names = bus_names or names("bus", alphabet=SIMPLE_NAME_ALPHABET, max_size=8)
    device_names = device_names or names("device", alphabet=SIMPLE_NAME_ALPHABET, max_size=8)
    by_name = {cls.name: cls for cls in classes}
    class_choices: list[str | None] = [*sorted(by_name)]
    if untyped:
        class_choices.append(None)

    steps: list[Step] = []
    buses = draw(st.lists(bus_names, max_size=max_buses, unique=True))
    steps += [CreateBus(b) for b in buses]
    devices = draw(st.lists(device_names, max_size=max_devices, unique=True))
    next_id = dict.fromkeys(buses, 0)
    for device in devices:
        steps.append(CreateDevice(device))
        class_name = draw(st.sampled_from(class_choices)) if class_choices else None
        if class_name is None:
            continue
        steps.append(SetType(device, class_name))
        for attribute, spec in sorted(device_values.get(class_name, {}).items()):
            if (class_name, attribute) not in skip_attributes and draw(st.booleans()):
                steps.append(StoreAttribute(device, attribute, draw(spec.valid)))
        if not buses:
            continue
        if by_name[class_name].multi_bus:
            on = draw(st.lists(st.sampled_from(buses), unique=True))
        else:
            on = draw(st.lists(st.sampled_from(buses), max_size=1))
        for bus in on:
            taken = {s.link for s in steps if isinstance(s, Link) and s.bus == bus}
            taken.update(BUS_ENTRIES)
            link = device if device not in taken else f"{device}.{next_id[bus]}"
            if link in taken:
                continue
            steps.append(Link(bus, link, device, next_id[bus]))
            for attribute, spec in sorted(iface_values.get(class_name, {}).items()):
                if (class_name, attribute) not in skip_attributes and draw(st.booleans()):
                    value = draw(spec.valid)
                    steps.append(StoreInterfaceAttribute(bus, next_id[bus], attribute, value))
            next_id[bus] += 1
    return tuple(steps)


def apply_plan(vbus: Vbus, plan: Plan) -> Vbus:
    """Apply every step of `plan` to `vbus` (empty, with the plan's classes loaded)."""
    for step in plan:
        match step:
            case CreateBus(name):
                vbus.create_bus(name)
            case CreateDevice(name):
                vbus.create_device(name)
            case SetType(device, class_name):
                vbus.set_device_type(device, class_name)
            case StoreAttribute(device, attribute, value):
                vbus.store_attribute(vbus.device(device), attribute, value)
            case Link(bus, link, device, interface_id):
                interface = vbus.link(bus, link, device)
                if interface.id != interface_id:
                    raise ValueError(f"{step} made interface {interface.id}: was the bus empty?")
            case StoreInterfaceAttribute(bus, interface_id, attribute, value):
                vbus.store_attribute(vbus.bus(bus).interfaces[interface_id], attribute, value)
    return vbus


def write_value(path: str, value: str) -> None:
    """Store `value` in the file at `path` as `echo` would: in one write, with one
    trailing newline (which the store strips), undecodable bytes kept."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, (value + "\n").encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)


def apply_plan_to_mount(root: str, plan: Plan) -> None:
    """Apply `plan` to the empty vbusfs mounted at `root`, as a shell user would.

    Raises the `OSError` of the first step the mount refuses.
    """
    config = os.path.join(root, "config", "vbus")
    sys_vbus = os.path.join(root, "sys", "vbus")
    for step in plan:
        match step:
            case CreateBus(name):
                os.mkdir(os.path.join(config, "instances", name))
            case CreateDevice(name):
                os.mkdir(os.path.join(config, "devices", name))
            case SetType(device, class_name):
                write_value(os.path.join(config, "devices", device, TYPE_ENTRY), class_name)
            case StoreAttribute(device, attribute, value):
                write_value(os.path.join(sys_vbus, "devices", device, attribute), value)
            case Link(bus, link, device, _):
                target = os.path.join(config, "devices", device)
                os.symlink(target, os.path.join(config, "instances", bus, link))
            case StoreInterfaceAttribute(bus, interface_id, attribute, value):
                where = os.path.join(sys_vbus, "instances", bus, "devices", str(interface_id))
                write_value(os.path.join(where, attribute), value)


@st.composite
def topologies(
    draw: st.DrawFn,
    *,
    model: Callable[[], Vbus] = host_free_model,
    classes: Sequence[type[DeviceClass]] = BUILTIN_CLASSES,
    **plan_options: object,
) -> Vbus:
    """A populated model: a fresh `model()` with a drawn `topology_plans(...)` applied.

    `plan_options` are passed on to `topology_plans`.
    """
    plan = draw(topology_plans(classes=classes, **plan_options))  # type: ignore[arg-type]
    return apply_plan(model(), plan)
