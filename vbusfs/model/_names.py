"""Rules for the names of buses, devices and deviceclasses (three namespaces).

Also the entry names the trees give a directory for itself (reserved: no
attribute and no link may take them), spelled here once for the model, the
views and the testing kit.
"""

from __future__ import annotations

import hashlib

from ._errors import InvalidValue, NameTooLong

NAME_MAX = 255

# The membership file reads this token as "leave", so no bus may be called it.
LEAVE_TOKEN = "0"
# What the membership file reads for a process on no bus; no bus may be called it
# either, so a reader can always tell the two apart (behaviour §6).
NO_BUS = "<none>"

# Entries the trees give a directory for itself, whatever the model holds.
CLASS_ENTRY = "class"  # sys/vbus/devices/<D>/class -> ../../deviceclass/<class>
INTERFACES_ENTRY = "interfaces"  # sys/vbus/devices/<D>/interfaces/
DEVICE_ENTRY = "device"  # sys/vbus/instances/<B>/devices/<id>/device -> the device
# config/vbus/devices/<D>/type reads the deviceclass; sys/.../devices/<id>/type the
# interface type (behaviour §3 names both files `type`)
TYPE_ENTRY = "type"
PERMS_ENTRY = "perms"  # config/vbus/instances/<B>/perms/

# Reserved per directory, in the order the views list them: a device's sys
# directory, an interface's sys directory (no attribute may take these), and a
# bus's config directory (no link may take these).
DEVICE_ENTRIES = (CLASS_ENTRY, INTERFACES_ENTRY)
INTERFACE_ENTRIES = (DEVICE_ENTRY, TYPE_ENTRY)
BUS_ENTRIES = (PERMS_ENTRY,)


# A qualified interface entry name too long for NAME_MAX keeps this many hex digits of the
# SHA-256 of its whole bus name, after a `~`.
DIGEST_DIGITS = 16


def qualified_interface_name(bus_name: str, interface_id: int) -> str:
    """`<bus>.<id>`, the entry name under `interfaces/` of a device on several buses.

    Within NAME_MAX however long the bus name: one that would not fit keeps the longest
    prefix of the bus name that does (cut between characters) followed by `~` and 16 hex
    digits of the SHA-256 of the whole bus name, so the entry is stable, and two buses
    that share the prefix still differ (behaviour §3).
    """
    whole = f"{bus_name}.{interface_id}"
    if len(whole.encode("utf-8", "surrogateescape")) <= NAME_MAX:
        return whole
    raw = bus_name.encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(raw).hexdigest()[:DIGEST_DIGITS]
    tail = f"~{digest}.{interface_id}"
    cut = NAME_MAX - len(tail)
    while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:
        cut -= 1  # not inside a UTF-8 character
    return raw[:cut].decode("utf-8", "surrogateescape") + tail


def check_name(name: str, what: str) -> None:
    """Refuse a name no directory entry could carry."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > NAME_MAX:
        raise NameTooLong(f"{what} name is longer than {NAME_MAX} bytes")
    if not encoded or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidValue(f"{what} name {name!r} is not a valid name")


def check_bus_name(name: str) -> None:
    check_name(name, "bus")
    if name == LEAVE_TOKEN:
        raise InvalidValue(f"bus name {LEAVE_TOKEN!r} is reserved for leaving a bus")
    if name == NO_BUS:
        raise InvalidValue(f"bus name {NO_BUS!r} is reserved: the membership file reads it")
