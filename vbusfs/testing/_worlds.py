"""What the conformance machine drives: an in-process model, or a live mount.

The machine (`_conformance`) speaks of names only: devices, buses, links, and
attribute owners as `Owner` tuples, `(device,)` for a device and
`(bus, interface_id)` for an interface. A world carries each operation out and
answers refusals with a `VbusError` carrying the errno:

- `ModelWorld`: a `ProbedVbus` in this process. For a class that declares
  queues it runs a `DeviceHarness` over that model (the daemon's connector in a
  thread), so every model change goes through the daemon's thread, opens are
  real clients and endings are checked by the harness.
- `MountWorld`: a live vbusfs mount, through its files as a shell user works
  (mkdir, echo, ln -s, rm), its clients through the connector as a member
  process (this process joins the bus through `proc/self/vbus`). What only an
  in-process model shows (the class's own state, the probes) is not checked.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from typing import Any, TypeVar

from vbusfs.client import find_connector
from vbusfs.connector import ConnectorError
from vbusfs.daemon import ProcFs
from vbusfs.device import DeviceClass, VbusError
from vbusfs.ioq import IoqClosed
from vbusfs.model import BUS_ENTRIES, LEAVE_TOKEN, TYPE_ENTRY, Device, Inferred, Interface

from ._harness import ENDINGS, DeviceHarness
from ._inprocess import (
    HarnessClient,
    HarnessInterface,
    ProbedVbus,
    check_client_waits,
    connect_client,
    expect_errno,
)
from ._strategies import write_value

Owner = tuple[Any, ...]  # (device,) or (bus, interface id)
T = TypeVar("T")

#: seconds a client request or event waits
TIMEOUT = 5.0


def is_device(owner: Owner) -> bool:
    return len(owner) == 1


class ModelWorld:
    """The machine's in-process model; with `data_path`, served by a `DeviceHarness`."""

    through_mount = False

    def __init__(
        self, instance: DeviceClass, *, data_path: bool, client_bus: str, join_bound: float
    ) -> None:
        self.instance = instance
        self.class_name = instance.name
        self.data_path = data_path
        self.client_bus = client_bus
        self.join_bound = join_bound
        self.endings = ENDINGS
        self.vbus = ProbedVbus(membership=Inferred(ProcFs()) if data_path else None)
        self.vbus.load_class(instance)
        self.harness: DeviceHarness | None = None
        if data_path:
            self._start_harness()

    def _start_harness(self) -> None:
        self.harness = DeviceHarness(
            self.instance,
            vbus=self.vbus,
            setup=False,
            bus=self.client_bus,
            join_bound=self.join_bound,
            timeout=TIMEOUT,
        ).start()

    def do(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` where the model lives: the daemon's thread while the harness runs."""
        if self.harness is None:
            return fn(*args)
        return self.harness.in_daemon(fn, *args)

    def close(self) -> None:
        """Stop the harness (its checks are the steps', not the end's) or clear the model."""
        if self.harness is not None:
            harness, self.harness = self.harness, None
            harness.close(check=False)
        else:
            self.vbus.clear()

    # -- the topology ----------------------------------------------------------

    def devices(self) -> dict[str, str | None]:
        return {
            n: d.deviceclass.name if d.deviceclass else None for n, d in self.vbus.devices.items()
        }

    def links(self) -> dict[str, dict[str, tuple[str, int]]]:
        return {
            b.name: {n: (i.device.name, i.id) for n, i in b.links.items()}
            for b in self.vbus.buses.values()
        }

    def create_device(self, name: str) -> None:
        self.do(self.vbus.create_device, name)

    def set_type(self, name: str) -> None:
        self.do(self.vbus.set_device_type, name, self.class_name)

    def remove_device(self, name: str) -> None:
        self.do(self.vbus.remove_device, name)

    def create_bus(self, name: str) -> None:
        self.do(lambda: self.vbus.create_bus(name, owner=os.getuid(), group=os.getgid()))
        if self.data_path and name == self.client_bus:
            self.do(self.vbus.set_membership, os.getpid(), name)

    def remove_bus(self, name: str) -> None:
        def remove() -> None:
            joined = self.data_path and self.vbus.membership_of(os.getpid()) == name
            if joined and not self.vbus.bus(name).links:
                self.vbus.set_membership(os.getpid(), LEAVE_TOKEN)
            try:
                self.vbus.remove_bus(name)
            except VbusError:
                if joined:
                    self.vbus.set_membership(os.getpid(), name)
                raise

        self.do(remove)

    def link(self, bus: str, device: str) -> int:
        return self.do(lambda: self.vbus.link(bus, device, device).id)

    def unlink(self, bus: str, link: str) -> None:
        self.do(self.vbus.unlink, bus, link)

    def unload_class(self) -> None:
        self.do(self.vbus.unload_class, self.class_name)

    def load_class(self) -> None:
        self.do(self.vbus.load_class, self.instance)

    def class_in_use(self) -> int:
        return self.vbus.class_in_use(self.class_name)

    def snapshot(self) -> Any:
        return self.do(self.vbus.snapshot)

    # -- attributes --------------------------------------------------------------

    def owner(self, owner: Owner) -> Device | Interface:
        if is_device(owner):
            return self.vbus.device(owner[0])
        return self.vbus.bus(owner[0]).interfaces[owner[1]]

    def attributes(self, owner: Owner) -> dict[str, bool]:
        return {n: a.writable for n, a in self.vbus.attributes(self.owner(owner)).items()}

    def show(self, owner: Owner, name: str) -> str:
        return self.do(lambda: self.vbus.show_attribute(self.owner(owner), name))

    def store(self, owner: Owner, name: str, value: str) -> None:
        self.do(lambda: self.vbus.store_attribute(self.owner(owner), name, value))

    # -- the data path -------------------------------------------------------------

    def open(self, bus: str, interface_id: int, version: int) -> HarnessInterface:
        assert self.harness is not None
        return self.harness.open(interface_id, version)

    def end(self, interface: HarnessInterface, ending: str) -> list[HarnessInterface]:
        """End `interface` the daemon's way (the harness checks the guarantees)."""
        assert self.harness is not None
        ended = self.harness.end(interface, ending)
        if ending == "unmount":
            self.harness.close()
            self._start_harness()  # a new daemon over the (now empty) model
        return ended

    def wait_serving(self, interface: HarnessInterface) -> None:
        probe = interface.probe
        if not probe.started.wait(TIMEOUT):
            raise AssertionError(f"{probe.label}: its loop did not start once its queues existed")

    def check_serving(self, interface: HarnessInterface) -> None:
        """AssertionError if the device's loop failed or ended by itself."""
        probe = interface.probe
        if probe.failed:
            raise AssertionError(
                f"{probe.label}: its loop failed: {probe.outcome!r}"
            ) from probe.outcome
        if probe.ended_early:
            raise AssertionError(f"{probe.label}: its loop ended before it was stopped")


class MountWorld:
    """A live vbusfs mount with the class loaded, driven through its files."""

    through_mount = True

    def __init__(self, root: str, instance: DeviceClass, *, client_bus: str, load: str) -> None:
        self.root = root
        self.instance = instance
        self.class_name = instance.name
        self.client_bus = client_bus
        self.load = load
        self.data_path = bool(instance.queues) and bool(instance.versions)
        # this process is not the daemon: it cannot unmount it
        self.endings = tuple(e for e in ENDINGS if e != "unmount")
        self.config = os.path.join(root, "config", "vbus")
        self.sys = os.path.join(root, "sys", "vbus")
        self.clients: list[HarnessClient] = []
        self.interfaces: list[HarnessInterface] = []
        self.vbus = None
        # the tree's topology as last read: only this machine changes it, so it is read
        # again only after a change (each FUSE round trip costs a millisecond or two)
        self._topology: dict[str, Any] = {}
        if not os.path.isdir(os.path.join(self.sys, "deviceclass", self.class_name)):
            raise RuntimeError(
                f"{root} has no deviceclass {self.class_name!r} loaded (vbus_load, or "
                f"`vbusfs modprobe {root} {load}`)"
            )

    @staticmethod
    def _refusal(exc: OSError) -> VbusError:
        return VbusError(str(exc), errno=exc.errno or errno.EIO)

    def _fs(self, fn: Callable[..., T], *args: Any) -> T:
        self._changed()
        try:
            return fn(*args)
        except OSError as exc:
            raise self._refusal(exc) from None

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        with contextlib.suppress(OSError):  # a mount gone meanwhile has no membership left
            self._member(LEAVE_TOKEN)

    def _member(self, bus: str) -> None:
        with open(os.path.join(self.root, "proc", "self", "vbus"), "w") as f:
            f.write(bus)

    # -- the topology ----------------------------------------------------------

    def _changed(self) -> None:
        self._topology.clear()

    def devices(self) -> dict[str, str | None]:
        if "devices" not in self._topology:
            self._topology["devices"] = self._read_devices()
        return dict(self._topology["devices"])

    def _read_devices(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for name in os.listdir(os.path.join(self.config, "devices")):
            with open(os.path.join(self.config, "devices", name, TYPE_ENTRY)) as f:
                found[name] = f.read().rstrip("\n") or None
        return found

    def _interface_id(self, bus: str, device: str) -> int:
        where = os.path.join(self.sys, "devices", device, "interfaces")
        for entry in os.listdir(where):
            target = os.readlink(os.path.join(where, entry)).split("/")
            if target[-3:-2] == [bus]:
                return int(target[-1])
        raise LookupError(f"device {device} has no interface on {bus}")

    def links(self) -> dict[str, dict[str, tuple[str, int]]]:
        if "links" not in self._topology:
            self._topology["links"] = self._read_links()
        return {bus: dict(links) for bus, links in self._topology["links"].items()}

    def _read_links(self) -> dict[str, dict[str, tuple[str, int]]]:
        found: dict[str, dict[str, tuple[str, int]]] = {}
        instances = os.path.join(self.config, "instances")
        for bus in os.listdir(instances):
            found[bus] = {}
            for link in os.listdir(os.path.join(instances, bus)):
                if link in BUS_ENTRIES:
                    continue
                device = os.path.basename(os.readlink(os.path.join(instances, bus, link)))
                found[bus][link] = (device, self._interface_id(bus, device))
        return found

    def create_device(self, name: str) -> None:
        self._fs(os.mkdir, os.path.join(self.config, "devices", name))

    def set_type(self, name: str) -> None:
        self._fs(
            write_value, os.path.join(self.config, "devices", name, TYPE_ENTRY), self.class_name
        )

    def remove_device(self, name: str) -> None:
        self._fs(os.rmdir, os.path.join(self.config, "devices", name))

    def create_bus(self, name: str) -> None:
        self._fs(os.mkdir, os.path.join(self.config, "instances", name))
        if self.data_path and name == self.client_bus:
            self._member(name)

    def remove_bus(self, name: str) -> None:
        path = os.path.join(self.config, "instances", name)
        if name == self.client_bus and not set(os.listdir(path)) - set(BUS_ENTRIES):
            self._member(LEAVE_TOKEN)
        try:
            self._fs(os.rmdir, path)
        except VbusError:
            if self.data_path and name == self.client_bus:
                self._member(name)
            raise

    def link(self, bus: str, device: str) -> int:
        target = os.path.join(self.config, "devices", device)
        self._fs(os.symlink, target, os.path.join(self.config, "instances", bus, device))
        return self._interface_id(bus, device)

    def unlink(self, bus: str, link: str) -> None:
        self._fs(os.unlink, os.path.join(self.config, "instances", bus, link))

    def _admin(self, op: str, argument: str) -> None:
        client = connect_client(find_connector(self.root, TIMEOUT), TIMEOUT)
        try:
            client.request(op, deviceclass=argument)
        except ConnectorError as exc:
            raise VbusError(str(exc), errno=exc.errno or errno.EIO) from None
        finally:
            client.close()

    def unload_class(self) -> None:
        self._admin("rmmod", self.class_name)

    def load_class(self) -> None:
        self._admin("modprobe", self.load)

    def class_in_use(self) -> None:
        return None  # the daemon's count is not in the trees

    def snapshot(self) -> Any:
        return {"devices": self.devices(), "buses": self.links()}

    # -- attributes --------------------------------------------------------------

    def _path(self, owner: Owner, name: str) -> str:
        if is_device(owner):
            return os.path.join(self.sys, "devices", owner[0], name)
        return os.path.join(self.sys, "instances", owner[0], "devices", str(owner[1]), name)

    def attributes(self, owner: Owner) -> dict[str, bool]:
        table = (Device if is_device(owner) else Interface).declared_attributes(self.instance)
        return {a.name: a.writable for a in table}

    def show(self, owner: Owner, name: str) -> str:
        with open(self._path(owner, name), encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        assert text.endswith("\n"), f"{self._path(owner, name)} reads {text!r}: no newline"
        return text[:-1]

    def store(self, owner: Owner, name: str, value: str) -> None:
        try:  # a store changes no topology
            write_value(self._path(owner, name), value)
        except OSError as exc:
            raise self._refusal(exc) from None

    # -- the data path -------------------------------------------------------------

    def open(self, bus: str, interface_id: int, version: int) -> HarnessInterface:
        client = connect_client(find_connector(self.root, TIMEOUT), TIMEOUT)
        self.clients.append(client)
        try:
            interface = client.open(interface_id, version)
        except BaseException:
            client.close()
            raise
        self.interfaces.append(interface)
        return interface

    def end(self, interface: HarnessInterface, ending: str) -> list[HarnessInterface]:
        """End `interface` as a member process would, and check what its client sees."""
        label = f"interface {self.client_bus}/{interface.id}"
        after = f"the {ending} of {label}"
        live = [i for i in self.interfaces if i.ending is None]
        ended = [interface]
        self._changed()
        if ending == "close":
            interface.client.request("close", handle=interface.handle)
        elif ending == "death":
            interface.client.close()
        elif ending == "revoke":
            ended = live or [interface]
            self._member(LEAVE_TOKEN)
            try:
                for each in ended:
                    expect_errno(errno.EACCES, each.stats, f"a call after {after}")
            finally:
                self._member(self.client_bus)
        elif ending == "unlink":
            ended = [i for i in live if i.id == interface.id] or [interface]
            link = next(
                n for n, (_, i) in self.links()[self.client_bus].items() if i == interface.id
            )
            self.unlink(self.client_bus, link)
            for each in ended:
                event = each.client.wait_event(TIMEOUT)
                assert (event.kind, event.interface_id) == ("drop", interface.id), event
                expect_errno(errno.ENODEV, each.stats, f"a call after {after}")
        else:
            raise ValueError(f"a mount cannot end an open by {ending!r}")
        for each in ended:
            each.ending = ending
            check_client_waits(each.rings, label, after, each.hangup)
            with contextlib.suppress(OSError, IoqClosed):
                each.close()
            each.client.close()
        return ended

    def wait_serving(self, interface: HarnessInterface) -> None:
        """Nothing to see from outside the daemon: requests show it."""

    def check_serving(self, interface: HarnessInterface) -> None:
        """Nothing to see from outside the daemon: requests show it."""
