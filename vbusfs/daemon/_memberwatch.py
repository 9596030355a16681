"""Membership changes nobody wrote, for monitors: forks, exits and moves.

A write of `proc/<pid>/vbus` is published by the model as it happens (`how="write"`). The
rest happens without a request: a child forked after its parent joined is a member from
its birth, a member that exits is one no longer, and a process can be put into another
bus's cgroup by hand. `MemberWatch` finds those by comparing the members the backend
reports at each sweep with the last ones it saw, and publishes each difference as a
`MembershipChanged` whose `how` is "fork", "exit" or "moved". It works only while someone
listens (`active`): with no monitor it costs nothing, and its first look when one arrives
(the connector calls `sweep` then) takes the members as they are, reporting nothing from
before.
"""

from __future__ import annotations

from collections.abc import Callable

from vbusfs.model import Change, MembershipChanged, ProcessInfo, Vbus

Key = tuple[int, int]  # (pid, start time): a recycled pid is another process


class MemberWatch:
    """Compares each sweep's members with the last, publishing what changed."""

    def __init__(self, vbus: Vbus, active: Callable[[], bool]) -> None:
        self.vbus = vbus
        self.active = active
        self._known: dict[Key, str] | None = None  # None: not watching
        self._unsubscribe = vbus.changes.subscribe(self._heard)

    def close(self) -> None:
        self._unsubscribe()

    def _info(self, pid: int) -> ProcessInfo | None:
        membership = self.vbus.membership
        return membership.table.info(pid) if membership is not None else None

    def _heard(self, change: Change) -> None:
        """A write the model published: known now, so the sweep does not report it again."""
        if self._known is None or not isinstance(change, MembershipChanged):
            return
        if change.how != "write":
            return
        info = self._info(change.pid)
        if info is None:
            return
        if change.joined is None:
            self._known.pop((change.pid, info.start), None)
        else:
            self._known[change.pid, info.start] = change.joined

    def sweep(self) -> None:
        """Publish the changes since the last sweep (only while `active`)."""
        membership = self.vbus.membership
        if membership is None or not self.active():
            self._known = None
            return
        now: dict[Key, str] = {}
        parents: dict[Key, int] = {}  # each member's ppid, from the same read, for the fork test
        for pid, bus in membership.members().items():
            info = self._info(pid)
            if info is not None:
                now[pid, info.start] = bus
                parents[pid, info.start] = info.ppid
        known, self._known = self._known, now
        if known is None:
            return  # the first look: nothing to compare with
        publish = self.vbus.changes.publish
        for key, bus in known.items():
            if now.get(key) == bus:
                continue
            joined = now.get(key)
            if joined is not None:
                publish(MembershipChanged(key[0], bus, joined, "moved"))
            else:
                # no longer a member: the same process still alive left by other means
                info = self._info(key[0])
                how = "moved" if info is not None and info.start == key[1] else "exit"
                publish(MembershipChanged(key[0], bus, None, how))
        buses = {pid: bus for (pid, _), bus in (known | now).items()}
        for key, bus in now.items():
            if key not in known:
                # born into its parent's bus, or put there by other means
                how = "fork" if buses.get(parents[key]) == bus else "moved"
                publish(MembershipChanged(key[0], None, bus, how))
