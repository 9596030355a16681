"""`vbusfs run`: a command in a private mount namespace where the trees sit where
the original put them.

Inside, `config/vbus` is also at /config/vbus, `sys/vbus` at /sys/vbus (the
rest of /sys stays as it was) and the proc tree at /run/vbus/proc, so the
original walkthrough runs verbatim (with /run/vbus/proc/self/vbus for
/proc/self/vbus). Nothing is mounted in the caller's namespace: the
namespace, and every mount in it, ends with the command.

A directory that lacks the entry to mount on (/sys has no vbus) is replaced,
inside the namespace only, by a tmpfs holding binds of everything it held
plus the new entry. The one change outside: /config is created when it does
not exist and the caller is root, as the original expected it to be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from vbusfs.fuse import FSTYPE, MountError, canonical_mountpoint, mount_at, spawn, unmount


class RunError(Exception):
    """`vbusfs run` cannot work here; the message says why."""


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RunError(f"mount {' '.join(args)}: {done.stderr.strip()}")


def _private_tmpfs(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    _mount("-t", "tmpfs", "-o", "mode=0755", "vbusfs", path)
    return path


def graft(directory: str, name: str, source: str) -> None:
    """Make `source` appear as `directory/name`, keeping everything `directory` holds."""
    target = os.path.join(directory, name)
    if os.path.isdir(target):
        _mount("--rbind", source, target)
        return
    staging = _private_tmpfs("vbusfs-graft-")
    try:
        for entry in os.scandir(directory):
            copy = os.path.join(staging, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), copy)
            elif entry.is_dir():
                os.mkdir(copy)
                _mount("--rbind", entry.path, copy)
            else:
                open(copy, "w").close()
                _mount("--bind", entry.path, copy)
        os.mkdir(os.path.join(staging, name))
        _mount("--rbind", source, os.path.join(staging, name))
        _mount("--move", staging, directory)
    finally:
        os.rmdir(staging)  # the mount has moved on (or failed): the directory is empty


def enter(mountpoint: str, command: list[str]) -> None:
    """Inside the new namespace: put the trees in place, then become `command`."""
    if not os.path.isdir("/config"):
        if os.getuid() != 0 or _in_user_namespace():
            raise RunError(
                "/config does not exist and only root can create it: run "
                "`mkdir /config` once as root, or run vbusfs run as root"
            )
        os.mkdir("/config", 0o755)
    graft("/config", "vbus", os.path.join(mountpoint, "config/vbus"))
    graft("/sys", "vbus", os.path.join(mountpoint, "sys/vbus"))
    if os.path.isdir("/run/vbus"):
        graft("/run/vbus", "proc", os.path.join(mountpoint, "proc"))
    else:
        holder = _private_tmpfs("vbusfs-run-")
        try:
            os.mkdir(os.path.join(holder, "proc"))
            _mount("--bind", os.path.join(mountpoint, "proc"), os.path.join(holder, "proc"))
            graft("/run", "vbus", holder)
        finally:
            subprocess.run(["umount", "-l", holder], capture_output=True, check=False)
            os.rmdir(holder)
    os.execvp(command[0], command)


def _in_user_namespace() -> bool:
    with open("/proc/self/uid_map", encoding="ascii") as f:
        return f.read().split() != ["0", "0", "4294967295"]


def namespace_prefix() -> list[str]:
    """The unshare command that gives a private mount namespace to this user."""
    if shutil.which("unshare") is None:
        raise RunError("unshare (util-linux) is not installed")
    base = ["unshare", "--mount", "--propagation", "private"]
    if os.getuid() == 0:
        return base
    return [*base, "--user", "--map-root-user"]


def run(command: list[str], mountpoint: str | None = None) -> int:
    """Run `command` in the namespace; with no mountpoint, on a mount made for it."""
    if not command:
        raise RunError("no command to run")
    prefix = namespace_prefix()
    made = None
    if mountpoint is None:
        made = tempfile.mkdtemp(prefix="vbusfs-run-")
        try:
            spawn(made)
        except MountError:
            os.rmdir(made)
            raise
        mountpoint = made
    else:
        mountpoint = canonical_mountpoint(mountpoint)
        entry = mount_at(mountpoint)
        if entry is None or entry.fstype != FSTYPE:
            raise RunError(f"{mountpoint} is not a vbusfs mount")
    try:
        inner = [sys.executable, "-m", "vbusfs._run", mountpoint, "--", *command]
        return subprocess.run([*prefix, *inner]).returncode
    finally:
        if made is not None:
            unmount(made)
            os.rmdir(made)


def _main(argv: list[str]) -> int:
    mountpoint, separator, *command = argv
    assert separator == "--"
    try:
        enter(mountpoint, command)
    except (RunError, OSError) as exc:
        print(f"vbusfs run: {exc}", file=sys.stderr)
        return 125
    return 0  # not reached: enter() becomes the command


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
