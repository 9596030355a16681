"""In-process models for tests: every discovered deviceclass, and no host side effects.

`host_free_model()` builds a `Vbus` like `vbusfs.classes.default_model()`
(the built-in classes, every class registered in the `vbusfs.deviceclasses`
entry-point group, plus import specs), except that venet-tap devices get
their host interface from a `FakeTapFactory` instead of `/dev/net/tun`:
writing `1` to `enabled` then needs no root and changes nothing on the
machine, and the factory counts the interfaces still open, so a test can
check that removing devices releases them all.

This module never opens `/dev/net/tun` and never mounts anything.
"""

from __future__ import annotations

from vbusfs.classes import VenetTap, discover, import_class, load_spec
from vbusfs.model import DeviceClass, Vbus


class FakeTap:
    """What a venet-tap device holds as its host interface in a host-free model."""

    def __init__(self, factory: FakeTapFactory, name: str) -> None:
        self.factory = factory
        self.name = name
        self.fd = -1  # no descriptor: the data path cannot run over a fake
        self.closed = False

    def discard(self, max_frames: int) -> int:
        return 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.factory.live.discard(self)


class FakeTapFactory:
    """A venet-tap `open_tap` factory: `factory(mac)` makes a `FakeTap` named `fake<n>`.

    `live` holds the taps made and not yet closed; `opened` counts every tap made.
    """

    def __init__(self) -> None:
        self.live: set[FakeTap] = set()
        self.opened = 0

    def __call__(self, mac: bytes) -> FakeTap:
        tap = FakeTap(self, f"fake{self.opened}")
        self.opened += 1
        self.live.add(tap)
        return tap


def host_free_model(load: tuple[str, ...] = (), *, taps: FakeTapFactory | None = None) -> Vbus:
    """A `Vbus` with every discovered deviceclass loaded, and venet-tap on fake taps.

    `load` adds deviceclasses named as `package.module:ClassName` (the form of
    `vbusfs mount --load`), by the daemon's rule: one that has the name of a
    discovered class takes its place (an installed plugin's own class stays), with
    a warning in the log. `taps` is the factory
    venet-tap devices use (a new `FakeTapFactory` when not given).
    """
    factory = taps if taps is not None else FakeTapFactory()

    def make(cls: type[DeviceClass]) -> DeviceClass:
        return VenetTap(open_tap=factory) if cls is VenetTap else cls()

    vbus = Vbus()
    offered = discover()
    for cls in offered.values():
        vbus.load_class(make(cls))
    for spec in load:
        # as the daemon does: a discovered class of the same name gives way
        load_spec(vbus, import_class(spec), offered, make)
    return vbus
