"""`vbusfs save`, `modprobe`, `rmmod`, `reset`, `tree` and `status`: administering a live
mount.

save, modprobe (and its --reload), rmmod and reset speak to the daemon through its
connector (root or the daemon's owner only, as the kernel reports the caller); tree reads the
mount's own sys tree, so it shows exactly what any process sees; status reads
the root's extended attributes, which any process may.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any, TextIO

from vbusfs import client
from vbusfs._mountinfo import FSTYPE, canonical_mountpoint, mount_at


def require_mount(mountpoint: str) -> None:
    """Refuse, with the fix, a path where no vbusfs daemon answers (ValueError says why).
    It imports neither the daemon nor the FUSE adapter: `vbusfs monitor` and the other
    commands that call it start listening sooner."""

    where = canonical_mountpoint(mountpoint)
    mount_it = f"mount one with `vbusfs mount {mountpoint}`"
    if not os.path.exists(where) and not os.path.islink(where):
        raise ValueError(f"{mountpoint} does not exist; create the directory and {mount_it}")
    entry = mount_at(where)
    if entry is None:
        raise ValueError(
            f"{mountpoint} is not a vbusfs mount (no daemon answers there); {mount_it}"
        )
    if entry.fstype != FSTYPE:
        raise ValueError(
            f"{mountpoint} is a {entry.fstype} mount, not a vbusfs mount; "
            "mount one on an empty directory with `vbusfs mount DIRECTORY`"
        )
    try:
        os.statvfs(where)  # reaches the daemon past the kernel's caches
    except OSError as exc:
        raise ValueError(
            f"{mountpoint} is a vbusfs mount whose daemon does not answer ({exc.strerror}); "
            f"`vbusfs mount {mountpoint}` clears it and mounts afresh"
        ) from None


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


MEMBERSHIP_MODES = {
    "cgroup": "kept by the kernel (each bus is a cgroup of a hierarchy private to the mount)",
    "proc": "inferred from /proc (the fallback; its limits: docs/behaviour.md §6)",
}


def status(mountpoint: str, out: TextIO) -> None:
    """Say what serves `mountpoint`: the connector's socket and who keeps membership."""
    where = canonical_mountpoint(mountpoint)
    out.write(f"mount point: {where}\n")
    for name, label in (("connector", "connector"), ("membership", "membership")):
        try:
            value = os.fsdecode(os.getxattr(where, f"user.vbusfs.{name}"))
        except OSError:
            value = "none (this mount serves no processes)"
        if name == "membership":
            value = f"{value}: {MEMBERSHIP_MODES[value]}" if value in MEMBERSHIP_MODES else value
        out.write(f"{label}: {value}\n")


def modprobe(mountpoint: str, deviceclass: str) -> str:
    with client.connect(mountpoint) as admin:
        return admin.modprobe(deviceclass)


def rmmod(mountpoint: str, deviceclass: str) -> None:
    with client.connect(mountpoint) as admin:
        admin.rmmod(deviceclass)


def reload(mountpoint: str, deviceclass: str) -> str:
    """Re-import loaded class `deviceclass` in the daemon; the class's name now."""
    with client.connect(mountpoint) as admin:
        name: str = admin.request("reload", deviceclass=deviceclass)["deviceclass"]
        return name


def reset(mountpoint: str) -> int:
    """Take the mount back to a fresh daemon's empty state; how many open interfaces
    were closed. ConnectorError EBUSY (naming what is left) if it could not."""
    with client.connect(mountpoint) as admin:
        closed: int = admin.request("reset")["closed"]
        return closed


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def _ls(path: str) -> list[str]:
    return sorted(os.listdir(path), key=lambda n: (len(n), n) if n.isdigit() else (0, n))


def topology(mountpoint: str) -> dict[str, Any]:
    """Buses (with interfaces and members), devices and classes, read from the mount."""
    sys_vbus = os.path.join(mountpoint, "sys", "vbus")
    buses = {}
    for bus in _ls(os.path.join(sys_vbus, "instances")):
        base = os.path.join(sys_vbus, "instances", bus)
        interfaces = []
        for interface in sorted(os.listdir(os.path.join(base, "devices")), key=int):
            folder = os.path.join(base, "devices", interface)
            device = os.path.basename(os.readlink(os.path.join(folder, "device")))
            interfaces.append((int(interface), _read(os.path.join(folder, "type")), device))
        members = sorted(int(p) for p in os.listdir(os.path.join(base, "members")))
        buses[bus] = {"interfaces": interfaces, "members": members}
    devices = {}
    for device in _ls(os.path.join(sys_vbus, "devices")):
        try:
            kind = os.path.basename(os.readlink(os.path.join(sys_vbus, "devices", device, "class")))
        except FileNotFoundError:
            kind = None
        devices[device] = kind
    return {
        "buses": buses,
        "devices": devices,
        "classes": _ls(os.path.join(sys_vbus, "deviceclass")),
    }


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def dot(mountpoint: str) -> str:
    """The topology as a Graphviz graph: buses and devices as nodes, interfaces as edges."""
    picture = topology(mountpoint)
    lines = ["graph vbus {", "  rankdir=LR;", '  node [fontname="sans-serif"];']
    for bus, info in picture["buses"].items():
        members = len(info["members"])
        label = f"bus {_escape(bus)}" + (f"\\n{members} member(s)" if members else "")
        lines.append(f'  "bus:{_escape(bus)}" [shape=box, style=rounded, label="{label}"];')
    for device, kind in picture["devices"].items():
        label = f"{_escape(device)}\\n{_escape(kind or 'untyped')}"
        lines.append(f'  "device:{_escape(device)}" [shape=ellipse, label="{label}"];')
    for bus, info in picture["buses"].items():
        for interface, kind, device in info["interfaces"]:
            edge = f'"bus:{_escape(bus)}" -- "device:{_escape(device)}"'
            lines.append(f'  {edge} [label="{interface}: {_escape(kind)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph(mountpoint: str, output: str) -> None:
    """Draw the topology to `output`: .dot as text, .svg or .png through Graphviz's dot."""
    text = dot(mountpoint)
    kind = os.path.splitext(output)[1].lstrip(".").lower()
    if kind == "dot":
        write_atomically(output, text)
        return
    if kind not in ("svg", "png"):
        raise ValueError(f"{output}: the picture must end in .svg, .png or .dot")
    program = shutil.which("dot")
    if program is None:
        raise ValueError("Graphviz's dot program is not installed (apt-get install graphviz)")
    done = subprocess.run(
        [program, f"-T{kind}", "-o", output], input=text.encode(), capture_output=True
    )
    if done.returncode != 0:
        raise ValueError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")


def tree(mountpoint: str, out: TextIO) -> None:
    """Buses with their interfaces and members, then devices and classes, readably."""
    picture = topology(mountpoint)
    on: dict[str, list[str]] = {}
    for bus, info in picture["buses"].items():
        out.write(f"bus {bus}\n")
        for interface, kind, device in info["interfaces"]:
            out.write(f"  interface {interface}: {kind} -> device {device}\n")
            on.setdefault(device, []).append(f"{bus}/devices/{interface}")
        members = " ".join(map(str, info["members"])) or "(none)"
        out.write(f"  members: {members}\n")
    for device, kind in picture["devices"].items():
        where = f" on {', '.join(on[device])}" if device in on else ""
        out.write(f"device {device} ({kind or 'untyped'}){where}\n")
    out.write(f"deviceclasses: {' '.join(picture['classes'])}\n")
