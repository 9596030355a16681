"""Attribute tables: one declaration per attribute (name, mode, show, store).

A deviceclass declares its attributes once; the sys view, the validation and
the documentation all come from that declaration. `show` renders the value
without the trailing newline; `store` validates, then changes state, and
raises a `VbusError` (changing nothing) when the value is refused. Both
receive the state of the attribute's owner (a device or an interface).

Attributes are independent unless declared otherwise: `affects` names the
other attributes of the same table whose value a store of this one may
change (a `backing` that sets `size`, an `enabled` that names an `ifname`).
The conformance machine (vbusfs.testing) holds a class to that: a store may
change the stored attribute and those it declares, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import AccessDenied

Show = Callable[[Any], str]
Store = Callable[[Any, str], None]


def attribute_mode(writable: bool) -> int:
    """An attribute file's mode (behaviour §3): 0644 when it stores, else 0444."""
    return 0o644 if writable else 0o444


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute file: `mode` is 0o644 when `store` is given, else 0o444.

    `affects`: the names of other attributes of the same table a store of this
    one may change (checked when the table is loaded: each must exist).
    """

    name: str
    show: Show
    store: Store | None = None
    doc: str = ""
    affects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a bare string would read as one name per character
        if isinstance(self.affects, str) or not isinstance(self.affects, tuple):
            raise TypeError(f"{self.name}: affects must be a tuple of attribute names")

    @property
    def mode(self) -> int:
        return attribute_mode(self.writable)

    @property
    def writable(self) -> bool:
        return self.store is not None

    def write(self, state: Any, value: str) -> None:
        if self.store is None:
            raise AccessDenied(f"{self.name} is read-only")
        self.store(state, value)


AttributeTable = tuple[Attribute, ...]


def table_index(table: AttributeTable) -> dict[str, Attribute]:
    index = {a.name: a for a in table}
    if len(index) != len(table):
        raise ValueError("attribute names in a table must be unique")
    for attribute in table:
        unknown = [n for n in attribute.affects if n not in index or n == attribute.name]
        if unknown:
            raise ValueError(
                f"{attribute.name} declares it affects {unknown}: not other attributes of its table"
            )
        if attribute.affects and not attribute.writable:
            raise ValueError(f"{attribute.name} is read-only: a store of it affects nothing")
    return index
