"""Rules for the names of buses, devices and deviceclasses (three namespaces)."""

from __future__ import annotations

from ._errors import InvalidValue, NameTooLong

NAME_MAX = 255

# The membership file reads this token as "leave", so no bus may be called it.
LEAVE_TOKEN = "0"


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
