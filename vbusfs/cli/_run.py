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
import tempfile

from vbusfs.daemon import MountError, canonical_mountpoint, spawn, unmount
from vbusfs.fuse import FSTYPE, mount_at


class RunError(Exception):
    """`vbusfs run` cannot work here; the message says why, `status` is the exit status."""

    def __init__(self, message: str, status: int = 125) -> None:
        super().__init__(message)
        self.status = status


def check_command(name: str) -> None:
    """Refuse, as a shell would (127 not found, 126 not executable), a command that
    cannot run: said here, before any namespace or mount is made, in vbusfs's words."""
    if "/" in name:
        if not os.path.exists(name):
            raise RunError(f"{name}: No such file or directory", 127)
        if os.path.isdir(name):
            raise RunError(f"{name}: Is a directory", 126)
        if not os.access(name, os.X_OK):
            raise RunError(f"{name}: Permission denied", 126)
    elif shutil.which(name) is None:
        raise RunError(f"{name}: command not found", 127)


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


# Runs inside the new namespace as `sh -c NAMESPACE_SCRIPT vbusfs-run MOUNTPOINT COMMAND...`.
# It is shell, not Python, so the namespace needs nothing but util-linux and a shell:
# an unprivileged user's namespace may not reach the interpreter vbusfs runs on.
NAMESPACE_SCRIPT = r"""
set -e
mnt=$1; shift
scratch=""  # a directory of ours in /tmp, removed if we fail half-way
trap '[ -z "$scratch" ] || { umount -l "$scratch" 2>/dev/null; rmdir "$scratch"; }' EXIT
fail() { echo "vbusfs run: $*" >&2; exit 125; }
graft() {  # make $3 appear as $1/$2, keeping everything $1 holds
    dir=$1 name=$2 src=$3
    if [ -d "$dir/$name" ]; then
        mount --rbind "$src" "$dir/$name" || fail "cannot bind $src on $dir/$name"
        return
    fi
    st=$(mktemp -d /tmp/vbusfs-graft-XXXXXX)
    scratch=$st
    mount -t tmpfs -o mode=0755 vbusfs "$st" || fail "cannot mount a tmpfs to graft $dir/$name"
    for e in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
        [ -e "$e" ] || [ -L "$e" ] || continue
        b=${e##*/}
        if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$st/$b"
        elif [ -d "$e" ]; then mkdir "$st/$b"; mount --rbind "$e" "$st/$b"
        else : > "$st/$b"; mount --bind "$e" "$st/$b"; fi
    done
    mkdir "$st/$name"
    mount --rbind "$src" "$st/$name"
    mount --rbind "$st" "$dir" || fail "cannot put the graft on $dir"
    umount -l "$st"
    rmdir "$st"
    scratch=""
}
if [ ! -d /config ]; then
    read -r inside outside count < /proc/self/uid_map
    if [ "$(id -u)" = 0 ] && [ "$outside" = 0 ] && [ "$count" = 4294967295 ]; then
        mkdir -m 0755 /config
    else
        fail "/config does not exist and only root can create it:" \
             "run 'mkdir /config' once as root, or run vbusfs run as root"
    fi
fi
graft /config vbus "$mnt/config/vbus"
graft /sys vbus "$mnt/sys/vbus"
if [ -d /run/vbus ]; then
    graft /run/vbus proc "$mnt/proc"
else
    holder=$(mktemp -d /tmp/vbusfs-run-proc-XXXXXX)
    mount -t tmpfs -o mode=0755 vbusfs "$holder"
    mkdir "$holder/proc"
    mount --rbind "$mnt/proc" "$holder/proc"
    graft /run vbus "$holder"
    umount -l "$holder"
    rmdir "$holder"
fi
command -v "$1" >/dev/null 2>&1 || { echo "vbusfs run: $1: command not found" >&2; exit 127; }
exec "$@"
"""


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
    check_command(command[0])
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
            raise RunError(
                f"{mountpoint} is not a vbusfs mount (no daemon answers there); mount one with "
                f"`vbusfs mount {mountpoint}`, or leave out --mount to use a fresh one"
            )
    try:
        inner = ["sh", "-c", NAMESPACE_SCRIPT, "vbusfs-run", mountpoint, *command]
        return exit_status(subprocess.run([*prefix, *inner]).returncode)
    finally:
        if made is not None:
            unmount(made)
            os.rmdir(made)
