"""Starting, watching and stopping daemons: the spawn/ready/stop machinery in one place.

A daemon reports readiness on an inherited pipe: one line, READY ("ok") once its
mount is live or "error: ..." saying why not; an empty answer means it died first.
`start_daemon()` runs any command that speaks this protocol and `stop_daemon()` ends
it, so the CLI (`spawn`, `unmount`), the testing kit and the benchmarks share them.
`clear_stale()` is how a new daemon tells a mount a killed daemon left from a live one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from vbusfs.fuse import FSTYPE, mount_at

from ._cgroup import release_leftovers
from ._problems import MountError
from ._runtime import (
    MountState,
    canonical_mountpoint,
    ensure_runtime_dir,
    open_log,
    state_path,
    sweep_ended,
)

log = logging.getLogger("vbusfs.daemon")

READY = "ok"
SPAWN_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0

# Daemons this process started and has not reaped yet, by pid.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def statfs_with_timeout(path: str, timeout: float) -> OSError | None:
    """statvfs() a path that may be a dead or hung mount; returns the error, None if fine.

    statfs, unlike stat, is never answered from the kernel's attribute cache: it always
    reaches the daemon, so a killed daemon's mount says ENOTCONN however recently its root
    was looked at (the root's attributes are cached for an hour).
    """
    outcome: list[OSError | None] = []

    def probe() -> None:
        try:
            os.statvfs(path)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return OSError(errno.ETIMEDOUT, "no answer")
    return outcome[0]


def lazy_unmount(mountpoint: str) -> None:
    if shutil.which("fusermount3"):
        done = subprocess.run(
            ["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True
        )
        if done.returncode == 0:
            return
    if os.getuid() == 0:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)


def clear_stale(mountpoint: str) -> None:
    """Unmount what a killed daemon left at `mountpoint`; refuse a live mount."""
    entry = mount_at(mountpoint)
    if entry is None:
        return
    if entry.fstype != FSTYPE:
        raise MountError(
            f"{mountpoint} is already a mount point ({entry.fstype}): mount vbusfs on "
            "another directory"
        )
    problem = statfs_with_timeout(mountpoint, 5.0)
    if problem is None:
        raise MountError(
            f"{mountpoint} is already served by a running vbusfs daemon: use it, or "
            f"`vbusfs umount {mountpoint}` first"
        )
    if problem.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.ENXIO):
        log.warning("clearing the stale mount a killed daemon left at %s", mountpoint)
        lazy_unmount(mountpoint)
        if mount_at(mountpoint) is not None and mount_at(mountpoint) == entry:
            raise MountError(f"cannot clear the stale mount at {mountpoint}")
        return
    raise MountError(
        f"{mountpoint} is a vbusfs mount whose daemon does not answer ({problem.strerror}); "
        f"clear it with: fusermount3 -uz {mountpoint}"
    )


def ready_fd_reporter(fd: int) -> Callable[[str], None]:
    """Report readiness to the spawning process through an inherited pipe."""

    def report(message: str) -> None:
        try:
            os.write(fd, (message + "\n").encode())
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    return report


def daemon_command(
    mountpoint: str,
    ready_fd: int,
    *,
    debug: bool = False,
    load: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line of a vbusfs daemon serving `mountpoint` in the foreground,
    reporting readiness on `ready_fd`; `extra` adds `vbusfs mount` options."""
    command = [sys.executable, "-m", "vbusfs", "mount", "--foreground"]
    command += ["--ready-fd", str(ready_fd)]
    if debug:
        command.append("--debug")
    for spec in load:
        command += ["--load", spec]
    return [*command, *extra, mountpoint]


def wait_ready(fd: int, timeout: float = SPAWN_TIMEOUT) -> str:
    """Read the daemon's readiness line; an empty answer means it died first."""
    chunks = b""
    deadline = time.monotonic() + timeout
    while not chunks.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "error: the daemon did not report readiness in time"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks += chunk
    return chunks.decode(errors="replace").strip()


def spawn(
    mountpoint: str,
    *,
    log_path: str | None = None,
    debug: bool = False,
    load: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
) -> int:
    """Start a daemon in the background; return its pid once the mount is live.

    `prefix` runs the daemon under another command (`unshare -n`, say).
    """
    mountpoint = canonical_mountpoint(mountpoint)
    ensure_runtime_dir()  # refuses a directory someone else could plant files in
    sweep_ended(_is_daemon)  # the files of mounts whose daemons have ended
    if log_path is None:
        log_path = state_path(mountpoint)[: -len(".json")] + ".log"
    else:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), mode=0o700, exist_ok=True)

    def command(ready_fd: int) -> list[str]:
        daemon = daemon_command(mountpoint, ready_fd, debug=debug, load=load, extra=extra)
        return [*prefix, *daemon, "--log", log_path]

    process, answer = start_daemon(command, log_path, new_session=True)
    if answer != READY:
        if process.poll() is None:
            process.terminate()
        process.wait(EXIT_TIMEOUT)
        detail = answer.removeprefix("error: ") if answer else _tail(log_path)
        raise MountError(detail or f"the daemon exited with status {process.returncode}")
    _CHILDREN[process.pid] = process
    return process.pid


