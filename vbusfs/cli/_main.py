"""The command line: the parser and a handler per command, each importing what it needs."""

from __future__ import annotations

import argparse
import os
import sys

from vbusfs import __version__


def _mount(args: argparse.Namespace) -> int:
    from vbusfs.connector import Limits
    from vbusfs.daemon import MountError, log_to_stderr, run_daemon, spawn

    caps = {cap: getattr(args, cap) for cap in _LIMIT_OPTIONS if getattr(args, cap) is not None}
    if not args.foreground:
        extra = tuple(word for cap, n in caps.items() for word in (_LIMIT_OPTIONS[cap], str(n)))
        if args.restore:
            extra += ("--restore", os.path.abspath(args.restore))
            if args.empty_on_bad_restore:
                extra += ("--empty-on-bad-restore",)
        extra += ("--membership", args.membership)
        try:
            spawn(
                args.mountpoint,
                log_path=args.log,
                debug=args.debug,
                load=tuple(args.load),
                extra=extra,
            )
        except MountError as exc:
            print(f"vbusfs mount: {exc}", file=sys.stderr)
            return 1
        return 0
    log_to_stderr(debug=args.debug, log_path=args.log)
    return run_daemon(
        args.mountpoint,
        load=tuple(args.load),
        limits=Limits(**caps),
        restore=args.restore,
        empty_on_bad_restore=args.empty_on_bad_restore,
        membership=args.membership,
        ready_fd=args.ready_fd,
        log_path=args.log,
    )


# the connector's caps `vbusfs mount` sets (behaviour §7.1): Limits field -> option
_LIMIT_OPTIONS = {
    "connections": "--max-connections",
    "connections_per_uid": "--max-connections-per-uid",
    "join_bound": "--join-bound",
}


