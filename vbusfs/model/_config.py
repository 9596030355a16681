"""The whole configuration as plain data, and back: what `vbusfs save` writes.

Classes, devices with their types and writable attributes, buses with their
id counters and perms (owner, group, mode), and links with their interface
ids; never members (processes do not outlive a daemon). A bus saved before
buses had perms (the same format version 1, without the `perms` key) is
restored owned by root with mode 0700: only root may join it until an
administrator opens it. `restore` rebuilds a model exactly, interface ids
included, or refuses with a message that says what is wrong and changes
nothing.
"""

from __future__ import annotations

from typing import Any

from ._errors import InvalidValue, VbusError
from ._objects import AttributeOwner
from ._perms import PERMS_ATTRIBUTES
from ._vbus import Vbus

FORMAT = "vbusfs-config"
VERSION = 1


def _stored_values(vbus: Vbus, owner: AttributeOwner) -> dict[str, str]:
    """What a device's or an interface's writable attributes read: what restore stores."""
    return {
        name: attr.show(owner.state)
        for name, attr in vbus.attributes(owner).items()
        if attr.writable
    }


def _store_values(vbus: Vbus, owner: AttributeOwner, values: dict[str, Any]) -> None:
    for name, value in values.items():
        vbus.store_attribute(owner, name, str(value))


def dump(vbus: Vbus) -> dict[str, Any]:
    devices = []
    for device in vbus.devices.values():
        entry: dict[str, Any] = {"name": device.name, "type": None}
        if device.deviceclass is not None:
            entry["type"] = device.deviceclass.name
            entry["attributes"] = _stored_values(vbus, device)
        devices.append(entry)
    buses = []
    for bus in vbus.buses.values():
        links = []
        for link_name, interface in bus.links.items():
            link: dict[str, Any] = {
                "name": link_name,
                "device": interface.device.name,
                "id": interface.id,
            }
            attrs = _stored_values(vbus, interface)
            if attrs:
                link["attributes"] = attrs
            links.append(link)
        perms = {attr.name: attr.show(bus) for attr in PERMS_ATTRIBUTES}
        buses.append({"name": bus.name, "next_id": bus.next_id, "perms": perms, "links": links})
    return {
        "format": FORMAT,
        "version": VERSION,
        "classes": sorted(vbus.classes),
        "devices": devices,
        "buses": buses,
    }


class ConfigError(InvalidValue):
    """A saved configuration that cannot be restored; the message says why."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(data: Any) -> None:
    """Check the shape of a saved configuration before anything is built from it."""
    _require(isinstance(data, dict), "the configuration is not a JSON object")
    _require(
        data.get("format") == FORMAT, f"not a {FORMAT} file (format is {data.get('format')!r})"
    )
    _require(data.get("version") == VERSION, f"unsupported version {data.get('version')!r}")
    for key in ("classes", "devices", "buses"):
        _require(isinstance(data.get(key), list), f"{key!r} must be a list")
    for i, device in enumerate(data["devices"]):
        _require(
            isinstance(device, dict) and isinstance(device.get("name"), str),
            f"devices[{i}] needs a name",
        )
        _require(
            device.get("type") is None or isinstance(device["type"], str),
            f"devices[{i}].type must be a class name or null",
        )
        _require(
            isinstance(device.get("attributes", {}), dict),
            f"devices[{i}].attributes must be an object",
        )
    for i, bus in enumerate(data["buses"]):
        _require(
            isinstance(bus, dict) and isinstance(bus.get("name"), str), f"buses[{i}] needs a name"
        )
        _require(
            isinstance(bus.get("next_id"), int) and bus["next_id"] >= 0,
            f"buses[{i}].next_id must be a non-negative integer",
        )
        _require(isinstance(bus.get("links"), list), f"buses[{i}].links must be a list")
        perms = bus.get("perms", {})
        _require(
            isinstance(perms, dict)
            and set(perms) <= {attr.name for attr in PERMS_ATTRIBUTES}
            and all(isinstance(value, str) for value in perms.values()),
            f"buses[{i}].perms must be an object of owner, group and mode strings",
        )
        for j, link in enumerate(bus["links"]):
            where = f"buses[{i}].links[{j}]"
            _require(isinstance(link, dict), f"{where} must be an object")
            _require(
                isinstance(link.get("name"), str) and isinstance(link.get("device"), str),
                f"{where} needs a name and a device",
            )
            _require(
                isinstance(link.get("id"), int) and 0 <= link["id"] < bus["next_id"],
                f"{where}.id must be below the bus's next_id",
            )


def restore(vbus: Vbus, data: Any) -> None:
    """Rebuild `data` into an empty model; on any error the model is left empty."""
    validate(data)
    _require(not vbus.devices and not vbus.buses, "the model is not empty")
    missing = sorted(set(data["classes"]) - set(vbus.classes))
    _require(not missing, f"deviceclasses not loaded here: {', '.join(missing)}")
    try:
        for device in data["devices"]:
            vbus.create_device(device["name"])
            if device["type"] is not None:
                vbus.set_device_type(device["name"], device["type"])
                _store_values(vbus, vbus.devices[device["name"]], device.get("attributes", {}))
        for bus in data["buses"]:
            created = vbus.create_bus(bus["name"])
            for name, value in bus.get("perms", {}).items():
                vbus.store_perm(created, name, value)  # malformed: EINVAL, all undone
            for link in sorted(bus["links"], key=lambda item: item["id"]):
                interface = vbus.link(
                    bus["name"], link["name"], link["device"], interface_id=link["id"]
                )
                _store_values(vbus, interface, link.get("attributes", {}))
            vbus.buses[bus["name"]].next_id = bus["next_id"]
    except VbusError as exc:
        vbus.clear()
        raise ConfigError(f"cannot restore: {exc}") from None


def snapshot(vbus: Vbus) -> dict[str, Any]:
    """A plain-data picture of the configuration, for comparisons and tests."""
    return {
        "classes": sorted(vbus.classes),
        "devices": {
            d.name: {
                "type": d.deviceclass.name if d.deviceclass else None,
                "interfaces": {n: (i.bus.name, i.id) for n, i in d.interfaces.items()},
            }
            for d in vbus.devices.values()
        },
        "buses": {
            b.name: {
                "next_id": b.next_id,
                "perms": (b.perms.owner, b.perms.group, b.perms.mode),
                "links": {n: (i.device.name, i.id) for n, i in b.links.items()},
            }
            for b in vbus.buses.values()
        },
    }
