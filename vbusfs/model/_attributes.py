"""Attribute tables: one declaration per attribute (name, mode, show, store).

A deviceclass declares its attributes once; the sys view, the validation and
the documentation all come from that declaration. `show` renders the value
without the trailing newline; `store` validates, then changes state, and
raises a `VbusError` (changing nothing) when the value is refused. Both
receive the state of the attribute's owner (a device or an interface).
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
    """One attribute file: `mode` is 0o644 when `store` is given, else 0o444."""

    name: str
    show: Show
    store: Store | None = None
    doc: str = ""

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
    return index
