"""How one caller sees pids: the translation between its pid namespace and the daemon's.

SPEC 6 reads every pid a caller writes, looks up or lists under `proc/` and `members/`
in the caller's pid namespace. The model and the views keep daemon-namespace pids only;
a `PidView` turns the caller's numbers into the daemon's (`inward`) and back
(`outward`), and says which number the caller has itself (`own`, what `proc/self`
names). The daemon makes views (`vbusfs.daemon.PidNamespaces`); this module holds the
contract and the views that need no kernel: the identity (a caller in the daemon's own
namespace), the blind view (a caller whose namespace the daemon cannot see into) and a
table for tests. Pure: no I/O, no knowledge of how a view was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

# The kernel's largest possible pid (PID_MAX_LIMIT on 64-bit, 2**22). A number outside
# 1..PID_MAX_LIMIT names no process in any namespace; checking it here also keeps a
# huge number from reaching an ioctl that would truncate it to some other pid.
PID_MAX_LIMIT = 4_194_304


def plausible_pid(pid: int) -> bool:
    """Whether `pid` could name a process at all (1..PID_MAX_LIMIT)."""
    return 0 < pid <= PID_MAX_LIMIT


class PidView(Protocol):
    """One caller's pid namespace, as the daemon translates it.

    `own`: the caller's own process id as its namespace sees it (what `proc/self`
    resolves to), None when it is unknown (the caller is gone, or its namespace is not
    one the daemon can see into).

    `inward(pid)`: the daemon-namespace pid of the process the caller calls `pid`, None
    when the caller's namespace has no such pid. A view backed by the kernel answers
    with the thread group of a thread id; the identity view returns `pid` as given, so a
    caller of `inward` that needs the process still resolves the thread group in the
    daemon's namespace (which is a no-op on a thread-group id).

    `outward(pid)`: the number the caller sees for daemon-namespace pid `pid` (its
    thread group's, for a kernel-backed view), None when that process is not visible
    in the caller's namespace: such a pid must be left out of the caller's listings.

    Neither direction says whether the process is alive, a member or anything else:
    that is the process table's business. Both answer None for a number that cannot
    be a pid (`plausible_pid`).
    """

    @property
    def own(self) -> int | None: ...

    def inward(self, pid: int) -> int | None: ...

    def outward(self, pid: int) -> int | None: ...


@dataclass(frozen=True)
class IdentityView:
    """A caller in the daemon's own pid namespace: every pid means itself."""

    own: int | None = None

    def inward(self, pid: int) -> int | None:
        return pid if plausible_pid(pid) else None

    def outward(self, pid: int) -> int | None:
        return pid if plausible_pid(pid) else None


@dataclass(frozen=True)
class BlindView:
    """A caller that sees no process of the daemon's: every translation is None.

    FUSE gives pid 0 for a caller whose pid namespace is not the daemon's or one of its
    descendants (and SO_PEERCRED does the same); such a caller can name no process.
    """

    @property
    def own(self) -> int | None:
        return None

    def inward(self, pid: int) -> int | None:
        return None

    def outward(self, pid: int) -> int | None:
        return None


BLIND = BlindView()


@dataclass(frozen=True)
class TableView:
    """A view given as a table: `inner` maps the caller's pids to the daemon's.

    For tests of the views and the model, which must not need a pid namespace: a pid
    missing from the table is not visible, in either direction.
    """

    own: int | None
    inner: Mapping[int, int]
    _outer: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        outer = {daemon: caller for caller, daemon in self.inner.items()}
        if len(outer) != len(self.inner):
            raise ValueError("two of the caller's pids map to one daemon pid")
        object.__setattr__(self, "_outer", outer)

    def inward(self, pid: int) -> int | None:
        return self.inner.get(pid) if plausible_pid(pid) else None

    def outward(self, pid: int) -> int | None:
        return self._outer.get(pid) if plausible_pid(pid) else None
