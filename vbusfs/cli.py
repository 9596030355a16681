"""The `vbusfs` command: mount, umount, demo."""

from __future__ import annotations

import argparse
import logging
import sys

from vbusfs import __version__


def _mount(args: argparse.Namespace) -> int:
    from vbusfs._procfs import ProcFs
    from vbusfs.classes import default_model
    from vbusfs.fuse import MountError, ready_fd_reporter, serve, spawn
    from vbusfs.model import VbusError

    if not args.foreground:
        try:
            spawn(args.mountpoint, log_path=args.log, debug=args.debug, load=tuple(args.load))
        except MountError as exc:
            print(f"vbusfs mount: {exc}", file=sys.stderr)
            return 1
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    ready = ready_fd_reporter(args.ready_fd) if args.ready_fd is not None else None
    try:
        vbus = default_model(tuple(args.load), processes=ProcFs())
    except (ImportError, AttributeError, TypeError, ValueError, VbusError) as exc:
        message = f"cannot load a deviceclass: {exc}"
        print(f"vbusfs mount: {message}", file=sys.stderr)
        if ready is not None:
            ready(f"error: {message}")
        return 1
    return serve(args.mountpoint, vbus=vbus, ready=ready, log_path=args.log)


def _umount(args: argparse.Namespace) -> int:
    from vbusfs.fuse import MountError, unmount

    try:
        unmount(args.mountpoint)
    except MountError as exc:
        print(f"vbusfs umount: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from vbusfs._run import RunError, run
    from vbusfs.fuse import MountError

    command = args.command
    if command and command[0] == "--":
        command = command[1:]
    try:
        return run(command, args.mount)
    except (RunError, MountError) as exc:
        print(f"vbusfs run: {exc}", file=sys.stderr)
        return 125


def _demo(args: argparse.Namespace) -> int:
    from vbusfs._demo import main as demo

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
        help="with --foreground: write 'ok' (or 'error: ...') to FD once mounted, then close it",
    )
    mount.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="MODULE:CLASS",
        help="also load this deviceclass (importable as MODULE, a DeviceClass subclass); "
        "repeatable",
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

    demo = commands.add_parser(
        "demo",
        help="run the original vbus walkthrough on a fresh mount",
        description="Mount vbusfs on a temporary directory, run the original walkthrough with "
        "real shell commands, print the sys tree after each step, then unmount. Without a "
        "usable /dev/fuse it says why and replays the walkthrough on the in-process model.",
    )
    demo.set_defaults(run=_demo)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.run(args)
    return result
