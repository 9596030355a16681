"""What happens in a model, as typed events: one publisher, any number of subscribers.

Two streams leave the model. `Event` (an interface added to or dropped from a bus) is
what connected clients hear, through `Vbus.subscribe`. `Change` is everything that
changes what the trees show (an object made or removed, a type set, a link, a store, a
deviceclass's own `notify`, a membership): the FUSE adapter wakes the pollers of
attribute files with it, and a monitor can print it. `Changes` publishes them.

Publishing never blocks and never fails the model: a subscriber is called inline, in
the model's thread, must return at once (append to a bounded buffer, wake a poller), and
an exception it raises is kept in `faults`, never raised into the operation that
changed the model. A deviceclass's `notify` may come from any thread (a device's
`serve` loop): `Notices` collects those and hands them to the model's thread in one
call per batch, through the hand-off the composition root installs (`Changes.serve_from`,
a trio token's `run_sync_soon` say), so the model itself is only ever touched there.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._objects import AttributeOwner, Bus, Device, Interface


@dataclass(frozen=True, slots=True)
class Event:
    """A change on a bus that connected clients hear about: `kind` is 'add' or 'drop'."""

    kind: str
    bus: str
    interface_id: int
    interface_type: str
    device: str


Listener = Callable[[Event], None]


class Change:
    """Base of the model's change events (`Vbus.changes`). Each names what changed by
    the model's own objects, so a subscriber tells an object from a later namesake."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class DeviceCreated(Change):
    device: Device


@dataclass(frozen=True, slots=True)
class DeviceRemoved(Change):
    device: Device


@dataclass(frozen=True, slots=True)
class TypeSet(Change):
    """`device` got its deviceclass (`device.deviceclass`)."""

    device: Device


@dataclass(frozen=True, slots=True)
class BusCreated(Change):
    bus: Bus


@dataclass(frozen=True, slots=True)
class BusRemoved(Change):
    bus: Bus


@dataclass(frozen=True, slots=True)
class Linked(Change):
    """A link made `interface` (its bus, id, link name and device)."""

    interface: Interface


@dataclass(frozen=True, slots=True)
class Unlinked(Change):
    interface: Interface


@dataclass(frozen=True, slots=True)
class AttributeStored(Change):
    """A value was stored in attribute `name` of `owner` (a device or an interface);
    the attributes its declaration `affects` may have changed too."""

    owner: AttributeOwner
    name: str


@dataclass(frozen=True, slots=True)
class AttributeChanged(Change):
    """The deviceclass said attribute `name` of `owner` changed by itself
    (`DeviceClass.notify`: a counter, a link state, an interface name)."""

    owner: AttributeOwner
    name: str


@dataclass(frozen=True, slots=True)
class PermStored(Change):
    """A value was stored in `perms/<name>` of `bus`."""

    bus: Bus
    name: str


@dataclass(frozen=True, slots=True)
class MembershipChanged(Change):
    """Process `pid` (the daemon's number) went from bus `left` to bus `joined` (None:
    no bus). `how`: "write" (its membership file was written), or, as the daemon's
    membership watch sees it afterwards, "fork" (a child born into its parent's bus),
    "exit" (it exited) or "moved" (put elsewhere by other means, its cgroup say)."""

    pid: int
    left: str | None
    joined: str | None
    how: str = "write"


@dataclass(frozen=True, slots=True)
class InterfaceOpened(Change):
    """A client (process `pid`, the daemon's number) opened `interface`."""

    interface: Interface
    pid: int


@dataclass(frozen=True, slots=True)
class InterfaceClosed(Change):
    """The client (process `pid`) that had `interface` open let it go: a close, its
    exit, a drop, a revocation or the daemon's end."""

    interface: Interface
    pid: int


@dataclass(frozen=True, slots=True)
class Unmounted(Change):
    """The mount at `mountpoint` is gone: the last change a model served by it publishes."""

    mountpoint: str


@dataclass(frozen=True, slots=True)
class ClassLoaded(Change):
    name: str


@dataclass(frozen=True, slots=True)
class ClassUnloaded(Change):
    name: str


Subscriber = Callable[[Change], None]
# what runs a call in the model's thread, soon; callable from any thread, never blocking
Handoff = Callable[[Callable[[], None]], None]


class Changes:
    """The model's one publisher of `Change` events."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        # what subscribers raised, newest last: a bug of theirs, never the model's
        self.faults: deque[tuple[Callable[..., Any], Exception]] = deque(maxlen=16)
        self._handoff: Handoff | None = None
        self._home: int | None = None

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hear every change from now on, in the model's thread; returns the unsubscribe."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def publish(self, change: Change) -> None:
        """Tell every subscriber (in the model's thread). Never raises."""
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(change)
            except Exception as exc:
                self.faults.append((subscriber, exc))

    def serve_from(self, handoff: Handoff | None) -> None:
        """The calling thread is the model's from now on; `handoff` runs a call there
        from any other thread (None: every thread calls in directly, as in a model
        without a loop)."""
        self._handoff = handoff
        self._home = threading.get_ident() if handoff is not None else None

    def call_home(self, call: Callable[[], None]) -> None:
        """Run `call` in the model's thread: now if this is it, else soon. Never blocks;
        a call that cannot be handed over (the loop has ended) is dropped."""
        handoff = self._handoff
        if handoff is None or threading.get_ident() == self._home:
            call()
            return
        with contextlib.suppress(Exception):  # the loop ended: nobody is left to hear
            handoff(call)


class Notices:
    """`DeviceClass.notify` calls from any thread, gathered for the model's thread.

    A burst of notices of the same attribute (a counter per frame) costs one hand-off
    and one `AttributeChanged`: pending notices are a set, at most one per state and
    attribute, and one drain at a time is scheduled.
    """

    def __init__(self, changes: Changes, deliver: Callable[[Any, str], None]) -> None:
        self._changes = changes
        self._deliver = deliver
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, str], Any] = {}
        self._scheduled = False

    def __call__(self, state: Any, attribute: str) -> None:
        with self._lock:
            self._pending.setdefault((id(state), attribute), state)
            if self._scheduled:
                return
            self._scheduled = True
        self._changes.call_home(self._drain)

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._scheduled = False
        for (_, attribute), state in pending.items():
            try:
                self._deliver(state, attribute)
            except Exception as exc:  # never into the loop that runs the hand-off
                self._changes.faults.append((self._deliver, exc))


class StateIndex:
    """Which attribute owners hold a deviceclass state object (by identity), so that a
    class naming only its state (`notify(state, ...)`) reaches its device or interface."""

    def __init__(self) -> None:
        self._owners: dict[int, list[AttributeOwner]] = {}

    def add(self, owner: AttributeOwner) -> None:
        if owner.state is not None:
            self._owners.setdefault(id(owner.state), []).append(owner)

    def discard(self, owner: AttributeOwner) -> None:
        owners = self._owners.get(id(owner.state))
        if owners is not None and owner in owners:
            owners.remove(owner)
            if not owners:
                del self._owners[id(owner.state)]

    def owners(self, state: Any) -> list[AttributeOwner]:
        # the identity check: the state may be gone and its id reused by another object
        return [o for o in self._owners.get(id(state), ()) if o.state is state]
