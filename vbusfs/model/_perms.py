"""Who may join a bus: its owner uid, group gid and mode (behaviour §6).

A bus's `perms/` directory holds three attribute files, declared here once as
a table whose state is the `Bus`: `owner` (decimal uid), `group` (decimal gid)
and `mode` (octal, up to 0777, shown as `0700`). The mode reads like a
directory's: the search bit (x) of the caller's class is the right to join the
bus and to open its devices; the read and write bits are kept and shown but
nothing consults them. The class is chosen as the kernel chooses it for a
file: the owner's bits for the owner, else the group's bits for a member of
the group, else the others' bits; uid 0 may always join.

Pure: the caller supplies the credentials (read from the kernel elsewhere).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from ._attributes import Attribute, AttributeTable, table_index
from ._errors import InvalidValue

ROOT = 0
# uid_t and gid_t are 32 bits; (uid_t)-1 means "no change" to chown(2), so it is no id
MAX_ID = (1 << 32) - 2
MAX_MODE = 0o777
# only root and the bus's creator may join until someone says otherwise
DEFAULT_MODE = 0o700
# the search bit of each class: the right to join
JOIN_OWNER, JOIN_GROUP, JOIN_OTHER = 0o100, 0o010, 0o001

OWNER_ENTRY, GROUP_ENTRY, MODE_ENTRY = "owner", "group", "mode"


@dataclass(frozen=True, slots=True)
class BusPerms:
    """A bus's access attributes; replaced whole, never changed in place."""

    owner: int = ROOT
    group: int = ROOT
    mode: int = DEFAULT_MODE

    def may_join(self, uid: int, gids: Collection[int]) -> bool:
        """May a process with effective `uid` and groups `gids` join (and use) the bus?"""
        if uid == ROOT:
            return True
        if uid == self.owner:
            return bool(self.mode & JOIN_OWNER)
        if self.group in gids:
            return bool(self.mode & JOIN_GROUP)
        return bool(self.mode & JOIN_OTHER)

    def decided_by_uid(self, uid: int) -> bool:
        """True when `may_join` does not need the groups of `uid` (root, or the owner)."""
        return uid in (ROOT, self.owner)


def show_mode(mode: int) -> str:
    return f"{mode:04o}"


def parse_id(text: str, what: str) -> int:
    """A decimal uid or gid, 0 to 2^32-2; InvalidValue otherwise."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InvalidValue(f"{what} must be a decimal number, not {text[:32]!r}")
    value = int(text)
    if value > MAX_ID:
        raise InvalidValue(f"{what} {value} is out of range (0 to {MAX_ID})")
    return value


def parse_mode(text: str) -> int:
    """An octal mode, with or without a leading 0, at most 0777; InvalidValue otherwise."""
    if not text or len(text) > 4 or not all(c in "01234567" for c in text):
        raise InvalidValue(f"mode must be an octal number up to 0777, not {text[:32]!r}")
    value = int(text, 8)
    if value > MAX_MODE:
        raise InvalidValue(f"mode {text} is more than 0777")
    return value


def _store_owner(bus: Any, value: str) -> None:
    bus.perms = replace(bus.perms, owner=parse_id(value, "owner"))


def _store_group(bus: Any, value: str) -> None:
    bus.perms = replace(bus.perms, group=parse_id(value, "group"))


def _store_mode(bus: Any, value: str) -> None:
    bus.perms = replace(bus.perms, mode=parse_mode(value))


# the files of config/vbus/instances/<B>/perms/, in the order they are listed
PERMS_ATTRIBUTES: AttributeTable = (
    Attribute(
        OWNER_ENTRY,
        lambda bus: str(bus.perms.owner),
        _store_owner,
        "the bus's owner (decimal uid); with root, the only one who may change perms/",
    ),
    Attribute(
        GROUP_ENTRY,
        lambda bus: str(bus.perms.group),
        _store_group,
        "the bus's group (decimal gid)",
    ),
    Attribute(
        MODE_ENTRY,
        lambda bus: show_mode(bus.perms.mode),
        _store_mode,
        "octal; each class's x bit (0100 owner, 0010 group, 0001 others) lets it join",
    ),
)
PERMS_INDEX = table_index(PERMS_ATTRIBUTES)


def perms_text(perms: BusPerms) -> str:
    """How messages show a bus's perms: `owner 0 group 0 mode 0700`."""
    return f"owner {perms.owner} group {perms.group} mode {show_mode(perms.mode)}"