def _nonnegative(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 3600]")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _umount(args: argparse.Namespace) -> int:
    from vbusfs.daemon import MountError, unmount

    try:
        unmount(args.mountpoint)
    except MountError as exc:
        print(f"vbusfs umount: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from vbusfs.daemon import MountError

    from ._run import RunError, run

    command = args.command
    if command and command[0] == "--":
        command = command[1:]
    try:
        return run(command, args.mount)
    except (RunError, MountError) as exc:
        print(f"vbusfs run: {exc}", file=sys.stderr)
        return exc.status if isinstance(exc, RunError) else 125


def _admin(args: argparse.Namespace) -> int:
    from vbusfs.client import ConnectorError

    from . import _admin

    try:
        _admin.require_mount(args.mountpoint)
        if args.command_name == "save":
            _admin.save(args.mountpoint, args.file)
        elif args.command_name == "modprobe" and args.reload:
            print(_admin.reload(args.mountpoint, args.deviceclass))
        elif args.command_name == "modprobe":
            print(_admin.modprobe(args.mountpoint, args.deviceclass))
        elif args.command_name == "reset":
            _admin.reset(args.mountpoint)
        elif args.command_name == "rmmod":
            _admin.rmmod(args.mountpoint, args.deviceclass)
        elif args.command_name == "graph":
            _admin.graph(args.mountpoint, args.output)
        elif args.command_name == "status":
            _admin.status(args.mountpoint, sys.stdout)
        else:
            _admin.tree(args.mountpoint, sys.stdout)
    except ValueError as exc:
        print(f"vbusfs {args.command_name}: {exc}", file=sys.stderr)
        return 1
    except (ConnectorError, OSError) as exc:
        reason = os.strerror(exc.errno) if exc.errno else "failed"
        detail = f"{exc.strerror} ({reason})" if exc.strerror and exc.strerror != reason else reason
        print(f"vbusfs {args.command_name}: {detail}", file=sys.stderr)
        return 1
    return 0


def _enet(args: argparse.Namespace) -> int:
    from ._enet import main as enet

    return enet(args)


def _monitor(args: argparse.Namespace) -> int:
    from ._monitor import run

    return run(args.mountpoint, args.json)


def _demo(args: argparse.Namespace) -> int:
    from ._demo import main as demo

    return demo()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="vbusfs",
        description="The Linux virtual-bus (vbus) administrative trees, served over FUSE.",
    )
    top.add_argument("--version", action="version", version=f"vbusfs {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = commands.add_parser(
        "mount",
        help="mount vbusfs on a directory",
        description="Mount vbusfs on MOUNTPOINT. Returns once the mount is live; the daemon "
        "runs in the background until `vbusfs umount`, SIGTERM or SIGINT. A stale mount left "
        "by a killed daemon is cleared first.",
    )
    mount.add_argument("mountpoint", help="an existing directory")
    mount.add_argument("--foreground", action="store_true", help="serve in this process")
    mount.add_argument("--debug", action="store_true", help="log every refused request")
    mount.add_argument("--log", metavar="FILE", help="the daemon's log file (background mode)")
    mount.add_argument(
        "--ready-fd",
        type=int,
        metavar="FD",
        # internal, for spawn() and LiveMount: with --foreground, write 'ok' (or
        # 'error: ...') to FD once mounted, then close it; users never pass it
        help=argparse.SUPPRESS,
    )
    mount.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="MODULE:CLASS",
        help="also load this deviceclass (importable as MODULE, a DeviceClass subclass); "
        "repeatable",
    )
    mount.add_argument(
        "--restore",
        metavar="FILE",
        help="rebuild the configuration saved in FILE (by vbusfs save), interface ids included; "
        "a file that cannot be restored stops the mount with a message saying why",
    )
    mount.add_argument(
        "--empty-on-bad-restore",
        action="store_true",
        help="with --restore: start empty (and log why) instead of refusing to mount",
    )
    mount.add_argument(
        "--membership",
        choices=("auto", "cgroup", "proc"),
        default="auto",
        help="who keeps bus membership: 'cgroup', the kernel (each bus a cgroup of a "
        "hierarchy private to the mount; needs root), 'proc', vbusfs inferring it from "
        "/proc (see its limits in docs/behaviour.md), or 'auto' (the default): cgroup "
        "where the daemon may, else proc; `vbusfs status` says which",
    )
    mount.add_argument(
        "--max-connections",
        dest="connections",
        type=_positive,
        metavar="N",
        help="connector clients served at once, all together (default 256); one more is "
        "refused with EAGAIN",
    )
    mount.add_argument(
        "--max-connections-per-uid",
        dest="connections_per_uid",
        type=_positive,
        metavar="N",
        help="connector clients served at once from the processes of one uid (default 64); "
        "one more is refused with EAGAIN",
    )
    mount.add_argument(
        "--join-bound",
        dest="join_bound",
        type=_seconds,
        metavar="SECONDS",
        help="how long a stopped device loop may take to end (default 2): then a loop "
        "thread is logged and abandoned, and a worker process is killed",
    )
    mount.set_defaults(run=_mount)

    umount = commands.add_parser(
        "umount",
        help="unmount a vbusfs and stop its daemon",
        description="Unmount MOUNTPOINT and wait until its daemon has released everything.",
    )
    umount.add_argument("mountpoint")
    umount.set_defaults(run=_umount)

    run = commands.add_parser(
        "run",
        help="run a command where the trees are at /config/vbus, /sys/vbus, /run/vbus/proc",
        description="Run COMMAND in a private mount namespace in which the trees also appear "
        "at /config/vbus and /sys/vbus (the rest of /sys stays usable) and the proc tree at "
        "/run/vbus/proc, so the original vbus walkthrough runs verbatim (write to "
        "/run/vbus/proc/self/vbus where it wrote /proc/self/vbus). Without --mount a fresh "
        "vbusfs is mounted for the command's lifetime and unmounted after. Exits with the "
        "command's status, or 125 if the namespace cannot be made.",
    )
    run.add_argument("--mount", metavar="MOUNTPOINT", help="use this live vbusfs mount")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    run.set_defaults(run=_run)

    save = commands.add_parser(
        "save",
        help="write a mount's configuration to a JSON file",
        description="Write the whole configuration of the vbusfs at MOUNTPOINT (classes, "
        "devices with their types and writable attributes, buses, links with their interface "
        "ids; never members) to FILE, atomically: a temporary file, fsync, rename. Restore it "
        "with vbusfs mount --restore FILE. Root or the daemon's owner only.",
    )
    save.add_argument("mountpoint")
    save.add_argument("file")
    save.set_defaults(run=_admin, command_name="save")

    modprobe = commands.add_parser(
        "modprobe",
        help="load (or reload) a deviceclass in a live mount",
        description="Load DEVICECLASS into the vbusfs at MOUNTPOINT: a name registered in the "
        "vbusfs.deviceclasses entry-point group, or MODULE:CLASS importable by the daemon. "
        "It appears under sys/vbus/deviceclass. A MODULE:CLASS whose class has the name of a "
        "discovered class (a built-in or an entry point's) takes that class's place, with a "
        "warning in the daemon's log. Root or the daemon's owner only.",
    )
    modprobe.add_argument("mountpoint")
    modprobe.add_argument("deviceclass")
    modprobe.add_argument(
        "--reload",
        action="store_true",
        help="DEVICECLASS is the name of a loaded class: import its module again (from its "
        "source) and put the new class in its place; refused with EBUSY while devices of it "
        "exist, ENOENT if it is not loaded",
    )
    modprobe.set_defaults(run=_admin, command_name="modprobe")

    rmmod = commands.add_parser(
        "rmmod",
        help="unload a deviceclass from a live mount",
        description="Unload DEVICECLASS from the vbusfs at MOUNTPOINT; refused with EBUSY while "
        "any device of that class exists. Root or the daemon's owner only.",
    )
    rmmod.add_argument("mountpoint")
    rmmod.add_argument("deviceclass")
    rmmod.set_defaults(run=_admin, command_name="rmmod")

    reset = commands.add_parser(
        "reset",
        help="empty a live mount, as its daemon started",
        description="Take the vbusfs at MOUNTPOINT back to the state its daemon started "
        "in: every open interface closed (its client hears the drop), every interface "
        "unlinked, every device and bus removed, every member let go, and the deviceclasses "
        "those the daemon started with, as new instances (the discovered ones and those of "
        "its --load; what modprobe added is unloaded). Refused with EBUSY, naming it, if "
        "anything is left. Root or the daemon's owner only.",
    )
    reset.add_argument("mountpoint")
    reset.set_defaults(run=_admin, command_name="reset")

    tree = commands.add_parser(
        "tree",
        help="print buses, devices, interfaces and members",
        description="Print the topology of the vbusfs at MOUNTPOINT as any process sees it: "
        "each bus with its interfaces (id, type, device) and its member processes, then every "
        "device with its class and the buses it is on, then the loaded deviceclasses.",
    )
    tree.add_argument("mountpoint")
    tree.set_defaults(run=_admin, command_name="tree")

    graph = commands.add_parser(
        "graph",
        help="draw buses, devices and their links as a picture",
        description="Draw the topology of the vbusfs at MOUNTPOINT: buses as boxes, devices as "
        "ellipses with their class, and one line per interface labelled with its id and type. "
        "The output's extension picks the format: .svg or .png (drawn by Graphviz's dot "
        "program, which make setup installs) or .dot (the Graphviz source).",
    )
    graph.add_argument("mountpoint")
    graph.add_argument("-o", "--output", required=True, metavar="FILE")
    graph.set_defaults(run=_admin, command_name="graph")

    status = commands.add_parser(
        "status",
        help="say what serves a mount: its connector and who keeps membership",
        description="Print the mount point, the connector's socket, and who keeps bus "
        "membership there: 'cgroup' (the kernel) or 'proc' (inferred from /proc, the "
        "fallback where the daemon may not make cgroups).",
    )
    status.add_argument("mountpoint")
    status.set_defaults(run=_admin, command_name="status")

    monitor = commands.add_parser(
        "monitor",
        help="print every change on a mount as it happens",
        description="Print every change on the vbusfs at MOUNTPOINT as it happens, one line "
        "per change (with --json, one JSON object). The first line, 'monitoring "
        "mountpoint=MOUNTPOINT', says it is listening: every change made after it is heard, "
        "so a script waits for it before making its changes. Then: objects created and "
        "removed, types set, links and unlinks with their interface id, attributes stored, "
        "members joining and "
        "leaving (by a write, a fork, an exit or a move), devices opened and closed by "
        "clients, and the unmount, after which it exits 0. A reader that falls behind gets a "
        "'dropped' line counting what it lost. The daemon's owner and root see everything; "
        "a member process sees its own bus; anyone else is refused.",
    )
    monitor.add_argument("mountpoint")
    monitor.add_argument("--json", action="store_true", help="one JSON object per line")
    monitor.set_defaults(run=_monitor)

    demo = commands.add_parser(
        "demo",
        help="run the original vbus walkthrough on a fresh mount",
        description="Mount vbusfs on a temporary directory, run the original walkthrough with "
        "real shell commands, print the sys tree after each step, then unmount. Without a "
        "usable /dev/fuse it says why and replays the walkthrough on the in-process model.",
    )
    demo.set_defaults(run=_demo)

    enet = commands.add_parser(
        "enet",
        help="drive a venet interface of this process's bus as a TAP interface",
        description="A userspace vbus-enet driver: open venet interface N of the bus this "
        "process is a member of, create a TAP interface in this network namespace (the "
        "device's client_mac and mtu, offloads negotiated, the carrier following the link "
        "state) and move frames between them until killed; then the TAP is removed and the "
        "device released. Needs CAP_NET_ADMIN in the network namespace.",
    )
    enet.add_argument("--mount", metavar="MNT", help="the vbusfs mount (default: the only one)")
    enet.add_argument("--id", type=_nonnegative, default=0, metavar="N", help="the interface id")
    enet.add_argument(
        "--ifname", default="venet%d", metavar="NAME", help="the TAP's name (%%d: a free number)"
    )
    enet.add_argument("--no-offloads", action="store_true", help="bare frames: negotiate no SG/TSO")
    enet.add_argument(
        "--spin-us",
        type=_nonnegative,
        default=None,
        metavar="US",
        help="microseconds an idle driver polls before sleeping (default 0)",
    )
    enet.add_argument(
        "--slots",
        type=_nonnegative,
        default=None,
        metavar="N",
        help="slots of each ring (default: 4096 bare at MTU 1500, 256 with offloads)",
    )
    enet.set_defaults(run=_enet)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.run(args)
    return result
