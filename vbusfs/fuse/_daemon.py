"""Mounting, serving and unmounting one vbusfs: the daemon's life cycle.

`serve()` runs in the daemon process: it clears a stale mount left by a
killed daemon, mounts, serves until unmounted or signalled (SIGTERM, SIGINT,
SIGHUP unmount cleanly), then releases everything the model holds. `spawn()`
starts a daemon in the background and returns once its mount is live.
`unmount()` asks the kernel to unmount and waits for the daemon to exit.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyfuse3
import trio

from vbusfs._procfs import ProcFs
from vbusfs.classes import default_model
from vbusfs.connector import Connector
from vbusfs.model import Vbus

from ._mountinfo import mount_at
from ._operations import VbusOperations

log = logging.getLogger("vbusfs.daemon")

FSTYPE = "fuse.vbusfs"
READY = "ok"
SPAWN_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0


# Daemons this process started and has not reaped yet, by pid.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class MountError(Exception):
    """A mount or unmount that cannot be done, with a message for the user."""


FUSE_DEVICE = "/dev/fuse"
# The FUSE character device's numbers (Documentation/admin-guide/devices.txt: 10 229).
FUSE_MAJOR, FUSE_MINOR = 10, 229
_CONTAINER_FIX = (
    "In a container: run it with --device /dev/fuse --cap-add SYS_ADMIN "
    "(and --security-opt apparmor:unconfined on AppArmor hosts)."
)


def fuse_problem(device: str = FUSE_DEVICE) -> str | None:
    """Why a FUSE mount cannot be made here, with the fix; None if nothing is known wrong.

    `device` is where the FUSE device is looked for (tests point it elsewhere).
    """
    try:
        found = os.stat(device)
    except FileNotFoundError:
        return f"{device} does not exist. On a host: modprobe fuse. {_CONTAINER_FIX}"
    except OSError as exc:
        return f"{device} cannot be examined ({exc.strerror}). {_CONTAINER_FIX}"
    if not stat.S_ISCHR(found.st_mode) or found.st_rdev != os.makedev(FUSE_MAJOR, FUSE_MINOR):
        return (
            f"{device} is not the FUSE device (character device {FUSE_MAJOR}:{FUSE_MINOR}) "
            f"but {_describe(found)}. On a host: rm {device} && "
            f"mknod -m 0666 {device} c {FUSE_MAJOR} {FUSE_MINOR} (or modprobe fuse, "
            f"which makes it). {_CONTAINER_FIX}"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return (
            f"{device} is not readable and writable by this user (mode "
            f"{stat.S_IMODE(found.st_mode):04o}): run as root, or chmod 0666 {device} "
            "(Debian's default)."
        )
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing: apt-get install fuse3 (make setup does it)."
    return None


def _describe(found: os.stat_result) -> str:
    """What kind of file a stat result is, for a message."""
    if stat.S_ISCHR(found.st_mode):
        return f"character device {os.major(found.st_rdev)}:{os.minor(found.st_rdev)}"
    if stat.S_ISBLK(found.st_mode):
        return f"block device {os.major(found.st_rdev)}:{os.minor(found.st_rdev)}"
    kinds = [
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(found.st_mode)), "another kind of file")


def mountpoint_problem(mountpoint: str) -> str | None:
    """Why `mountpoint` cannot be mounted on, with the fix; None if it is a directory."""
    try:
        found = os.stat(mountpoint)
    except FileNotFoundError:
        return f"{mountpoint} does not exist: create the directory first (mkdir -p {mountpoint})"
    except OSError as exc:
        return f"{mountpoint} cannot be examined ({exc.strerror})"
    if not stat.S_ISDIR(found.st_mode):
        return f"{mountpoint} is {_describe(found)}, not a directory: mount on a directory"
    return None


# What libfuse's own complaint (on stderr) means, and how to fix it; first match wins.
_LIBFUSE_FIXES = (
    (
        "user_allow_other",
        "add the line user_allow_other to /etc/fuse.conf, or mount as root",
    ),
    (
        "no write access to mountpoint",
        "mount on a directory this user owns and may write to, or mount as root",
    ),
    (
        "Operation not permitted",
        "mounting needs CAP_SYS_ADMIN or a working setuid-root fusermount3: run the daemon "
        "as root with that capability (in a container: --cap-add SYS_ADMIN), and check that "
        "fusermount3 is installed setuid root (apt-get install --reinstall fuse3)",
    ),
    (
        "Permission denied",
        f"this user may not open {FUSE_DEVICE} or the mount point: run as root, or give the "
        f"user read and write access to {FUSE_DEVICE} and a mount point it owns",
    ),
    (
        "modprobe fuse",
        f"modprobe fuse on the host. {_CONTAINER_FIX}",
    ),
    (
        "fusermount3",
        "fusermount3 failed or is missing: apt-get install fuse3 (make setup does it)",
    ),
)


def explain_mount_failure(mountpoint: str, libfuse_said: str) -> str:
    """The message for a mount libfuse refused: what failed, libfuse's reason, the fix."""
    reasons = [
        line.strip()
        for line in libfuse_said.splitlines()
        if line.strip().startswith(("fuse:", "fusermount3:", "fusermount:"))
    ]
    reason = "; ".join(reasons) if reasons else "libfuse gave no reason"
    # A problem with the device or the mount point outranks libfuse's guess.
    probed = fuse_problem() or mountpoint_problem(mountpoint)
    if probed is not None:
        fix = probed
    else:
        fix = next(
            (fix for clue, fix in _LIBFUSE_FIXES if clue in reason),
            "see the daemon's log and the troubleshooting section of the README",
        )
    return f"libfuse could not mount {mountpoint} ({reason}). Fix: {fix}"


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Collect what is written to fd 2 (libfuse and fusermount3 print their reasons there)
    inside the block, then write it to the real fd 2 as well, so the log keeps it."""
    said: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to capture, and nowhere it would have gone
        yield said
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read()
            os.write(2, text)
            said.append(text.decode(errors="replace"))


def canonical_mountpoint(path: str) -> str:
    """The absolute path of a mount point without touching the mount itself.

    realpath() would stat a dead FUSE mount and fail; the parent is safe.
    """
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def runtime_dir() -> str:
    explicit = os.environ.get("VBUSFS_RUNTIME_DIR")
    if explicit:
        return explicit
    if os.getuid() == 0:
        return "/run/vbusfs"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "vbusfs")
    return f"/tmp/vbusfs-{os.getuid()}"


def connector_path(mountpoint: str) -> str:
    """The connector socket of the daemon serving `mountpoint` (short: sun_path is 108 bytes)."""
    digest = hashlib.sha256(canonical_mountpoint(mountpoint).encode()).hexdigest()[:20]
    return os.path.join(runtime_dir(), "connectors", f"{digest}.sock")


def _prepare_connector_dir(path: str) -> None:
    # Members of any user must reach the socket: the folders are world-searchable.
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    for directory in (os.path.dirname(folder), folder):
        if os.stat(directory).st_uid == os.getuid():
            os.chmod(directory, 0o755)


def state_path(mountpoint: str) -> str:
    """Where the daemon serving `mountpoint` records its pid and log file."""
    name = urllib.parse.quote(canonical_mountpoint(mountpoint), safe="")
    return os.path.join(runtime_dir(), "mounts", name + ".json")


@dataclass(frozen=True)
class MountState:
    pid: int
    mountpoint: str
    log: str | None

    @classmethod
    def load(cls, mountpoint: str) -> MountState | None:
        try:
            with open(state_path(mountpoint), encoding="utf-8") as f:
                data = json.load(f)
            return cls(int(data["pid"]), str(data["mountpoint"]), data.get("log"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self) -> None:
        path = state_path(self.mountpoint)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"pid": self.pid, "mountpoint": self.mountpoint, "log": self.log}, f)
        os.replace(tmp, path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_path(self.mountpoint))


def _stat_with_timeout(path: str, timeout: float) -> OSError | None:
    """stat() a path that may be a hung mount; returns the error, None if fine."""
    outcome: list[OSError | None] = []

    def probe() -> None:
        try:
            os.stat(path)
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
    problem = _stat_with_timeout(mountpoint, 5.0)
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


def mount_options() -> set[str]:
    options = set(pyfuse3.default_options) | {"fsname=vbusfs", "subtype=vbusfs"}
    if os.getuid() == 0:
        # Members and other users must reach the trees; permission bits still apply.
        options.add("allow_other")
    return options


def serve(
    mountpoint: str,
    *,
    vbus: Vbus | None = None,
    ready: Callable[[str], None] | None = None,
    log_path: str | None = None,
) -> int:
    """Mount and serve until unmounted or signalled. `ready` hears "ok" or an error."""
    mountpoint = canonical_mountpoint(mountpoint)
    vbus = vbus if vbus is not None else default_model(processes=ProcFs())
    operations = VbusOperations(vbus)
    try:
        problem = fuse_problem()
        if problem is not None:
            raise MountError(problem)
        clear_stale(mountpoint)  # first: a stale mount point is not even a directory
        problem = mountpoint_problem(mountpoint)
        if problem is not None:
            raise MountError(problem)
        with _stderr_captured() as libfuse_said:
            try:
                pyfuse3.init(operations, mountpoint, mount_options())
            except RuntimeError:
                failed = True  # pyfuse3 says only which call failed; libfuse said why
            else:
                failed = False
        if failed:
            raise MountError(explain_mount_failure(mountpoint, "".join(libfuse_said)))
    except (MountError, OSError) as exc:
        message = str(exc) or type(exc).__name__
        log.error("%s", message)
        if ready is not None:
            ready(f"error: {message}")
        vbus.clear()
        return 1
    state = MountState(os.getpid(), mountpoint, log_path)
    try:
        entry = mount_at(mountpoint)
        operations.locations.device = entry.device if entry is not None else None
        operations.locations.mount_point = mountpoint
        state.save()
        socket_path = connector_path(mountpoint)
        _prepare_connector_dir(socket_path)
        log.info("serving %s (pid %d), connector at %s", mountpoint, os.getpid(), socket_path)
        trio.run(_serve_until_done, vbus, operations, socket_path, ready)
    finally:
        pyfuse3.close(unmount=True)
        vbus.clear()
        state.remove()
        log.info("unmounted %s", mountpoint)
    return 0


async def _serve_until_done(
    vbus: Vbus,
    operations: VbusOperations,
    socket_path: str,
    ready: Callable[[str], None] | None,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        nursery.start_soon(_sweep_members, vbus)
        if vbus.membership is not None:
            await nursery.start(Connector(vbus, socket_path).serve)
            operations.connector_path = socket_path
        if ready is not None:
            ready(READY)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


SWEEP_INTERVAL = 0.5


async def _sweep_members(vbus: Vbus) -> None:
    """Remember inherited memberships while parents live; forget exited processes."""
    membership = vbus.membership
    if membership is None:
        return
    while True:
        await trio.sleep(SWEEP_INTERVAL)
        try:
            membership.sweep()
        except Exception:
            log.exception("internal error in the membership sweep")


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


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
    if log_path is None:
        log_path = state_path(mountpoint)[: -len(".json")] + ".log"
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)

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
    command: Callable[[int], list[str]], log_path: str, *, new_session: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the daemon `command(ready_fd)` logging to `log_path`; return it and the line
    it reported (READY, "error: ...", or "" if it died first). A daemon still starting
    when this is interrupted is ended, never left behind."""
    read_end, write_end = os.pipe()
    try:
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                command(write_end),
                pass_fds=(write_end,),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=new_session,
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
    state = MountState.load(mountpoint)
    done = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        raise MountError(done.stderr.strip() or f"fusermount3 -u {mountpoint} failed")
    if state is None:
        return
    deadline = time.monotonic() + timeout
    while _alive(state.pid) and _is_daemon(state.pid):
        if time.monotonic() > deadline:
            raise MountError(f"the daemon (pid {state.pid}) did not exit after unmounting")
        time.sleep(0.02)
    child = _CHILDREN.pop(state.pid, None)
    if child is not None:
        child.wait()  # it was our own child: reap it


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
