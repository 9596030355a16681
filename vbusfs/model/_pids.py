"""How one caller sees process ids (placeholder until the pid-namespace branch lands)."""

from __future__ import annotations

from typing import Protocol


class PidView(Protocol):
    own: int | None

    def inward(self, pid: int) -> int | None: ...

    def outward(self, pid: int) -> int | None: ...


class IdentityView:
    def __init__(self, own: int | None) -> None:
        self.own = own

    def inward(self, pid: int) -> int | None:
        return pid

    def outward(self, pid: int) -> int | None:
        return pid
