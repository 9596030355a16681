"""`vbusfs demo`: the original vbus walkthrough, on a live mount or on the model.

On a live mount every step is a real shell command and the tree is drawn by
`tree`. Where FUSE cannot be used, the demo says why and how to fix it, then
replays the same steps on the in-process model and draws the same trees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from vbusfs import views
from vbusfs.model import IdentityView, Vbus, VbusError

BUS = "client-bus"
DEVICE = "dev0"


# the demo's own process, as the trees see it when no mount is in between
_ME = views.Caller(os.getuid(), IdentityView(os.getpid()))


@dataclass(frozen=True)
class Step:
    say: str
    command: str
    on_model: Callable[[Vbus], str]
    show_tree: bool = True


def _write(path: views.Path, value: str) -> Callable[[Vbus], str]:
    def act(vbus: Vbus) -> str:
        found = views.node(vbus, views.resolve(vbus, path, _ME), _ME)
        assert isinstance(found, views.FileNode) and found.store is not None
        found.store(value)
        return ""

    return act


def _read(path: views.Path) -> Callable[[Vbus], str]:
    def act(vbus: Vbus) -> str:
        found = views.node(vbus, views.resolve(vbus, path, _ME), _ME)
        assert isinstance(found, views.FileNode)
        return found.show() + "\n"

    return act


def _readlink(path: views.Path) -> Callable[[Vbus], str]:
    def act(vbus: Vbus) -> str:
        found = views.node(vbus, path)
        assert isinstance(found, views.SymlinkNode)
        return found.target + "\n"

    return act


def _call(action: Callable[[Vbus], None]) -> Callable[[Vbus], str]:
    def act(vbus: Vbus) -> str:
        action(vbus)
        return ""

    return act


TYPE_FILE = (*views.CONFIG_DEVICES, DEVICE, "type")
BUS_DIR = (*views.CONFIG_INSTANCES, BUS)


def _join(vbus: Vbus) -> str:
    pid = os.getpid()
    _write(("proc", "self", "vbus"), BUS)(vbus)
    text = _read(("proc", "self", "vbus"))(vbus)
    members = views.children(vbus, ("sys", "vbus", "instances", BUS, "members"))
    if str(pid) in members:
        text += f"this shell ({pid}) is listed in sys/vbus/instances/{BUS}/members\n"
    return text


def _teardown(vbus: Vbus) -> None:
    _write(("proc", "self", "vbus"), "0")(vbus)
    views.unlink(vbus, BUS_DIR, DEVICE)
    views.rmdir(vbus, views.CONFIG_DEVICES, DEVICE)
    views.rmdir(vbus, views.CONFIG_INSTANCES, BUS)


STEPS = (
    Step(
        "The deviceclasses this vbus offers, before anything is made:",
        "ls sys/vbus/deviceclass",
        lambda v: "".join(f"{c}\n" for c in sorted(v.classes)),
        show_tree=True,
    ),
    Step(
        "Create a bus (a container for devices):",
        f"mkdir config/vbus/instances/{BUS}",
        _call(lambda v: views.mkdir(v, views.CONFIG_INSTANCES, BUS)),
    ),
    Step(
        "Create a device; it stays an untyped shell until a class is chosen:",
        f"mkdir config/vbus/devices/{DEVICE}",
        _call(lambda v: views.mkdir(v, views.CONFIG_DEVICES, DEVICE)),
    ),
    Step(
        "Choosing a class that is not loaded fails with ENOENT:",
        f"echo foo > config/vbus/devices/{DEVICE}/type",
        _write(TYPE_FILE, "foo"),
        show_tree=False,
    ),
    Step(
        "Make it a venet-tap device:",
        f"echo venet-tap > config/vbus/devices/{DEVICE}/type",
        _write(TYPE_FILE, "venet-tap"),
    ),
    Step(
        "Put the device on the bus with a symlink:",
        f'ln -s "$PWD/config/vbus/devices/{DEVICE}" config/vbus/instances/{BUS}/',
        _call(lambda v: views.symlink(v, BUS_DIR, DEVICE, (*views.CONFIG_DEVICES, DEVICE))),
    ),
    Step(
        "The link reads back as its canonical relative path:",
        f"readlink config/vbus/instances/{BUS}/{DEVICE}",
        _readlink((*BUS_DIR, DEVICE)),
        show_tree=False,
    ),
    Step(
        "On the bus the device is interface 0, of the polymorphic type virtual-ethernet:",
        f"cat sys/vbus/instances/{BUS}/devices/0/type",
        _read(("sys", "vbus", "instances", BUS, "devices", "0", "type")),
        show_tree=False,
    ),
    Step(
        "Attributes are written right in sys:",
        f"echo 02:00:00:00:00:01 > sys/vbus/devices/{DEVICE}/client_mac && "
        f"cat sys/vbus/devices/{DEVICE}/client_mac",
        lambda v: (
            _write(("sys", "vbus", "devices", DEVICE, "client_mac"), "02:00:00:00:00:01")(v)
            + _read(("sys", "vbus", "devices", DEVICE, "client_mac"))(v)
        ),
        show_tree=False,
    ),
    Step(
        "Join the bus: this shell, and every process it starts from now on, is a member:",
        f"echo {BUS} > proc/self/vbus && cat proc/self/vbus && "
        f"test -d sys/vbus/instances/{BUS}/members/$$ && "
        f'echo "this shell ($$) is listed in sys/vbus/instances/{BUS}/members"',
        _join,
        show_tree=False,
    ),
    Step(
        "A device a bus links to cannot be removed (EBUSY):",
        f"rmdir config/vbus/devices/{DEVICE}",
        _call(lambda v: views.rmdir(v, views.CONFIG_DEVICES, DEVICE)),
        show_tree=False,
    ),
    Step(
        "Tear down in reverse: leave the bus, unlink, remove the device and the bus:",
        f"echo 0 > proc/self/vbus && "
        f"rm config/vbus/instances/{BUS}/{DEVICE} && rmdir config/vbus/devices/{DEVICE} "
        f"&& rmdir config/vbus/instances/{BUS}",
        _call(_teardown),
    ),
)


def _shell_error(command: str, exc: VbusError) -> str:
    verb = command.split()[0]
    message = os.strerror(exc.errno)
    if verb == "echo":
        return f"bash: line 1: echo: write error: {message}\n"
    target = command.split()[-1]
    action = {"mkdir": "cannot create directory", "rmdir": "failed to remove"}.get(verb, verb)
    return f"{verb}: {action} '{target}': {message}\n"


def _banner(out: TextIO, step: Step) -> None:
    out.write(f"\n# {step.say}\n$ {step.command}\n")


def run_on_mount(mountpoint: str, out: TextIO) -> None:
    env = dict(os.environ, LC_ALL="C.UTF-8")
    tree = shutil.which("tree")
    for step in STEPS:
        _banner(out, step)
        out.flush()
        done = subprocess.run(
            ["bash", "-c", step.command], cwd=mountpoint, env=env, capture_output=True, text=True
        )
        out.write(done.stdout + done.stderr)
        if step.show_tree:
            out.write("$ tree sys/vbus\n")
            if tree is not None:
                drawn = subprocess.run(
                    [tree, "sys/vbus"], cwd=mountpoint, env=env, capture_output=True, text=True
                )
                out.write(drawn.stdout)
            else:
                out.write("(tree is not installed: apt-get install tree)\n")


def run_on_model(out: TextIO) -> None:
    from vbusfs.daemon import build_model

    vbus = build_model()  # the daemon's own model, served by no mount
    for step in STEPS:
        _banner(out, step)
        try:
            out.write(step.on_model(vbus))
        except VbusError as exc:
            out.write(_shell_error(step.command, exc))
        if step.show_tree:
            out.write("$ tree sys/vbus\n")
            out.write(views.render_tree(vbus, views.SYS_VBUS, "sys/vbus"))


def main(out: TextIO = sys.stdout) -> int:
    from vbusfs.daemon import MountError, fuse_problem, spawn, unmount

    problem = fuse_problem()
    if problem is None:
        mountpoint = tempfile.mkdtemp(prefix="vbusfs-demo-")
        try:
            try:
                spawn(mountpoint)
            except MountError as exc:
                problem = str(exc)  # the daemon's message already says what failed and why
            else:
                out.write(
                    f"vbusfs is mounted at {mountpoint}; every step runs in that directory.\n"
                )
                try:
                    run_on_mount(mountpoint, out)
                finally:
                    unmount(mountpoint)
                    out.write(f"\nunmounted {mountpoint}\n")
                return 0
        finally:
            os.rmdir(mountpoint)
    out.write(f"vbusfs cannot mount here: {problem}\n")
    out.write("Replaying the same walkthrough on the in-process model instead.\n")
    run_on_model(out)
    return 0
