"""`vbusfs save`, `modprobe`, `rmmod` and `tree`: administering a live mount.

save, modprobe and rmmod speak to the daemon through its connector (root or
the daemon's owner only, as the kernel reports the caller); tree reads the
mount's own sys tree, so it shows exactly what any process sees.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, TextIO

from vbusfs import client


def save(mountpoint: str, path: str) -> None:
    """Write the mount's configuration to `path` atomically (temporary file, fsync, rename)."""
    with client.connect(mountpoint) as admin:
        config = admin.save()
    write_atomically(path, json.dumps(config, indent=2) + "\n")


def write_atomically(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".vbusfs-save-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_config(path: str) -> Any:
    """Read a saved configuration; ValueError says what is wrong with the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupt?): {exc}") from None


def modprobe(mountpoint: str, deviceclass: str) -> str:
    with client.connect(mountpoint) as admin:
        return admin.modprobe(deviceclass)


def rmmod(mountpoint: str, deviceclass: str) -> None:
    with client.connect(mountpoint) as admin:
        admin.rmmod(deviceclass)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def _ls(path: str) -> list[str]:
    return sorted(os.listdir(path), key=lambda n: (len(n), n) if n.isdigit() else (0, n))


def tree(mountpoint: str, out: TextIO) -> None:
    """Buses with their interfaces and members, then devices and classes, readably."""
    sys_vbus = os.path.join(mountpoint, "sys", "vbus")
    buses = _ls(os.path.join(sys_vbus, "instances"))
    for bus in buses:
        base = os.path.join(sys_vbus, "instances", bus)
        out.write(f"bus {bus}\n")
        for interface in sorted(os.listdir(os.path.join(base, "devices")), key=int):
            folder = os.path.join(base, "devices", interface)
            device = os.path.basename(os.readlink(os.path.join(folder, "device")))
            kind = _read(os.path.join(folder, "type"))
            out.write(f"  interface {interface}: {kind} -> device {device}\n")
        members = sorted(os.listdir(os.path.join(base, "members")), key=int)
        out.write(f"  members: {' '.join(members) if members else '(none)'}\n")
    for device in _ls(os.path.join(sys_vbus, "devices")):
        folder = os.path.join(sys_vbus, "devices", device)
        try:
            kind = os.path.basename(os.readlink(os.path.join(folder, "class")))
        except FileNotFoundError:
            kind = "untyped"
        on = sorted(os.listdir(os.path.join(folder, "interfaces")))
        where = ", ".join(
            os.readlink(os.path.join(folder, "interfaces", i)).split("/instances/")[1] for i in on
        )
        out.write(f"device {device} ({kind})" + (f" on {where}" if where else "") + "\n")
    classes = _ls(os.path.join(sys_vbus, "deviceclass"))
    out.write(f"deviceclasses: {' '.join(classes)}\n")