def start_daemon(
    command: Callable[[int], list[str]],
    log_path: str,
    *,
    new_session: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the daemon `command(ready_fd)` logging to `log_path`; return it and the line
    it reported (READY, "error: ...", or "" if it died first). A daemon still starting
    when this is interrupted is ended, never left behind. `new_session` keeps a Ctrl-C
    meant for this process from reaching the daemon; `env` replaces the environment.
    The log is opened without following a symlink (MountError if it is one)."""
    log_fd = open_log(log_path)
    read_end, write_end = os.pipe()
    try:
        with open(log_fd, "ab") as log_file:
            process = subprocess.Popen(
                command(write_end),
                pass_fds=(write_end,),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=new_session,
                env=env,
            )
        os.close(write_end)
        write_end = -1
        try:
            answer = wait_ready(read_end)
        except BaseException:
            process.kill()
            process.wait()
            raise
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    return process, answer


def stop_daemon(
    process: subprocess.Popen[bytes] | None, mountpoint: str, *, timeout: float = EXIT_TIMEOUT
) -> None:
    """Unmount `mountpoint` and end `process`, the daemon this process started for it.

    A daemon that does not exit within `timeout` of the unmount gets SIGTERM, then
    SIGKILL; whatever is still mounted at `mountpoint` then is unmounted lazily.
    Only `process` is ever signalled.
    """
    if process is not None and process.poll() is None:
        subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, check=False)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # a daemon unmounts on SIGTERM
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if mount_at(mountpoint) is not None:
        lazy_unmount(mountpoint)


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holders(mountpoint: str) -> str:
    """The processes this user may see whose cwd, root or open files are under
    `mountpoint`, as "pid 12 (sh), pid 34 (python3)" (empty if none is seen). It reads
    /proc's links, never the mount itself."""
    inside = mountpoint.rstrip("/") + "/"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = ["cwd", "root"] + [f"fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
            targets = {os.readlink(f"/proc/{pid}/{link}") for link in links}
            if any(t == mountpoint or t.startswith(inside) for t in targets):
                with open(f"/proc/{pid}/comm") as f:
                    found.append(f"pid {pid} ({f.read().strip()})")
        except OSError:
            continue  # gone meanwhile, or not ours to read
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return ", ".join(found[:5]) + more


def unmount(mountpoint: str, *, timeout: float = EXIT_TIMEOUT) -> None:
    """Unmount a vbusfs and wait for its daemon to finish releasing everything."""
    mountpoint = canonical_mountpoint(mountpoint)
    entry = mount_at(mountpoint)
    if entry is None:
        raise MountError(
            f"{mountpoint} is not mounted: no vbusfs daemon serves it, so there is nothing "
            "to unmount"
        )
    if entry.fstype != FSTYPE:
        raise MountError(f"{mountpoint} is not a vbusfs mount ({entry.fstype})")
    sweep_ended(_is_daemon)  # of other mounts that ended; this one's log stays till the next
    state = MountState.load(mountpoint)
    done = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        holders = _holders(mountpoint) if "busy" in done.stderr else ""
        if holders:
            raise MountError(
                f"{mountpoint} is busy: the working directory or open files of {holders} "
                "are in it (a shell that did cd there, a `vbusfs monitor` started there); "
                "cd out or end them, then unmount again"
            )
        raise MountError(done.stderr.strip() or f"fusermount3 -u {mountpoint} failed")
    if state is not None:
        deadline = time.monotonic() + timeout
        while _alive(state.pid) and _is_daemon(state.pid):
            if time.monotonic() > deadline:
                raise MountError(f"the daemon (pid {state.pid}) did not exit after unmounting")
            time.sleep(0.02)
        child = _CHILDREN.pop(state.pid, None)
        if child is not None:
            child.wait()  # it was our own child: reap it
    release_leftovers(mountpoint)  # a killed daemon's bus cgroups: nobody else frees them


def _is_daemon(pid: int) -> bool:
    """True while `pid` is still a vbusfs daemon (not a recycled pid or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return state != "Z" and b"vbusfs" in cmdline
